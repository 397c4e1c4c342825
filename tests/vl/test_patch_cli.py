"""``thinkingearth patch``: Mind the Modality Gap stage (a) from the command line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from thinkingearth.cli import main

#: Few samples and steps: the shipped config's settings, scaled down to seconds.
FAST = ["--set", "n_train=16", "--set", "n_eval=8", "--set", "steps=3", "--set", "batch_size=8",
        "--set", "warmup_steps=1", "--set", "alphas=[0.0, 0.5, 1.0]"]  # fmt: skip


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread: the tiny models run many times faster on a shared, loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def zero_shot(tiny_vl, tmp_path: Path) -> Path:
    """Folder of a tiny VL model, as a VL pretrain run writes it."""
    from thinkingearth.vl.model import save_vl_model

    save_vl_model(tiny_vl(), tmp_path / "zs" / "vl_model")
    return tmp_path / "zs"


def test_patch_writes_the_report_prints_it_and_refuses_to_overwrite(
    zero_shot: Path, one_thread: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from thinkingearth.vl.model import load_vl_model

    out = tmp_path / "patch"
    argv = ["patch", "--config", "synthetic-landcover", "--out", str(out), *FAST]
    # --weights wins over a --set weights=... given with it
    argv += ["--weights", str(zero_shot), "--set", "weights=elsewhere", "--set", "save_alpha=0.5"]
    assert main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    report = json.loads((out / "patching.json").read_text())
    assert result["task"] == report["task"] == "landcover" and result["control"] == ["season"]
    assert result["alphas"] == [row["alpha"] for row in report["rows"]] == [0.0, 0.5, 1.0]
    assert result["accuracy"]["landcover"] == [row["landcover"] for row in report["rows"]]
    assert result["accuracy"]["season"] == [row["season"] for row in report["rows"]]
    assert report["settings"]["weights"] == str(zero_shot) and report["settings"]["steps"] == 3
    assert Path(result["report"]) == out / "patching.json"
    assert Path(result["model"]) == out / "vl_model.safetensors"
    assert load_vl_model(out).sha256 != load_vl_model(zero_shot).sha256  # θ(0.5), not θ(0)
    # progress on stderr: the fine-tuning's steps and every α
    assert "fine-tuning step 3/3 · loss" in captured.err and "α = 0.5: landcover" in captured.err
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["weights"] == str(zero_shot) and written["n_train"] == 16
    # the output is refused before any work unless --overwrite; nothing is touched
    before = (out / "patching.json").stat().st_mtime_ns
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("thinkingearth: error:") and "exists" in err and err.count("\n") == 1
    assert (out / "patching.json").stat().st_mtime_ns == before
    # --overwrite replaces it; the table on stdout is the report's; -q keeps stderr quiet
    assert main(["-q", *argv, "--overwrite"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert lines[0].split() == ["ALPHA", "LANDCOVER", "(TASK)", "SEASON", "(CONTROL)"]
    report = json.loads((out / "patching.json").read_text())
    for line, row in zip(lines[1:4], report["rows"], strict=True):
        assert line.split() == [
            f"{row['alpha']:g}",
            f"{row['landcover']:.3f}",
            f"{row['season']:.3f}",
        ]
    assert lines[4].split()[0] == "chance"
    assert lines[-1].startswith(f"report: {out / 'patching.md'}")
    assert "model at α = 0.5" in lines[-1]


def test_print_config_resolves_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "never"
    argv = ["patch", "--config", "synthetic-landcover", "--out", str(out), "--print-config"]
    assert main([*argv, "--weights", "my-model", "--set", "steps=7", "--set", "controls=[]"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["weights"] == "my-model" and printed["steps"] == 7
    assert printed["controls"] == [] and printed["task"] == "landcover"
    assert printed["alphas"][0] == 0.0 and printed["alphas"][-1] == 1.0
    assert not out.exists()
    # a YAML file works as --config; the shipped file's weights are kept without --weights
    config = tmp_path / "mine.yaml"
    config.write_text("name: mine\nweights: runs/x\ntask: season\ncontrols: [landcover]\n")
    assert main(["patch", "--config", str(config), "--out", str(out), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["name"] == "mine" and printed["weights"] == "runs/x"
    assert printed["task"] == "season" and printed["controls"] == ["landcover"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "stepz=3"], "'stepz'"),
        (["--set", "controls=[flood]"], "unknown scene task 'flood'"),
        (["--set", "alphas=[0.0, 1.5]"], "alphas"),
        (["--set", "steps"], "--set takes KEY=VALUE"),
        (["--config", "no-such-patching"], "no-such-patching"),
    ],
)
def test_bad_settings_exit_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "out"
    argv = ["patch", "--config", "synthetic-landcover", "--out", str(out), "--weights", "w"]
    assert main([*argv, *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err and captured.err.count("\n") == 1
    assert not out.exists()


def test_a_missing_model_is_one_line_before_any_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["patch", "--config", "synthetic-landcover", "--out", str(out)]
    assert main([*argv, "--weights", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("thinkingearth: error:") and err.count("\n") == 1
    assert not (out / "patching.json").exists()


def test_the_model_being_patched_is_never_an_output(
    zero_shot: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (zero_shot / "vl_model.safetensors").read_bytes()
    argv = ["patch", "--config", "synthetic-landcover", "--out", str(zero_shot), "--overwrite"]
    argv += ["--weights", str(zero_shot / "vl_model.safetensors"), "--set", "save_alpha=0.5"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "holds the model being patched" in err and err.count("\n") == 1
    assert (zero_shot / "vl_model.safetensors").read_bytes() == before
    assert not (zero_shot / "patching.json").exists()
