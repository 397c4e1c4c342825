"""Uncertainty and label noise in the benchmark: run key, noisy training split, metric columns,
report section, skipped head/baseline combinations (test-only micro suite)."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from thinkingearth.bench import get_suite, read_results, run_bench
from thinkingearth.bench.models import resolve_models
from thinkingearth.bench.runner import (
    FIXED_COLUMNS,
    RunKey,
    _prepare,
    measured_noise,
    plan_runs,
    train_split,
)
from thinkingearth.cli import main
from thinkingearth.errors import UserInputError
from thinkingearth.tasks.variants import UncertaintyHead

QUIET = {"log": lambda message: None}


def _micro(*names: str) -> Any:
    suite = get_suite("_micro")
    return replace(suite, tasks=tuple(t for t in suite.tasks if t.name in names))


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """Two heads at noise rate 0.4 on three tasks: encoder rows train, U-Net heads skip."""
    out = tmp_path_factory.mktemp("bench") / "noisy"
    result = run_bench(
        _micro("multilabel", "landcover", "biomass"),
        "thinkingearth_vit_tiny,unet",
        out,
        seeds=1,
        uncertainty=["none", "heteroscedastic"],
        noise=[0.4],
        command="thinkingearth bench --noise 0.4",
        **QUIET,
    )
    return out, result


@pytest.mark.slow
def test_rows_carry_head_noise_and_uncertainty_metrics(noisy: tuple[Path, Any]) -> None:
    out, result = noisy
    assert not result.failed
    rows = read_results(out / "results.csv")
    # vit: 3 tasks x 2 heads; unet: the same, skipped where it cannot
    assert len(rows) == 12
    header = next(csv.reader((out / "results.csv").open()))
    assert tuple(header[: len(FIXED_COLUMNS)]) == FIXED_COLUMNS
    assert {"uncertainty", "noise"} <= set(FIXED_COLUMNS)
    by = {(r["task"], r["model"], r["uncertainty"], r["noise"]): r for r in rows}
    assert {r["noise"] for r in rows} == {"0.4"}
    for task in ("multilabel", "landcover"):
        row = by[(task, "thinkingearth_vit_tiny", "heteroscedastic", "0.4")]
        assert row["status"] == "ok" and row["reason"] == ""
        for key in ("ece", "ece_bins", "nll", "brier", "discard_auc", "discard_auc_random",
                    "unc_err_spearman", "entropy_mean", "aleatoric_mean", "epistemic_mean"):  # fmt: skip
            assert row[key] not in ("", "nan"), (task, key)
        assert float(row["ece_bins"]) == 15 and 0 <= float(row["ece"]) <= 1
        assert float(row["uncertainty_seconds"]) > 0
        curves = json.loads((out / row["curves"]).read_text())
        assert len(curves["reliability"]["counts"]) == 15
        assert len(curves["discard"]["values"]) == len(curves["discard"]["fractions"])
    biomass = by[("biomass", "thinkingearth_vit_tiny", "heteroscedastic", "0.4")]
    assert biomass["coverage90"] not in ("", "nan") and biomass["ece"] == ""
    # deterministic rows are scored the same way (every trainable run)
    assert by[("landcover", "unet", "none", "0.4")]["nll"] not in ("", "nan")
    # noise rate 0.4 is measured back on the training labels (boundary shifts: pixel share)
    landcover = by[("landcover", "thinkingearth_vit_tiny", "none", "0.4")]
    assert landcover["noise_model"] == "boundary-shift"
    assert float(landcover["noise_measured"]) == pytest.approx(0.4, abs=0.05)
    multilabel = by[("multilabel", "thinkingearth_vit_tiny", "none", "0.4")]
    assert multilabel["noise_model"] == "drop-add"
    assert float(multilabel["noise_measured"]) == pytest.approx(0.4, abs=0.15)  # 72 entries


def test_a_head_the_network_cannot_take_is_skipped_not_failed(noisy: tuple[Path, Any]) -> None:
    out, _ = noisy
    rows = read_results(out / "results.csv")
    unet = [r for r in rows if r["model"] == "unet" and r["uncertainty"] == "heteroscedastic"]
    assert len(unet) == 3 and all(r["status"] == "skipped" for r in unet)
    dense = [r for r in unet if r["task"] != "multilabel"]
    assert dense and all("head" in r["reason"] for r in dense), [r["reason"] for r in dense]
    assert all(r["status"] != "failed" for r in rows)
    report = (out / "report.md").read_text()
    assert "## Skipped" in report


def test_report_has_the_uncertainty_tables_figures_and_comparisons(
    noisy: tuple[Path, Any],
) -> None:
    out, _ = noisy
    report = (out / "report.md").read_text()
    section = report.split("## Uncertainty")[1].split("## Setup")[0]
    assert "### landcover" in section and "### biomass" in section
    assert "ECE (15 bins)" in section and "Brier" in section and "Spearman" in section
    assert "| deterministic | 0.4 |" in section or "| deterministic | 0.4 " in section
    for name in (
        "uncertainty_landcover_reliability.png",
        "uncertainty_landcover_discard.png",
        "uncertainty_multilabel_reliability.png",
        "uncertainty_biomass_discard.png",
    ):
        assert f"({name})" in section
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "uncertainty_biomass_reliability.png" not in section  # regression: no classes
    assert "heteroscedastic vs deterministic" in section and "at rate 0.4: NLL" in section
    # the per-task tables keep head and noise apart
    landcover = report.split("**landcover**")[1].split("**biomass**")[0]
    assert "| head | noise |" in landcover and "heteroscedastic" in landcover


def test_noise_reaches_the_training_split_only() -> None:
    suite = get_suite("_micro")
    task = next(t for t in suite.tasks if t.name == "landcover")
    prepared = _prepare(task, suite)
    key = RunKey("landcover", "unet", "finetune", "1", 3, "none", "0.4")
    train = train_split(prepared, task, key)
    noisy = [train[i] for i in range(len(train))]
    changed = sum(int((s["mask"] != s["mask_clean"]).sum()) for s in noisy)
    assert changed / sum(s["mask"].numel() for s in noisy) == pytest.approx(0.4, abs=0.05)
    assert measured_noise(train, task) == pytest.approx(0.4, abs=0.05)
    # the same seed draws the same noise; another seed other noise
    again = train_split(prepared, task, key)
    assert torch.equal(again[0]["mask"], noisy[0]["mask"])
    other = train_split(prepared, task, key._replace(seed=4))
    assert not torch.equal(other[0]["mask"], noisy[0]["mask"])
    # the test split is the reader's, labels untouched
    raw = task.load("test")
    for i in range(len(prepared.test)):
        sample = prepared.test[i]
        assert "mask_clean" not in sample
        assert torch.equal(sample["mask"], raw[i]["mask"])
    clean = train_split(prepared, task, key._replace(noise="0"))
    assert "mask_clean" not in clean[0]


def test_old_results_without_the_columns_resume_as_none_and_zero(tmp_path: Path) -> None:
    old = [c for c in FIXED_COLUMNS if c not in ("uncertainty", "noise")]
    with (tmp_path / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*old, "miou"])
        writer.writeheader()
        for task in ("landcover", "flood", "biomass"):
            writer.writerow({"suite": "_micro", "task": task, "kind": "x", "model": "unet",
                             "protocol": "finetune", "fraction": "1", "seed": "0",
                             "status": "ok", "primary_metric": "miou", "primary": "0.5",
                             "miou": "0.5"})  # fmt: skip
        writer.writerow({"suite": "_micro", "task": "multilabel", "model": "unet",
                         "protocol": "finetune", "fraction": "1", "seed": "0",
                         "status": "skipped", "reason": "cannot"})  # fmt: skip
    again = run_bench("_micro", "unet", tmp_path, seeds=1, report=False, **QUIET)
    assert again.ran == 0 and again.reused == 4
    assert {(r["uncertainty"], r["noise"]) for r in again.rows} == {("none", "0")}
    assert {r["miou"] for r in again.rows if r["status"] == "ok"} == {"0.5"}
    # asking for the same runs by their new key finds them too
    same = run_bench("_micro", "unet", tmp_path, seeds=1, uncertainty="none", noise=[0.0],
                     report=False, **QUIET)  # fmt: skip
    assert same.ran == 0 and same.reused == 4


def test_plan_covers_heads_and_noise_rates() -> None:
    suite = get_suite("_micro")
    specs = resolve_models("thinkingearth_vit_tiny,chance")
    keys = plan_runs(suite, specs, [0, 1], None, None, ["none", "mc_dropout"], [0, 0.2, 0.4])
    trained = [k for k in keys if k.model != "chance"]
    assert len(trained) == 4 * 2 * 3 * 2
    assert {k.noise for k in trained} == {"0", "0.2", "0.4"}
    # protocols that train nothing run once, deterministic and clean
    assert {(k.uncertainty, k.noise) for k in keys if k.model == "chance"} <= {("none", "0")}
    assert len(plan_runs(suite, specs[:1], [0])) == 4  # the suite's defaults: none, 0
    with pytest.raises(UserInputError, match="unknown uncertainty method 'bayes'"):
        plan_runs(suite, specs, [0], uncertainty=["bayes"])
    with pytest.raises(UserInputError, match=r"noise rate must be in \[0, 1\); got 1"):
        plan_runs(suite, specs, [0], noise=[1.0])
    with pytest.raises(UserInputError, match="noise rate"):
        plan_runs(suite, specs, [0], noise=[-0.1])


def test_noisy_labels_suite() -> None:
    suite = get_suite("noisy-labels")
    assert [t.kind for t in suite.tasks] == ["multilabel", "segmentation", "change", "regression"]
    assert suite.noise == (0.0, 0.2, 0.4)
    assert suite.uncertainty == ("none", "heteroscedastic", "mc_dropout")
    keys = plan_runs(suite, resolve_models(list(suite.models)), [0, 1, 2])
    assert len(keys) == 4 * 3 * 3 * 3  # tasks x heads x rates x seeds, one model
    # every head of the suite can be built from its settings
    for method in suite.uncertainty:
        UncertaintyHead(uncertainty=method, **dict(suite.head))  # type: ignore[arg-type]


def test_suite_head_defaults_are_the_head_defaults() -> None:
    defaults = UncertaintyHead().to_dict()
    defaults.pop("uncertainty")
    assert dict(get_suite("synthetic-lite").head) == defaults


def test_a_failed_uncertainty_evaluation_keeps_the_run_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import thinkingearth.uncertainty.evaluation as evaluation

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no predictive samples today")

    monkeypatch.setattr(evaluation, "evaluate_uncertainty", broken)
    messages: list[str] = []
    result = run_bench(
        _micro("landcover"), "unet", tmp_path, seeds=1, max_steps=1, log=messages.append
    )
    (row,) = result.rows
    assert row["status"] == "ok" and not result.failed
    assert (
        row["reason"] == "uncertainty evaluation failed: RuntimeError: no predictive samples today"
    )
    assert "nll" not in row and row["miou"] >= 0
    assert any("Traceback" in m for m in messages)
    report = (tmp_path / "report.md").read_text()
    assert "## Uncertainty" in report and "no predictive samples today" in report


def test_cli_flags_and_their_user_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import thinkingearth.bench as bench

    seen: dict[str, Any] = {}

    def fake_run_bench(suite: Any, models: Any, out: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise UserInputError("stop here")

    for argv, message in (
        (["--uncertainty", "bayes"], "unknown uncertainty method 'bayes'"),
        (["--uncertainty", " , "], "expected a comma-separated list"),
        (["--noise", "1.2"], "noise rate must be in [0, 1); got 1.2"),
        (["--noise", "-0.2"], "noise rate must be in [0, 1); got -0.2"),
        (["--noise", "a,b"], "--noise must be numbers in [0, 1)"),
    ):
        code = main(["bench", "--suite", "_micro", *argv, "--out", str(tmp_path / "x")])
        err = capsys.readouterr().err.strip()
        assert code == 2, err
        assert err.startswith("thinkingearth: error:") and message in err, err
        assert len(err.splitlines()) == 1
    assert not (tmp_path / "x" / "results.csv").exists()
    monkeypatch.setattr(bench, "run_bench", fake_run_bench)
    argv = ["bench", "--suite", "_micro", "--uncertainty", "none,heteroscedastic,mc_dropout",
            "--noise", "0,0.2,0.4", "--out", str(tmp_path / "y")]  # fmt: skip
    assert main(argv) == 2
    assert seen["uncertainty"] == ["none", "heteroscedastic", "mc_dropout"]
    assert seen["noise"] == [0.0, 0.2, 0.4]
    assert "--uncertainty none,heteroscedastic,mc_dropout --noise 0,0.2,0.4" in seen["command"]


@pytest.mark.slow
def test_demo_benchmark_shows_a_reliability_diagram_and_a_discard_curve(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from thinkingearth.bench.demo import DEMO_UNCERTAINTY_TASK, benchmark_stage

    said: list[str] = []
    text = benchmark_stage(SimpleNamespace(out=tmp_path, quick=True, log=said.append))
    stem = f"bench/uncertainty_{DEMO_UNCERTAINTY_TASK}"
    for name in (f"{stem}_reliability.png", f"{stem}_discard.png"):
        assert f"({name})" in text
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert any(name in line for line in said)
    assert "ECE" in text and "discarding at random" in text
