"""Fault tolerance: SIGKILL mid-run, --resume carries on; bad checkpoints are clear errors."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from thinkingearth.cli import main
from thinkingearth.errors import UserInputError
from thinkingearth.pretrain import run_pretrain
from thinkingearth.pretrain.checkpoint import (
    AtomicCheckpointIO,
    list_checkpoints,
    read_checkpoint,
)


def _metrics(out: Path) -> dict[int, dict[str, float]]:
    """Last logged row of each step (a killed run may have logged steps that are redone)."""
    rows: dict[int, dict[str, float]] = {}
    with open(out / "logs" / "csv" / "metrics.csv") as handle:
        for row in csv.DictReader(handle):
            rows[int(row["step"])] = {k: float(v) for k, v in row.items() if v and k != "step"}
    return rows


@pytest.mark.slow
def test_sigkill_then_resume_continues_step_lr_and_loss(tiny, tmp_path):
    steps = 12
    config = tiny(trainer={"max_steps": steps, "checkpoint_every": 3, "keep_checkpoints": 2})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    reference = tmp_path / "reference"
    run_pretrain(config, reference, log=None)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "thinkingearth.cli",
            "pretrain",
            "--config",
            str(path),
            "--out",
            str(killed),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not list_checkpoints(killed / "checkpoints") and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    found = list_checkpoints(killed / "checkpoints")
    assert found, "the run died before its first checkpoint"
    last = found[-1][0]
    assert last < steps, "the run finished before it could be killed"
    assert not (killed / "encoder.safetensors").exists()

    # Without --resume the folder is refused; with it the run continues from the checkpoint.
    assert main(["pretrain", "--config", str(path), "--out", str(killed)]) == 2
    result = run_pretrain(config, killed, resume=True, log=None)
    assert result.resumed_from == last and result.steps == steps

    ref, got = _metrics(reference), _metrics(killed)
    assert sorted(got) == list(range(steps))
    for step in range(last, steps):
        assert got[step]["train/lr"] == pytest.approx(ref[step]["train/lr"], rel=1e-6)
    for step in range(last, min(last + 4, steps)):
        assert got[step]["train/loss"] == pytest.approx(ref[step]["train/loss"], rel=0.05)
    final_ref = torch.load(reference / "checkpoints" / f"step-{steps:08d}.ckpt", weights_only=True)
    final_got = torch.load(killed / "checkpoints" / f"step-{steps:08d}.ckpt", weights_only=True)
    assert final_got["global_step"] == final_ref["global_step"] == steps
    loaders = final_got["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loaders == [{"seed": 0, "batch_size": 8, "world_size": 1, "step": steps}]


def test_corrupt_truncated_or_foreign_checkpoints_are_clear_errors(tiny, tmp_path, capsys):
    config = tiny(trainer={"max_steps": 2, "checkpoint_every": 2})
    out = tmp_path / "run"
    run_pretrain(config, out, log=None)
    (ckpt,) = [p for _, p in list_checkpoints(out / "checkpoints")]
    assert read_checkpoint(ckpt)["global_step"] == 2
    data = ckpt.read_bytes()
    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {**config.to_dict(), "trainer": {**config.to_dict()["trainer"], "max_steps": 4}}
        )
    )

    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserInputError, match=r"step-00000002\.ckpt is corrupt or truncated"):
        run_pretrain(config, out, resume=True, max_steps=4, log=None)
    assert main(["pretrain", "--config", str(path), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "corrupt or truncated" in err and "\n" not in err and "Traceback" not in err

    ckpt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserInputError, match="corrupt or truncated"):
        run_pretrain(config, out, resume=True, max_steps=4, log=None)
    torch.save({"weights": torch.zeros(2)}, ckpt)
    with pytest.raises(UserInputError, match="not a ThinkingEarth pretraining checkpoint"):
        run_pretrain(config, out, resume=True, max_steps=4, log=None)

    ckpt.write_bytes(data)  # intact again: a different config is refused, the same one resumes
    other = tiny(trainer={"max_steps": 4}, optim={"lr": 5e-4})
    with pytest.raises(UserInputError, match=r"optim\.lr was 0\.001"):
        run_pretrain(other, out, resume=True, log=None)
    assert run_pretrain(config, out, resume=True, max_steps=4, log=None).steps == 4


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "step-00000004.ckpt"
    io.save_checkpoint({"a": torch.ones(3)}, target)
    before = target.read_bytes()

    def broken_save(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"a": torch.zeros(3)}, target)
    assert target.read_bytes() == before  # the previous checkpoint is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # no temporary left
    (tmp_path / ".step-00000008.ckpt.tmp-1234.ckpt").write_bytes(b"partial")  # after a SIGKILL
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4]
