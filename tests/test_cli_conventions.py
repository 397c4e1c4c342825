"""Command-line conventions: --version, -h, flags and defaults in the help, -q/-v, stdout for
results and stderr for everything else, --json, ``list``, ``--set`` overrides, Lightning quiet."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import typer
import yaml

from thinkingearth.cli import app, main
from thinkingearth.output import use_verbosity

EXE = Path(sys.executable).with_name("thinkingearth")


def _command_paths() -> list[list[str]]:
    """Every command and group of the app, as argv prefixes (the root is ``[]``)."""
    import click

    paths: list[list[str]] = []

    def walk(command: click.Command, path: list[str]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return paths


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 0, argv
    return capsys.readouterr().out


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Help rendered on one line per option."""
    monkeypatch.setenv("COLUMNS", "250")


# ----------------------------------------------------------------------------------------------
# --version, -h, flags and defaults
# ----------------------------------------------------------------------------------------------


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"thinkingearth {version('thinkingearth')}\n" and captured.err == ""


def test_short_help_on_the_app_and_every_command(
    wide: None, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = _command_paths()
    names = {" ".join(p) for p in paths}
    assert {"", "synth", "pretrain", "finetune", "predict", "bench", "list"} <= names
    assert {"weights", "weights list", "weights fetch"} <= names
    for path in paths:
        short = _help([*path, "-h"], capsys)
        assert short == _help([*path, "--help"], capsys)
        assert "Usage: thinkingearth" in short and "-h" in short, path
        # flags read as flags: no value placeholder beside them, --help included
        assert "<bool>" not in short, path
        assert re.search(r"--help\s+-h\s+Show this message", short), path
        # -q/-v on every command and group, after its name too
        assert re.search(r"--quiet\s+-q\s", short) and re.search(r"--verbose\s+-v\s", short), path


def test_every_command_that_prints_a_result_has_json() -> None:
    root = typer.main.get_command(app)
    without = []
    for path in _command_paths():
        command = root
        for name in path:
            command = command.commands[name]  # type: ignore[attr-defined]
        if getattr(command, "commands", None) is not None:
            continue  # a group prints no result of its own
        if not any(p.name == "as_json" for p in command.params):
            without.append(" ".join(path))
    assert without == []


def test_boolean_flags_show_as_plain_flags(wide: None, capsys: pytest.CaptureFixture[str]) -> None:
    pretrain = _help(["pretrain", "-h"], capsys)
    assert re.search(r"--resume\s+Continue from the latest checkpoint", pretrain)
    assert re.search(r"--print-config\s+Print the resolved config", pretrain)
    predict = _help(["predict", "-h"], capsys)
    assert re.search(r"--quicklook\s+--no-quicklook\s+Write a PNG", predict)
    assert "[default: quicklook]" in predict


def test_every_option_says_its_default(wide: None, capsys: pytest.CaptureFixture[str]) -> None:
    root = typer.main.get_command(app)
    # inputs and outputs have no default: they are what the user gives
    inputs = {"out", "image", "pre", "pre2", "post", "scenes", "weights", "date", "pre_date"}
    inputs |= {"pre2_date", "post_date", "data_root", "sets", "config", "suite", "task", "name"}
    checked = 0
    for path in _command_paths():
        command = root
        for name in path:
            command = command.commands[name]  # type: ignore[attr-defined]
        for param in command.params:
            if param.param_type_name != "option" or param.required or param.hidden:
                continue
            if getattr(param, "is_flag", False) and not param.secondary_opts:
                continue  # a plain flag is off unless given
            if param.default is None:
                assert param.name in inputs or "default" in (param.help or ""), (path, param.name)
            else:
                assert param.show_default, (path, param.name)
                checked += 1
    assert checked > 10
    bench = _help(["bench", "-h"], capsys)
    assert re.search(r"--seeds\s+<int>\s+.*\[default: 3\]", bench)
    assert re.search(r"--accelerator\s+<str>\s+.*\[default: cpu\]", bench)
    finetune = _help(["finetune", "-h"], capsys)
    assert re.search(r"--max-steps\s+<int>\s+.*default: the config's", finetune)


# ----------------------------------------------------------------------------------------------
# -q / -v, stdout and stderr
# ----------------------------------------------------------------------------------------------


def _micro_bench(out: Path, *extra: str) -> list[str]:
    return ["bench", "--suite", "_micro", "--models", "unet", "--seeds", "1", "--max-steps", "1",
            "--threads", "2", "--out", str(out), *extra]  # fmt: skip


def test_progress_on_stderr_result_on_stdout_and_quiet_before_or_after(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "b"
    assert main(_micro_bench(out)) == 0
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 1 and "4 run(s) done" in captured.out
    assert "[bench] landcover__unet" in captured.err  # training progress
    assert "[bench] suite _micro" in captured.err and "[bench]" not in captured.out
    # the runs are kept: a second call only says so (and nothing under -q, before or after)
    assert main(_micro_bench(out)) == 0
    assert "4 already in" in capsys.readouterr().err
    for argv in (
        _micro_bench(out, "-q"),
        ["-q", *_micro_bench(out)],
        ["--quiet", *_micro_bench(out)],
    ):
        assert main(argv) == 0
        captured = capsys.readouterr()
        assert captured.err == "", argv
        assert captured.out.count("\n") == 1 and "0 run(s) done, 4 kept" in captured.out


def test_quiet_and_verbose_together_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (
        ["-q", "synth", "-v", "--out", str(tmp_path / "x")],
        ["synth", "-q", "--verbose", "--out", str(tmp_path / "x")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "contradict" in err
    assert not (tmp_path / "x").exists()


def test_verbose_shows_debug_records_and_quiet_hides_warnings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import warnings

    from thinkingearth import output

    log = logging.getLogger("thinkingearth.test")
    with use_verbosity("verbose"):
        log.debug("kernel cache 3 entries")
        output.info("a progress line")
    err = capsys.readouterr().err
    assert "DEBUG thinkingearth.test: kernel cache 3 entries" in err and "a progress line" in err
    log.debug("not shown outside -v")
    with use_verbosity("quiet"):
        output.info("a progress line")
        output.warning("a warning")
        warnings.warn("a Python warning", UserWarning, stacklevel=1)
    with use_verbosity("normal"):
        output.warning("the units look like dB")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "thinkingearth: warning: the units look like dB\n"


def test_quiet_lightning_silences_the_banner_from_construction_on() -> None:
    import lightning as L

    from thinkingearth.progress import QuietLightning

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    handler = Keep()
    logger.addHandler(handler)
    try:
        for level in ("normal", "quiet"):
            with use_verbosity(level), QuietLightning():  # type: ignore[arg-type]
                L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
        assert not any("available" in r for r in records), records
        with use_verbosity("verbose"), QuietLightning():
            L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
        assert any(r.startswith("GPU available") for r in records)
    finally:
        logger.removeHandler(handler)
    assert logger.level == logging.NOTSET  # levels put back


def test_lightning_progress_bar_draws_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    from thinkingearth.progress import BarWithoutVersion

    bar = BarWithoutVersion().init_train_tqdm()
    bar.total = 4
    bar.update(2)
    bar.close()
    captured = capsys.readouterr()
    assert captured.out == "" and "2/4" in captured.err


TINY_PRETRAIN = {
    "base": "tiny-synthetic",
    "data": {"sensors": [{"sensor": "sentinel-2-l2a", "n": 8}], "batch_size": 4, "size": 32},
    "encoder": {
        "name": "thinkingearth_vit_tiny",
        "overrides": {"depth": 1, "patch_size": 8, "img_size": 32},
    },
    "trainer": {"max_steps": 2, "checkpoint_every": 2, "log_every": 1},
}


def test_pretrain_says_nothing_from_lightning(tmp_path: Path) -> None:
    """A fresh process (Lightning's own handlers write to the real stderr): -v shows what this
    silences (test_quiet_lightning_silences_the_banner_from_construction_on)."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_PRETRAIN))
    env = {**os.environ, "PYTHONWARNINGS": "default"}

    plain = subprocess.run(
        [str(EXE), "pretrain", "--config", str(config), "--out", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.startswith("encoder: ") and plain.stdout.count("\n") == 1
    for noise in ("GPU available", "TPU available", "Tip", "litlogger", "deprecated", "Trainer."):
        assert noise not in plain.stderr, plain.stderr
    assert plain.stderr and all(
        line.startswith("[pretrain] ") for line in plain.stderr.splitlines()
    ), plain.stderr


# ----------------------------------------------------------------------------------------------
# --json
# ----------------------------------------------------------------------------------------------


def test_bench_json_summary_and_set_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from thinkingearth.bench import read_results

    out = tmp_path / "b"
    sets = ["--set", "max_steps=2", "--set", "lr.finetune=5e-4", "--set", "batch_size=4"]
    argv = ["bench", "--suite", "_micro", "--models", "unet", "--seeds", "1", "--threads", "2"]
    assert main([*argv, *sets, "--out", str(out), "--json", "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # -q: no progress from the runs either
    summary = json.loads(captured.out)
    assert summary["ran"] == 4 and summary["reused"] == 0 and summary["failed"] == []
    assert summary["report"] == str(out / "report.md") and Path(summary["results"]).is_file()
    rows = read_results(out / "results.csv")
    assert {r["steps"] for r in rows if r["status"] == "ok"} == {"2"}
    assert {r["batch_size"] for r in rows if r["status"] == "ok"} == {"4"}
    assert "--set lr.finetune=5e-4" in (out / "report.md").read_text()
    # run again: everything is kept from the first call
    assert main([*argv, *sets, "--out", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["ran"] == 0 and again["reused"] == 4


def test_predict_and_synth_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import rasterio
    from affine import Affine

    # Linear sigma0 VV/VH: a dark (water) left half and a bright (land) right half.
    data = np.full((2, 64, 64), 0.08, dtype=np.float32)
    data[:, :, :32] = 0.004
    data *= np.random.default_rng(0).gamma(8.0, 1 / 8.0, size=data.shape).astype(np.float32)
    image = tmp_path / "s1.tif"
    profile = {"driver": "GTiff", "width": 64, "height": 64, "count": 2, "dtype": "float32",
               "crs": "EPSG:32633", "transform": Affine(10, 0, 500000, 0, -10, 4100000)}  # fmt: skip
    with rasterio.open(image, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = ("VV", "VH")
    out = tmp_path / "water.tif"
    argv = ["predict", "--task", "water", "--image", str(image), "--sar-units", "linear"]
    assert main([*argv, "--out", str(out), "--json", "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    summary = json.loads(captured.out)
    assert summary["path"] == str(out) and out.is_file()
    assert summary["uncertainty"] == str(tmp_path / "water_uncertainty.tif")
    assert summary["valid_fraction"] == pytest.approx(1.0)
    fractions = summary["class_fractions"]
    assert set(fractions) == {"land", "water"}
    assert fractions["water"] == pytest.approx(0.5, abs=0.05)
    assert summary["shape"] == [64, 64]

    assert main(["synth", "--out", str(tmp_path / "w"), "--n", "1", "--size", "32", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["n"] == 1 and made["format"] == "native" and Path(made["path"]).is_dir()


def test_finetune_json_with_set_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "base": "synthetic-flood",
                "data": {"options": {"n": {"train": 8, "val": 4, "test": 4}}, "batch_size": 4},
                "trainer": {"val_every": 1, "checkpoint_every": 1},
            }
        )
    )
    out = tmp_path / "ft"
    argv = ["finetune", "--config", str(config), "--out", str(out), "--json", "-q"]
    assert main([*argv, "--set", "trainer.max_steps=1", "--set", "optim.lr=3e-4"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    result = json.loads(captured.out)
    assert result["model"] == str(out / "model.safetensors") and result["steps"] == 1
    assert result["primary_metric"] == "miou" and 0.0 <= result["metrics"]["miou"] <= 1.0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["optim"]["lr"] == pytest.approx(3e-4) and saved["trainer"]["max_steps"] == 1


# ----------------------------------------------------------------------------------------------
# thinkingearth list
# ----------------------------------------------------------------------------------------------


def test_list_each_kind_as_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    from thinkingearth.bench.suites import list_suites
    from thinkingearth.models import list_models
    from thinkingearth.models.published import WEIGHTS
    from thinkingearth.pretrain.config import list_configs
    from thinkingearth.sensors import SENSORS
    from thinkingearth.tasks.finetune_config import list_finetune_configs
    from thinkingearth.vl.modality_gap import list_patching_configs

    expected = {
        "models": list_models(),
        "sensors": list(SENSORS),
        "configs": [*list_configs(), *list_finetune_configs(), *list_patching_configs()],
        "suites": list_suites(),
        "weights": sorted(WEIGHTS),
    }
    for what, names in expected.items():
        assert main(["list", what]) == 0
        text = capsys.readouterr().out
        for name in names:
            assert re.search(rf"(^|\s){re.escape(name)}\s", text, re.MULTILINE), (what, name)
        assert main(["list", what, "--json"]) == 0
        records = json.loads(capsys.readouterr().out)[what]
        assert [r["name"] for r in records] == names, what
    assert main(["list", "sensors", "--json"]) == 0
    sensors = {s["name"]: s for s in json.loads(capsys.readouterr().out)["sensors"]}
    assert sensors["sentinel-2-l2a"]["band_count"] == 12
    assert [b["name"] for b in sensors["sentinel-1-grd"]["bands"]] == ["VV", "VH"]
    assert main(["list", "models", "--json"]) == 0
    models = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    assert "dofa_base" in models["dofa_vit_base"]["weights"]
    assert models["thinkingearth_vit_tiny"]["embed_dim"] == 192
    assert main(["list", "configs", "--json"]) == 0
    configs = json.loads(capsys.readouterr().out)["configs"]
    assert {c["command"] for c in configs} == {"pretrain", "finetune", "patch"}
    assert main(["list", "suites"]) == 0
    assert "_micro" not in capsys.readouterr().out  # test-only suites stay hidden
    assert main(["list", "bands"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_weights_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    dofa = next(w for w in listing["weights"] if w["name"] == "dofa_base")
    assert dofa["architecture"] == "dofa_vit_base" and dofa["licence"] == "CC-BY-4.0"
    assert isinstance(dofa["cached"], bool) and len(listing["folders"]) == 2


# ----------------------------------------------------------------------------------------------
# --set and --print-config
# ----------------------------------------------------------------------------------------------


def test_set_overrides_printed_by_print_config(capsys: pytest.CaptureFixture[str]) -> None:
    sets = ["--set", "optim.lr=3e-4", "--set", "data.size=128", "--set", "trainer.progress_bar=no"]
    assert main(["pretrain", "--config", "tiny-synthetic", *sets, "--max-steps", "7",
                 "--print-config"]) == 0  # fmt: skip
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["optim"]["lr"] == pytest.approx(3e-4) and printed["data"]["size"] == 128
    assert printed["trainer"]["max_steps"] == 7 and printed["trainer"]["progress_bar"] is False
    assert printed["name"] == "tiny-synthetic"  # the rest is the shipped config's

    fine = ["finetune", "--config", "synthetic-flood", "--print-config"]
    assert main([*fine, "--set", "data.options.n.train=6", "--set", "model.tile=48"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["options"]["n"] == {"train": 6, "val": 64, "test": 128}
    assert printed["model"]["tile"] == 48
    # a named flag wins over --set of the same key
    assert main([*fine, "--set", "trainer.max_steps=9", "--max-steps", "4"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["trainer"]["max_steps"] == 4

    # bench too: the suite's settings after --set and the flags that change them, no --out needed
    bench = ["bench", "--suite", "_micro", "--print-config", "--set", "batch_size=4"]
    assert main([*bench, "--set", "lr.finetune=5e-4", "--max-steps", "3"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["name"] == "_micro" and printed["tasks"] and printed["batch_size"] == 4
    assert printed["lr"]["finetune"] == pytest.approx(5e-4) and printed["max_steps"] == 3
    assert printed["lr"]["linear-probe"] == pytest.approx(5e-3)  # the rest is the suite's
    assert main(["bench", "--suite", "_micro"]) == 2  # without --print-config, --out is needed
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["pretrain", "--config", "tiny-synthetic", "--set", "optim.lrr=1"], "'optim.lrr'"),
        (
            ["pretrain", "--config", "tiny-synthetic", "--set", "data.size=big"],
            "data.size is 'big'",
        ),
        (["pretrain", "--config", "tiny-synthetic", "--set", "optim.lr"], "KEY=VALUE"),
        (["finetune", "--config", "synthetic-flood", "--set", "optim.lr=[1"], "not valid YAML"),
        (["finetune", "--config", "synthetic-flood", "--set", "trainer.max_step=3"], "max_step"),
        (["bench", "--suite", "_micro", "--set", "steps=3"], "unknown suite setting 'steps'"),
        (["bench", "--suite", "_micro", "--set", "max_steps=abc"], "max_steps is 'abc'"),
        (["bench", "--suite", "_micro", "--set", "lr.finetun=1"], "lr.finetun"),
        (["bench", "--suite", "_micro", "--set", "name=x"], "unknown suite setting 'name'"),
    ],
)
def test_set_errors_are_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert (
        main([*argv, "--print-config"] if argv[0] != "bench" else [*argv, "--out", str(out)]) == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not out.exists()
