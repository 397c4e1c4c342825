"""``thinkingearth finetune``: configs, the run's outputs, resume after SIGKILL, bad input, and the
finetune → predict loop on the synthetic world."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
import yaml
from safetensors.torch import load_file

from thinkingearth.cli import main
from thinkingearth.errors import UserInputError
from thinkingearth.tasks import finetune, list_finetune_configs, load_finetune_config
from thinkingearth.tasks.finetuning import StepBatchSampler

SHIPPED = (
    "synthetic-flood",
    "synthetic-landcover",
    "kurosiwo-flood",
    "sen1floods11-water",
    "bigearthnet-landcover",
    "eurosat-ms",
)

#: A tiny flood run: seconds on a CPU.
TINY: dict[str, Any] = {
    "data": {"options": {"n": {"train": 12, "val": 4, "test": 4}}, "batch_size": 4},
    "model": {"overrides": {"embed_dim": 48, "depth": 2, "num_heads": 2, "hyper_dim": 32}},
    "trainer": {"max_steps": 6, "val_every": 3, "checkpoint_every": 2, "log_every": 1},
}


def _tiny_config(tmp_path: Path, **extra: Any) -> Path:
    data = {"base": "synthetic-flood", **TINY}
    for key, value in extra.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_configs_load_and_validate() -> None:
    assert set(SHIPPED) <= set(list_finetune_configs())
    for name in SHIPPED:
        config = load_finetune_config(name)
        assert config.name == name
    flood = load_finetune_config("kurosiwo-flood")
    assert (flood.task.kind, flood.task.classes, flood.task.ignore_index) == (
        "change",
        ("no water", "permanent water", "flood"),
        3,
    )
    assert flood.data.reader == "kurosiwo"  # SL2 + SL1 + MS1: the reader's default acquisitions


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("base: synthetic-flood\ntrainer: {max_stepz: 3}\n")
    with pytest.raises(UserInputError, match=r"trainer\.max_stepz"):
        load_finetune_config(str(path))
    path.write_text("base: synthetic-flood\ndata: {options: {sise: 3}}\n")
    with pytest.raises(UserInputError, match=r"data\.options\.sise"):
        load_finetune_config(str(path))
    # --set 'data.options.n={train:16}' is YAML for the key "train:16": refused, not ignored.
    with pytest.raises(UserInputError, match=r"unknown split 'train:16' in data\.options\.n"):
        load_finetune_config("synthetic-flood", {"data": {"options": {"n": {"train:16": None}}}})
    with pytest.raises(UserInputError, match=r"data\.options\.n\.val must be a positive"):
        load_finetune_config("synthetic-flood", {"data": {"options": {"n": {"val": 0}}}})
    held_out = {"data": {"splits": {"val": None}}}  # the base's n.val is then unused, not wrong
    assert load_finetune_config("synthetic-flood", held_out).data.splits.val is None


def test_encoder_flag_keeps_the_overrides_set_on_the_command_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--encoder drops the config's model.overrides (its own encoder's), not --set's."""

    def resolved(*args: str) -> dict[str, Any]:
        assert main(["finetune", "--config", "kurosiwo-flood", *args, "--print-config"]) == 0
        return yaml.safe_load(capsys.readouterr().out)["model"]

    small = ["--encoder", "thinkingearth_vit_tiny", "--set", "model.overrides={embed_dim: 48}"]
    assert resolved(*small)["overrides"] == {"embed_dim": 48}
    assert resolved("--set", "model.overrides.depth=2", *small)["overrides"] == {
        "embed_dim": 48,
        "depth": 2,
    }
    model = resolved("--encoder", "thinkingearth_vit_tiny")
    assert model["encoder"] == "thinkingearth_vit_tiny" and model["overrides"] == {}


def test_a_text_reader_is_not_finetuning_data() -> None:
    with pytest.raises(UserInputError, match=r"data\.reader gaia gives text, not task labels"):
        load_finetune_config("synthetic-landcover", {"data": {"reader": "gaia", "options": {}}})


def test_baseline_with_a_frozen_protocol_is_refused() -> None:
    with pytest.raises(UserInputError, match="protocol must be finetune"):
        load_finetune_config(
            "synthetic-flood", {"model": {"baseline": "unet"}, "protocol": "linear-probe"}
        )


def test_step_sampler_resumes_and_splits_ranks() -> None:
    full = list(StepBatchSampler(10, 4, 7, seed=3))
    assert list(StepBatchSampler(10, 4, 7, seed=3, start=4)) == full[4:]
    # every sample once per epoch, across epochs
    flat = [i for batch in full for i in batch]
    assert sorted(flat[:10]) == list(range(10))
    ranks = [list(StepBatchSampler(10, 2, 7, seed=3, rank=r, world=2)) for r in range(2)]
    for step in range(7):
        assert ranks[0][step] + ranks[1][step] == full[step]


