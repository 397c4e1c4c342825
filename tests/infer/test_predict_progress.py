"""Progress people can see: rows of a predicted scene, scenes of a synthetic export."""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path

import pytest
from infer_helpers import PlantedScene

from thinkingearth import count_progress
from thinkingearth.cli import main
from thinkingearth.count_progress import CountProgress
from thinkingearth.data.export import export_world
from thinkingearth.data.scene import Acquisition
from thinkingearth.infer.predictor import predict_scene
from thinkingearth.infer.threshold import threshold_model

ROWS = re.compile(r"^\[predict\] rows (\d+)/(\d+) \((\d+)%\)")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_every_interval_with_rate_and_time_left() -> None:
    clock, lines = FakeClock(), []
    stream = io.StringIO()  # not a terminal: plain lines
    with CountProgress(
        200, unit="rows", log=lines.append, prefix="[predict]", stream=stream, clock=clock
    ) as progress:
        clock.now += 4.0
        progress.update(40)
        assert lines == []  # less than every_s (10 s) since the start
        clock.now += 6.0
        progress.update(50)
        clock.now += 5.0
        progress.update(120)  # 5 s after the last line: quiet
        clock.now += 5.0
        progress.update(100)  # counts never go back
    assert not progress.bar and stream.getvalue() == ""
    assert lines == [
        "[predict] rows 50/200 (25%) · 5.0 rows/s · 30 s left",
        "[predict] rows 120/200 (60%) · 6.0 rows/s · 13 s left",
    ]


def test_a_terminal_gets_a_bar_and_no_lines() -> None:
    lines: list[str] = []
    terminal = Terminal()
    with CountProgress(
        3, unit="scenes", log=lines.append, prefix="[synth]", stream=terminal, every_s=0
    ) as progress:
        assert progress.bar
        for i in range(3):
            progress.update(i + 1)
    assert lines == []
    drawn = terminal.getvalue()
    assert "\r" in drawn and "synth" in drawn and "/3 " in drawn and "scenes/s" in drawn


def test_no_log_shows_nothing() -> None:
    terminal = Terminal()
    with CountProgress(5, unit="rows", log=None, stream=terminal, every_s=0) as progress:
        progress.update(5)
    assert not progress.bar and terminal.getvalue() == ""


def test_predict_scene_reports_rows_per_strip(planted: PlantedScene, tmp_path: Path) -> None:
    lines: list[str] = []
    model = threshold_model("water")
    predict_scene(
        dataclasses.replace(model, tile=64, overlap=8),
        [Acquisition.from_path("--image", planted.post)],
        tmp_path / "water.tif",
        quicklook=False,
        log=lines.append,
        progress_every_s=0,
    )
    rows = [tuple(int(g) for g in m.groups()) for m in map(ROWS.match, lines) if m]
    height = planted.shape[0]
    assert len(rows) >= 4  # one per strip of 56 rows, at least
    assert all(total == height for _, total, _ in rows)
    done = [d for d, _, _ in rows]
    assert done == sorted(done) and done[-1] == height and rows[-1][2] == 100
    assert 0 < done[0] < height


def test_predict_cli_progress_on_stderr_results_on_stdout(
    planted: PlantedScene,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(count_progress, "LINE_EVERY_S", 0.0)
    out = tmp_path / "flood.tif"
    argv = ["predict", "--task", "flood", "--pre", str(planted.pre), "--post", str(planted.post)]
    assert main([*argv, "--out", str(out), "--tile", "64", "--overlap", "8"]) == 0
    captured = capsys.readouterr()
    progress = [line for line in captured.err.splitlines() if ROWS.match(line)]
    assert len(progress) >= 4 and progress[-1].startswith(
        f"[predict] rows {planted.shape[0]}/{planted.shape[0]} (100%)"
    )
    assert "[predict]" not in captured.out
    assert captured.out.strip().startswith("wrote ")


def test_synth_reports_scenes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines: list[str] = []
    export_world(tmp_path / "a", "kurosiwo", n=3, size=32, log=lines.append, progress_every_s=0)
    assert [line.split(" · ")[0] for line in lines] == [
        "[synth] scenes 1/3 (33%)",
        "[synth] scenes 2/3 (67%)",
        "[synth] scenes 3/3 (100%)",
    ]
    monkeypatch.setattr(count_progress, "LINE_EVERY_S", 0.0)
    argv = ["synth", "--out", str(tmp_path / "b"), "--format", "native", "--n", "2"]
    assert main([*argv, "--size", "32"]) == 0
    captured = capsys.readouterr()
    assert "[synth] scenes 2/2 (100%)" in captured.err
    assert "[synth]" not in captured.out and captured.out.startswith("wrote 2 native")
