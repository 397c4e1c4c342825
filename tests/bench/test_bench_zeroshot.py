"""The ``zero-shot`` protocol and the vision-language suite: Recall@K, planning, rows, report.

A tiny VL model with a hashing bag-of-words text side stands in for a trained one (no MiniLM
load); the numbers are checked against the same computation done by hand, not for quality.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thinkingearth.bench import get_suite, read_results, run_bench
from thinkingearth.bench.models import resolve_model, resolve_models
from thinkingearth.bench.runner import plan_runs
from thinkingearth.bench.zeroshot import recall_at_k, retrieval_metrics
from thinkingearth.cli import main
from thinkingearth.models import create_encoder
from thinkingearth.vl.model import VLModel, load_vl_model, save_vl_model
from thinkingearth.vl.zeroshot import ZeroShotClassifier


class HashText(nn.Module):
    """Each word adds to one hashed dimension; L2-normalised."""

    name = "hash-bow"
    dim = 32
    spec = "hash-bow"
    trainable = False

    def encode(self, texts: Sequence[str]) -> Tensor:
        out = torch.zeros(len(texts), self.dim)
        for i, text in enumerate(texts):
            for word in text.lower().replace(".", " ").split():
                out[i, int(hashlib.sha256(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        return F.normalize(out, dim=-1)


@pytest.fixture(scope="module")
def vl_folder(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tiny VL model saved as a pretrain run writes it (OUT/vl_model.*)."""
    import thinkingearth.vl.model as vl_model

    patch = pytest.MonkeyPatch()
    real = vl_model.load_text_encoder
    patch.setattr(
        vl_model,
        "load_text_encoder",
        lambda spec="minilm", *, trainable=False: (
            HashText() if spec == "hash-bow" else real(spec, trainable=trainable)
        ),
    )
    torch.manual_seed(0)
    encoder = create_encoder(
        "thinkingearth_vit_tiny", depth=2, embed_dim=48, num_heads=3, img_size=32, patch_size=8
    )
    sensors = {
        "sentinel-2-l2a": list(get_suite("_vl_micro").tasks[0].load("test")[0]["bands"]),
        "sentinel-1-grd": ["VV", "VH"],
    }
    folder = tmp_path_factory.mktemp("vl") / "vlrun"
    save_vl_model(VLModel(encoder, HashText(), sensors=sensors), folder / "vl_model")
    yield folder
    patch.undo()


def test_recall_at_k_by_hand() -> None:
    similarity = torch.tensor(
        [
            [0.9, 0.1, 0.0],  # match (col 0) first
            [0.8, 0.5, 0.7],  # match (col 1) third
            [0.3, 0.3, 0.2],  # match (col 2) third
        ]
    )
    eye = torch.eye(3, dtype=torch.bool)
    assert recall_at_k(similarity, eye, (1, 2, 3)) == {1: 1 / 3, 2: 1 / 3, 3: 1.0}
    both = eye.clone()
    both[2, 0] = True  # query 2 has two matches (a repeated caption): the better one counts
    assert recall_at_k(similarity, both, (1,)) == {1: 2 / 3}
    ties = torch.zeros(2, 2)
    assert recall_at_k(ties, torch.eye(2, dtype=torch.bool), (1,)) == {1: 1.0}  # ties favour
    out = retrieval_metrics(torch.eye(3), torch.eye(3), eye, "t2i", "i2t")
    assert out["r@1/t2i"] == out["r@1/i2t"] == 1.0 and "r@10/i2t" in out


def test_models_resolve_vl_folders_files_configs_and_chance(vl_folder: Path) -> None:
    for name in (str(vl_folder), str(vl_folder / "vl_model.safetensors")):
        spec = resolve_model(name)
        assert spec.kind == "vl" and spec.is_vl and spec.is_encoder
    assert resolve_model("chance").kind == "chance" and not resolve_model("chance").is_encoder
    encoder = resolve_model(str(vl_folder)).encoder()
    assert encoder.embed_dim == 48  # the VL model's own image encoder, for the linear probe