def test_step_sampler_takes_the_ddp_rank_when_it_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    """finetune builds the sampler before DDP starts; each process must draw its own share."""
    lazy = StepBatchSampler(10, 2, 7, seed=3, rank=None, world=2)
    assert list(lazy) == list(StepBatchSampler(10, 2, 7, seed=3, rank=0, world=2))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None: 1)
    assert list(lazy) == list(StepBatchSampler(10, 2, 7, seed=3, rank=1, world=2))


def test_finetune_writes_model_metrics_report(tmp_path: Path) -> None:
    out = tmp_path / "run"
    lines: list[str] = []
    result = finetune(str(_tiny_config(tmp_path)), out, log=lines.append)
    for name in (
        "model.safetensors",
        "model.json",
        "metrics.json",
        "report.md",
        "config.yaml",
        "training_curve.png",
        "confusion_matrix.png",
    ):
        assert (out / name).is_file(), name
    record = json.loads((out / "metrics.json").read_text())
    for key in ("miou", "water_f1", "f1/flood", "oa", "iou/permanent_water"):
        assert key in record, key
    assert record["run"]["steps"] == 6 and record["run"]["best_step"] in (3, 6)
    header = json.loads((out / "model.json").read_text())
    assert header["task"] == "flood" and header["acquisitions"] == 3
    assert header["bands"] == ["VV", "VH"] and header["uses_metadata"] is True
    assert header["tile"] == 64
    # the saved weights are the best validation weights
    best = load_file(str(out / "checkpoints" / "best.safetensors"))
    saved = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(best[k], saved[k]) for k in best)
    report = (out / "report.md").read_text()
    assert "Confusion matrix" in report and "| flood |" in report
    assert result.metrics["miou"] == pytest.approx(record["miou"])
    assert any("validation miou" in line for line in lines)


def test_baseline_and_classification_checkpoints_round_trip(tmp_path: Path) -> None:
    from thinkingearth.tasks.checkpoint import load_task_module

    out = tmp_path / "unet"
    config = _tiny_config(
        tmp_path, model={"baseline": "unet", "baseline_options": {"unet_widths": [8, 16]}}
    )
    finetune(str(config), out, log=None)
    ckpt = load_task_module(out / "model")
    assert ckpt.kind == "change" and ckpt.uses_metadata is False
    multi = tmp_path / "multilabel.yaml"
    multi.write_text(
        yaml.safe_dump(
            {
                "base": "synthetic-landcover",
                "task": {"kind": "multilabel", "name": "presence"},
                "data": {
                    "options": {"task": "multilabel", "n": {"train": 12, "val": 4, "test": 4}}
                },
                "protocol": "linear-probe",
                **{k: v for k, v in TINY.items() if k != "data"},
            }
        )
    )
    finetune(str(multi), tmp_path / "ml", log=None)
    loaded = load_task_module(tmp_path / "ml" / "model")
    assert loaded.kind == "multilabel"
    from thinkingearth.infer.task_model import load_task

    scene = load_task(out / "model")  # a baseline maps scenes like an encoder
    assert scene.task == "flood" and scene.steps == (3,)
    with pytest.raises(UserInputError, match="multilabel model"):
        load_task(tmp_path / "ml" / "model")
    record = json.loads((tmp_path / "ml" / "metrics.json").read_text())
    assert "map" in record
    # One mAP: labels with no positive test sample are left out, and the report names them.
    absent = int(record["map_classes_absent"])
    assert absent >= 1  # 4 test scenes of the seeded world lack some of the 9 labels
    report = (tmp_path / "ml" / "report.md").read_text()
    assert f"labels with a positive test sample: {absent} label" in report
    assert f"| map_classes_absent | {absent} |" in report
    assert (tmp_path / "ml" / "confusion_matrix.png").is_file()  # per-label outcomes, as a PNG


