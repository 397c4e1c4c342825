"""Outputs of every command: checked before any work (one line, exit 2), refused when they exist
unless --overwrite (and the message says so), written with the umask's permissions."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from thinkingearth.bench import read_results
from thinkingearth.bench.runner import write_results
from thinkingearth.cli import main
from thinkingearth.data.export import export_world


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _error(code: int, capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line of a command that exited 2."""
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("thinkingearth: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _tiny_pretrain(tmp_path: Path, max_steps: int) -> Path:
    """The pretraining tests' tiny configuration (tests/pretrain/conftest.py) as a YAML file."""
    spec = importlib.util.spec_from_file_location(
        "_tiny_pretrain", Path(__file__).parent / "pretrain" / "conftest.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    data = module.tiny_dict(trainer={"max_steps": max_steps, "checkpoint_every": 2})
    path = tmp_path / f"tiny-{max_steps}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# ----------------------------------------------------------------------------------------------
# Checked before any work
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        "synth --n 1",
        "demo --quick",
        "pretrain --config tiny-synthetic",
        "finetune --config synthetic-flood",
        "bench --suite _micro --models unet --seeds 1",
        "predict --task flood --weights no/model --pre no-pre.tif --post no-post.tif",
        "predict --task flood --scenes no-scenes --model threshold",
        # the commands added later: no model or input exists, so a late check would say that
        "shard --config tiny-synthetic",
        "zeroshot --weights no/model --classes water,forest --image no.tif",
        "zeroshot --weights no/model --classes water,forest --scenes no-scenes",
        "embed --weights no/model --scenes no-scenes",
        "search water --index no-index",
        "patch --config synthetic-landcover --weights no/model",
    ],
    ids=lambda command: command.split()[0] + ("-scenes" if "--scenes" in command else ""),
)
def test_an_unwritable_output_is_one_line_before_anything_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    argv = command.split()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "out"
    flag = "--html" if argv[0] == "search" else "--out"
    if argv[0] in ("predict", "zeroshot") and "--scenes" not in argv:
        out = out / "map.tif"
    elif argv[0] == "search":
        out = out / "hits.html"
    # Inputs that do not exist would be the first complaint if the output were checked late.
    message = _error(main([*argv, flag, str(out)]), capsys)
    assert str(blocker) in message and "not a folder" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.parametrize("name", ["map.png", "map.jpg", "map"])
def test_predict_refuses_an_output_that_is_not_a_geotiff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    argv = ["predict", "--task", "flood", "--pre", "no-pre.tif", "--post", "no-post.tif"]
    message = _error(main([*argv, "--out", str(tmp_path / name)]), capsys)
    assert "--out" in message and ".tif" in message and "no-pre.tif" not in message


# ----------------------------------------------------------------------------------------------
# One overwrite policy
# ----------------------------------------------------------------------------------------------


def test_predict_refuses_an_existing_map_unless_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], umask_022: None
) -> None:
    scene = export_world(tmp_path / "world", "native", n=1, size=64) / "scene_00000"
    out = tmp_path / "maps" / "flood.tif"
    argv = ["predict", "--task", "flood", "--model", "threshold", "--pre",
            str(scene / "s1_sl1.tif"), "--post", str(scene / "s1_ms1.tif"), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    written = sorted(p for p in out.parent.iterdir())
    assert out in written and out.with_suffix(".png") in written
    for path in written:  # files written by the toolkit follow the umask
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    stamp = out.stat().st_mtime_ns
    message = _error(main(argv), capsys)
    assert str(out) in message and "--overwrite" in message
    assert out.stat().st_mtime_ns == stamp
    assert main([*argv, "--overwrite"]) == 0
    # the quicklook, the QGIS styles and GDAL's class-names sidecar are outputs too: one of
    # them left alone (a style edited by hand) is not replaced silently
    written = {path.name: path.read_bytes() for path in out.parent.iterdir()}
    for name in ("flood.png", "flood.qml", "flood_uncertainty.qml", "flood.tif.aux.xml"):
        for path in out.parent.iterdir():
            path.unlink()
        (out.parent / name).write_bytes(written[name])
        message = _error(main(argv), capsys)
        assert name in message and "--overwrite" in message
        assert [p.name for p in out.parent.iterdir()] == [name]


def test_demo_refuses_an_existing_folder_unless_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo-out"
    out.mkdir()
    (out / "report.md").write_text("an earlier report")
    message = _error(main(["demo", "--quick", "--out", str(out)]), capsys)
    assert "--overwrite" in message
    assert (out / "report.md").read_text() == "an earlier report"


def test_pretrain_overwrite_replaces_the_run_and_nothing_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "encoder.safetensors").write_bytes(b"an encoder of an earlier run")
    (out / "notes.txt").write_text("mine")
    four = ["pretrain", "--config", str(_tiny_pretrain(tmp_path, 4)), "--out", str(out)]
    message = _error(main(four), capsys)  # an encoder without checkpoints is a run too
    assert "--resume" in message and "--overwrite" in message
    assert "not both" in _error(main([*four, "--resume", "--overwrite"]), capsys)
    assert main([*four, "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step-00000002.ckpt",
        "step-00000004.ckpt",
    ]
    two = ["pretrain", "--config", str(_tiny_pretrain(tmp_path, 2)), "--out", str(out)]
    assert "--overwrite" in _error(main(two), capsys)
    assert main([*two, "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000002.ckpt"]
    assert json.loads((out / "summary.json").read_text())["steps"] == 2
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_finetune_overwrite_replaces_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = {  # the tiny flood run of tests/tasks/test_finetune.py
        "base": "synthetic-flood",
        "data": {"options": {"n": {"train": 12, "val": 4, "test": 4}}, "batch_size": 4},
        "model": {"overrides": {"embed_dim": 48, "depth": 2, "num_heads": 2, "hyper_dim": 32}},
        "trainer": {"max_steps": 4, "val_every": 2, "checkpoint_every": 2},
    }
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    argv = ["finetune", "--config", str(config), "--out", str(out)]
    assert main(argv) == 0
    message = _error(main([*argv, "--max-steps", "2"]), capsys)
    assert "--resume" in message and "--overwrite" in message
    assert main([*argv, "--max-steps", "2", "--overwrite"]) == 0
    assert json.loads((out / "metrics.json").read_text())["run"]["steps"] == 2
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == ["step-00000002.ckpt"]


def test_bench_overwrite_starts_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    out.mkdir()
    write_results(out / "results.csv", [{"suite": "synthetic", "task": "x", "model": "unet",
                                         "protocol": "finetune", "fraction": 1, "seed": 0,
                                         "status": "ok"}])  # fmt: skip
    argv = ["bench", "--suite", "_micro", "--models", "unet", "--seeds", "1", "--max-steps", "1",
            "--out", str(out)]  # fmt: skip
    message = _error(main(argv), capsys)
    assert "suite synthetic" in message and "--overwrite" in message
    assert main([*argv, "--overwrite"]) == 0
    rows = read_results(out / "results.csv")
    assert {r["suite"] for r in rows} == {"_micro"} and len(rows) == 4
