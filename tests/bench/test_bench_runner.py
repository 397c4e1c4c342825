"""The benchmark harness end to end on the test-only micro suite: rows, resume, CLI, real layouts."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from thinkingearth.bench import get_suite, list_suites, read_results, run_bench
from thinkingearth.bench.models import resolve_model, resolve_models
from thinkingearth.bench.runner import FIXED_COLUMNS, plan_runs, write_results
from thinkingearth.cli import main
from thinkingearth.errors import UserInputError
from thinkingearth.models import create_encoder, save


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small encoder saved in our format, standing in for a pretrained one."""
    # Its own seed, not the global generator's state: benchmark runs seed that generator (0 per
    # run), so a checkpoint drawn after one could equal a random-init encoder drawn after another.
    with torch.random.fork_rng():
        torch.manual_seed(20261130)
        encoder = create_encoder("thinkingearth_vit_tiny", depth=2, img_size=32, patch_size=8)
    return save(encoder, tmp_path_factory.mktemp("ckpt") / "pretrained_tiny")


@pytest.fixture(scope="module")
def micro(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("bench") / "micro"
    models = f"{checkpoint},unet,wrn-eca"
    result = run_bench("_micro", models, out, seeds=1, command="thinkingearth bench …")
    return out, result


def test_micro_suite_writes_one_row_per_run(micro: tuple[Path, object]) -> None:
    out, result = micro
    rows = read_results(out / "results.csv")
    assert len(rows) == 4 * 3  # 4 tasks x 3 models x 1 protocol x 1 fraction x 1 seed
    assert not result.failed  # type: ignore[attr-defined]
    by = {(r["task"], Path(r["model"]).name): r for r in rows}
    assert by[("multilabel", "unet")]["status"] == "skipped"
    assert "dense model" in by[("multilabel", "unet")]["reason"]
    assert by[("landcover", "wrn-eca")]["status"] == "skipped"
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 4 + 3 + 1  # encoder on all, unet on dense, wrn-eca on multilabel
    encoder = by[("flood", "pretrained_tiny.safetensors")]
    assert encoder["protocol"] == "frozen-upernet" and encoder["normalisation"] == "sar_db"
    assert by[("multilabel", "pretrained_tiny.safetensors")]["protocol"] == "linear-probe"
    assert by[("landcover", "unet")]["protocol"] == "finetune"
    assert by[("landcover", "unet")]["normalisation"] == "registry"
    header = next(csv.reader((out / "results.csv").open()))
    assert tuple(header[: len(FIXED_COLUMNS)]) == FIXED_COLUMNS
    assert {"map", "miou", "water_f1", "rmse", "mae", "iou/flood"} <= set(header)
    for r in ok:
        assert float(r["primary"]) == float(r[r["primary_metric"]])
        assert float(r["train_seconds"]) > 0 and float(r["inference_ips"]) > 0
        assert int(r["params"]) >= int(r["trainable_params"]) > 0
        assert float(r["peak_mem_mb"]) >= 0 and r["steps"] == "2"
    # frozen encoder: only the head trains
    assert int(encoder["trainable_params"]) < int(encoder["params"])
    assert by[("landcover", "unet")]["trainable_params"] == by[("landcover", "unet")]["params"]


def test_micro_report_has_tables_and_plots(micro: tuple[Path, object]) -> None:
    out, _ = micro
    report = (out / "report.md").read_text()
    assert "thinkingearth bench …" in report
    assert "## Aggregate score" in report and "IQM" in report
    assert "pretrained_tiny" in report and "| unet |" in report
    assert "## Skipped" in report
    for png in ("per_task.png", "aggregate.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({png})" in report


def test_rerun_resumes_and_retries_failed_rows(
    micro: tuple[Path, object], checkpoint: Path
) -> None:
    out, _ = micro
    models = f"{checkpoint},unet,wrn-eca"
    again = run_bench("_micro", models, out, seeds=1, report=False, log=lambda m: None)
    assert again.ran == 0 and again.reused == 12
    rows = read_results(out / "results.csv")
    target = next(r for r in rows if r["task"] == "biomass" and r["model"] == "unet")
    target["status"] = "failed"
    write_results(out / "results.csv", rows)
    retry = run_bench("_micro", models, out, seeds=1, report=False, log=lambda m: None)
    assert retry.ran == 1
    rows = read_results(out / "results.csv")
    assert len(rows) == 12 and all(r["status"] in ("ok", "skipped") for r in rows)


def test_results_of_another_suite_are_refused(tmp_path: Path) -> None:
    write_results(tmp_path / "results.csv", [{"suite": "synthetic", "task": "x", "model": "unet",
                                             "protocol": "finetune", "fraction": 1, "seed": 0,
                                             "status": "ok"}])  # fmt: skip
    with pytest.raises(UserInputError, match="holds results of suite synthetic"):
        run_bench("_micro", "unet", tmp_path, seeds=1)


def test_plan_runs_covers_protocols_fractions_and_seeds() -> None:
    suite = get_suite("_micro")
    specs = resolve_models("thinkingearth_vit_tiny,unet")
    keys = plan_runs(suite, specs, [0, 1], ["linear-probe", "finetune"], [0.1, 1.0])
    per_task = len(keys) // len(suite.tasks)
    assert per_task == 2 * 2 * 2 + 1 * 2 * 2  # encoder: 2 protocols; unet: finetune only
    assert {k.fraction for k in keys} == {"0.1", "1"}
    with pytest.raises(UserInputError, match="unknown protocol"):
        plan_runs(suite, specs, [0], ["lora"])
    with pytest.raises(UserInputError, match="label fraction"):
        plan_runs(suite, specs, [0], None, [2.0])


def test_random_init_counterpart_of_a_checkpoint(checkpoint: Path) -> None:
    trained = resolve_model(str(checkpoint))
    fresh = resolve_model(f"random:{checkpoint}")
    assert fresh.kind == "random" and fresh.label == f"random-init {trained.label}"
    a, b = trained.encoder(), fresh.encoder()
    assert a.config == b.config
    assert not torch.equal(a.blocks[0].attn.qkv.weight, b.blocks[0].attn.qkv.weight)
    with pytest.raises(UserInputError, match="does not exist"):
        resolve_model("random:missing.safetensors")


def test_model_names() -> None:
    assert resolve_model("resnet18").kind == "baseline"
    assert resolve_model("thinkingearth_vit_tiny").kind == "registry"
    published = resolve_model("copernicusfm_base")  # resolved by name, loaded on first use
    assert (published.kind, published.label) == ("checkpoint", "copernicusfm_base")
    with pytest.raises(UserInputError, match=r"checkpoint missing\.safetensors does not exist"):
        resolve_model("missing.safetensors")
    with pytest.raises(UserInputError, match="unknown model 'resnet9'; expected a baseline"):
        resolve_model("resnet9")
    with pytest.raises(UserInputError, match="at least one model"):
        resolve_models(" , ")


def test_suites() -> None:
    assert list_suites() == [
        "synthetic-lite", "synthetic", "noisy-labels", "kurosiwo", "copernicus-bench",
        "vl-synthetic", "domain-shift",
    ]  # fmt: skip
    lite = get_suite("synthetic-lite")
    assert [t.kind for t in lite.tasks] == ["multilabel", "segmentation", "change", "regression"]
    assert get_suite("synthetic-lite", max_steps=5).max_steps == 5
    with pytest.raises(UserInputError, match="unknown suite 'nope'"):
        get_suite("nope")
    with pytest.raises(UserInputError, match="pass --data-root DIR"):
        get_suite("kurosiwo")
    with pytest.raises(UserInputError, match="unknown suite settings"):
        get_suite("_micro", steps=3)


def test_cli_bench_and_its_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    threads = torch.get_num_threads()
    code = main(["bench", "--suite", "_micro", "--models", "unet", "--seeds", "1",
                 "--max-steps", "1", "--threads", "2", "--out", str(out)])  # fmt: skip
    assert code == 0
    assert torch.get_num_threads() == threads  # restored after the benchmark
    captured = capsys.readouterr()
    assert "4 run(s) done" in captured.out
    rows = read_results(out / "results.csv")
    assert {r["steps"] for r in rows if r["status"] == "ok"} == {"1"}
    report = (out / "report.md").read_text()
    assert "bench --suite _micro --models unet --seeds 1 --max-steps 1 --threads 2" in report
    assert "torch" in report and "2 intra-op threads" in report
    for argv, message in (
        (["--suite", "nope"], "unknown suite 'nope'"),
        (["--suite", "_micro", "--models", "resnet9"], "unknown model 'resnet9'"),
        (["--suite", "_micro", "--fractions", "a,b"], "--fractions must be numbers"),
        (["--suite", "_micro", "--seeds", "0"], "--seeds must be a positive number"),
        (["--suite", "kurosiwo"], "pass --data-root DIR"),
        (["--suite", "_micro", "--threads", "0"], "--threads must be a positive number"),
    ):
        assert main(["bench", *argv, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("thinkingearth: error:") and message in err
        assert len(err.splitlines()) == 1


def test_kurosiwo_suite_reads_the_published_layout(tmp_path: Path) -> None:
    from thinkingearth.data.export import export_world

    root = export_world(tmp_path / "ks", "kurosiwo", n=10, seed=0, size=32)
    result = run_bench(
        "kurosiwo", "unet", tmp_path / "out", data_root=root, seeds=1, fractions=[1.0],
        max_steps=1, report=False, log=lambda m: None,
    )  # fmt: skip
    (row,) = result.rows
    assert row["status"] == "ok", row.get("reason")
    assert row["normalisation"] == "sar_db" and row["task"] == "kurosiwo"
    assert row["train_samples"] == 7 and row["test_samples"] == 2  # the 7:1:2 event split


def test_copernicus_bench_skips_tasks_whose_data_is_missing(tmp_path: Path) -> None:
    result = run_bench(
        "copernicus-bench", "unet", tmp_path / "out", data_root=tmp_path, seeds=1,
        report=False, log=lambda m: None,
    )  # fmt: skip
    assert result.rows and all(r["status"] == "skipped" for r in result.rows)
    assert all(r["reason"].startswith("data not available") for r in result.rows)
