"""The command line: exit codes, one-line errors, no tracebacks for user errors."""

import subprocess
import sys
from pathlib import Path

from thinkingearth.cli import main


def test_synth_writes_each_layout(tmp_path, capsys):
    for fmt in ("kurosiwo", "bigearthnet", "native"):
        out = tmp_path / fmt
        size = {"kurosiwo": "32", "bigearthnet": "24", "native": "32"}[fmt]
        assert main(["synth", "--out", str(out), "--format", fmt, "--n", "2", "--size", size]) == 0
        assert (out / "thinkingearth_world.json").exists()
    assert "wrote 2 native samples" in capsys.readouterr().out


def test_user_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    cases = [
        (["synth", "--out", str(tmp_path / "a"), "--format", "zarr"], "unknown format 'zarr'"),
        (["synth", "--out", str(tmp_path / "a"), "--n", "0"], "positive"),
        (["synth", "--out", str(tmp_path / "a"), "--size", "-3"], "positive"),
    ]
    (tmp_path / "f").write_text("")
    cases.append((["synth", "--out", str(tmp_path / "f" / "x"), "--n", "1"], "not a folder"))
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "a").exists()


def test_console_script_exit_code_and_usage_errors(tmp_path):
    exe = Path(sys.executable).with_name("thinkingearth")
    bad = subprocess.run(
        [str(exe), "synth", "--out", str(tmp_path / "o"), "--format", "x"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.count("\n") == 1
    usage = subprocess.run([str(exe), "synth", "--n", "notanumber"], capture_output=True, text=True)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


def test_demo_quick_writes_report_and_figure(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick"]) == 0
    report = (out / "report.md").read_text()
    assert "![the synthetic world](world.png)" in report and "Time per stage" in report
    assert (out / "world.png").stat().st_size > 10_000
    assert (out / "world" / "kurosiwo" / "data").is_dir()