def _cli(*args: str) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "thinkingearth.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc.returncode, proc.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        # A reader root that lacks the layout (the Kuro Siwo config, not synthetic's options).
        ({"base": "kurosiwo-flood", "data": {"batch_size": 4}}, "has no data/ folder"),
        # A split with no samples.
        ({"data": {"options": {"n": {"train": 4, "val": 2, "test": 0}}}}, "positive number"),
        # An encoder whose bands do not match the data: a spectral-only encoder and a DEM.
        (
            {
                "task": {
                    "kind": "regression",
                    "name": "elevation",
                    "classes": [],
                    "ignore_index": None,
                },
                "data": {"options": {"task": "no2", "sensor": "copernicus-dem"}},
                "model": {"overrides": {"variables": False}},
            },
            "cannot read this data: model 'thinkingearth_vit_tiny' has no variable hypernetwork",
        ),
    ],
)
def test_bad_data_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: dict[str, Any], message: str
) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    config = _tiny_config(tmp_path, **extra)
    if extra.get("base") == "kurosiwo-flood":  # TINY's synthetic sample counts are no option here
        data = yaml.safe_load(config.read_text())
        del data["data"]["options"]
        config.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    code = main(["finetune", "--config", str(config), "--out", str(out), "--data-root", str(root)])
    assert code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("thinkingearth: error")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert not out.exists()


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _tiny_config(tmp_path)
    out = tmp_path / "out"
    # A validation split the config names must exist: a typo is no silent hold-out.
    typo = _tiny_config(tmp_path, data={"splits": {"val": "valid"}})
    assert main(["finetune", "--config", str(typo), "--out", str(out)]) == 2
    assert "data.splits.val valid:" in capsys.readouterr().err and not out.exists()
    config = _tiny_config(tmp_path)
    assert main(["finetune", "--config", str(config), "--out", str(out), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    garbage = tmp_path / "enc.safetensors"
    garbage.write_bytes(b"not a checkpoint")
    assert (
        main(["finetune", "--config", str(config), "--out", str(out), "--encoder", str(garbage)])
        == 2
    )
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("thinkingearth: error")]
    assert len(errors) == 1 and "Traceback" not in err
    assert "enc.safetensors" in errors[0]
    assert not out.exists()


@pytest.mark.slow
def test_two_ddp_processes_train_and_rank_zero_alone_writes(tmp_path: Path) -> None:
    """--devices 2: it crashed (unused encoder parameters), then both ranks wrote OUT."""
    config = _tiny_config(
        tmp_path,
        trainer={"max_steps": 3, "val_every": 2, "checkpoint_every": 2, "threads": 1},
    )
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "thinkingearth.cli", "finetune", "--config", str(config)),
            *("--out", str(out), "--devices", "2"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("model: ") == 1, proc.stdout  # rank 1 ends after training
    run = json.loads((out / "metrics.json").read_text())["run"]
    assert run["steps"] == 3 and run["best_step"] in (2, 3)  # step 3 validated on all ranks


def test_resume_after_sigkill_continues_at_the_same_step(tmp_path: Path) -> None:
    config = _tiny_config(
        tmp_path, trainer={"max_steps": 12, "val_every": 6, "checkpoint_every": 2}
    )
    reference = tmp_path / "reference"
    finetune(str(config), reference, log=None)
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "thinkingearth.cli",
            "finetune",
            "--config",
            str(config),
            "--out",
            str(killed),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    folder = killed / "checkpoints"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        steps = [p.name for p in folder.glob("step-*.ckpt")] if folder.is_dir() else []
        if any(int(n[5:13]) >= 4 for n in steps):
            break
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.skip("the run finished before it could be killed (machine too fast)")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    result = finetune(str(config), killed, resume=True, log=None)
    assert result.resumed_from is not None and 4 <= result.resumed_from < 12
    assert result.steps == 12
    a = load_file(str(reference / "model.safetensors"))
    b = load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    # A finished run resumed with a raised --max-steps trains on (it stopped at once before).
    more = finetune(str(config), killed, resume=True, max_steps=14, log=None)
    assert (more.resumed_from, more.steps) == (12, 14)
    assert (killed / "checkpoints" / "step-00000014.ckpt").is_file()


# ----------------------------------------------------------------------------------------------
# The loop: finetune -> predict on a synthetic scene pair, against the threshold model
# ----------------------------------------------------------------------------------------------


def _flood_f1(pred: np.ndarray, truth: np.ndarray) -> float:
    scored = (truth != 3) & (pred != 255)
    p, t = (pred == 2) & scored, (truth == 2) & scored
    tp = float((p & t).sum())
    return 2 * tp / max(float(p.sum() + t.sum()), 1.0)


@pytest.mark.slow
def test_finetuned_model_maps_floods_better_than_the_threshold_model(tmp_path: Path) -> None:
    from thinkingearth.data.export import export_world

    run = tmp_path / "run"
    assert main(["finetune", "--config", "synthetic-flood", "--out", str(run)]) == 0
    world = export_world(tmp_path / "world", "native", n=2, seed=11, size=192)
    scores: dict[str, list[float]] = {"weights": [], "threshold": []}
    for folder in sorted(world.glob("scene_*")):
        with rasterio.open(folder / "flood.tif") as f:
            truth = f.read(1)
        for name, how in (
            ("weights", ["--weights", str(run / "model")]),
            ("threshold", ["--model", "threshold"]),
        ):
            out = tmp_path / f"{folder.name}-{name}.tif"
            scenes = ["--pre2", str(folder / "s1_sl2.tif")] if name == "weights" else []
            code = main(
                [
                    "predict",
                    "--task",
                    "flood",
                    *how,
                    *scenes,
                    "--pre",
                    str(folder / "s1_sl1.tif"),
                    "--post",
                    str(folder / "s1_ms1.tif"),
                    "--out",
                    str(out),
                ]
            )
            assert code == 0
            with rasterio.open(out) as o:
                scores[name].append(_flood_f1(o.read(1), truth))
    weights, threshold = np.mean(scores["weights"]), np.mean(scores["threshold"])
    assert weights > threshold, scores