def test_plan_runs_chance_and_zero_shot_only_where_they_apply(vl_folder: Path) -> None:
    suite = get_suite("vl-synthetic")
    specs = resolve_models(f"{vl_folder},chance,thinkingearth_vit_tiny")
    keys = plan_runs(suite, specs, [0, 1], fractions=[0.5, 1.0])
    chance = {(k.task, k.protocol) for k in keys if k.model == "chance"}
    assert chance == {(t.name, "zero-shot") for t in suite.tasks}
    vl = [k for k in keys if k.model == str(vl_folder)]
    assert {(k.task, k.protocol) for k in vl if k.task == "cross-sensor"} == {
        ("cross-sensor", "zero-shot")
    }
    # zero-shot uses no labels: fraction 1 only; the probe runs every fraction
    assert {k.fraction for k in vl if k.protocol == "zero-shot"} == {"1"}
    assert {k.fraction for k in vl if k.protocol == "linear-probe"} == {"0.5", "1"}
    assert {k.task for k in keys if k.model == "chance"} == {
        "dominant-landcover", "multilabel", "multilabel-s1", "text-retrieval", "cross-sensor"
    }  # fmt: skip


@pytest.mark.slow
def test_vl_micro_suite_rows_metrics_and_report(vl_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = run_bench("_vl_micro", f"{vl_folder},chance", out, seeds=1, log=lambda m: None)
    assert not result.failed, [r["reason"] for r in result.failed]
    rows = read_results(out / "results.csv")
    by = {(r["task"], "chance" if r["model"] == "chance" else "vl", r["protocol"]): r for r in rows}
    assert len(rows) == 5 + 3 + 5  # vl: 5 zero-shot + 3 probes; chance: 5 zero-shot
    assert all(r["status"] == "ok" for r in rows)
    for task in ("text-retrieval", "cross-sensor"):
        for who in ("vl", "chance"):
            r = by[(task, who, "zero-shot")]
            d = "t2i" if task == "text-retrieval" else "s1→s2"
            values = [float(r[f"r@{k}/{d}"]) for k in (1, 5, 10)]
            assert values == sorted(values) and 0 <= values[0] <= values[-1] <= 1
            assert float(r["primary"]) == values[0]
            assert r["train_seconds"] == "0" and r["steps"] == "0" and r["test_samples"] == "12"
    assert "r@1/i2t" in rows[0] and "r@10/s2→s1" in rows[0]
    probe = by[("multilabel", "vl", "linear-probe")]
    assert float(probe["map"]) > 0 and int(probe["trainable_params"]) > 0
    zero = by[("multilabel", "vl", "zero-shot")]
    assert 0 < float(zero["map"]) <= 1 and zero["trainable_params"] == "0"
    # zero-shot accuracy equals the computation done by hand on the same model and samples
    task = get_suite("_vl_micro").tasks[0]
    samples = [task.load("test")[i] for i in range(12)]
    model = load_vl_model(vl_folder)
    head = ZeroShotClassifier(model, task.class_names)
    predicted = head.logits(model.encode_samples(samples)).argmax(1)
    labels = torch.stack([s["label"] for s in samples])
    expected = float((predicted == labels).float().mean())
    assert float(by[("dominant-landcover", "vl", "zero-shot")]["oa"]) == pytest.approx(expected)
    report = (out / "report.md").read_text()
    assert "r@1/t2i" in report and "r@1/s1→s2" in report and "chance" in report
    # chance is seeded: the same run gives the same numbers
    run_bench("_vl_micro", "chance", tmp_path / "again", seeds=1, log=lambda m: None)
    first = {r["task"]: r["primary"] for r in rows if r["model"] == "chance"}
    again = read_results(tmp_path / "again" / "results.csv")
    assert {r["task"]: r["primary"] for r in again} == first


def test_zero_shot_protocol_on_another_suite_scores_classification_only(
    vl_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "micro"
    code = main(["-q", "bench", "--suite", "_micro", "--models", str(vl_folder), "--seeds", "1",
                 "--protocols", "zero-shot", "--out", str(out), "--json"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    rows = {r["task"]: r for r in read_results(out / "results.csv")}
    assert rows["multilabel"]["status"] == "ok" and math.isfinite(float(rows["multilabel"]["map"]))
    for dense in ("landcover", "flood", "biomass"):
        assert rows[dense]["status"] == "skipped" and "zero-shot scores" in rows[dense]["reason"]


def test_zero_shot_needs_a_vl_model(tmp_path: Path) -> None:
    result = run_bench(
        "_vl_micro", "thinkingearth_vit_tiny", tmp_path / "b", seeds=1, protocols=["zero-shot"],
        report=False, log=lambda m: None,
    )  # fmt: skip
    reasons = {r["reason"] for r in result.rows}
    assert all(r["status"] == "skipped" for r in result.rows)
    assert any("needs a vision-language model" in reason for reason in reasons)
