"""The demo stage: a short run, its loss curve, the recorded pretraining-pays result."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from thinkingearth.pretrain.report import loss_curve, pretrain_stage


@dataclass
class _Ctx:
    out: Path
    seed: int = 0
    quick: bool = True


def test_pretrain_stage_writes_loss_curve_and_leaves_the_encoder(tmp_path):
    ctx = _Ctx(out=tmp_path)
    section = pretrain_stage(ctx)
    assert "![pretraining loss](pretrain_loss.png)" in section
    assert (tmp_path / "pretrain_loss.png").stat().st_size > 5_000
    assert ctx.pretrained_encoder == tmp_path / "pretrain" / "encoder.safetensors"  # type: ignore[attr-defined]
    assert "pretrain_pays" in section  # the recorded benchmark, or how to run it


def test_loss_curve_keeps_the_last_row_of_each_step(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text(
        "step,train/loss,train/lr,train/mae/sentinel-2-l2a\n"
        "0,1.0,0.1,1.0\n1,0.9,0.1,0.9\n1,0.8,0.1,0.8\n2,0.7,0.1,\n"
    )
    series = loss_curve(csv, tmp_path / "curve.png")
    assert series["step"] == [0.0, 1.0, 2.0]
    assert series["train/loss"] == [1.0, 0.8, 0.7]
    assert series["train/mae/sentinel-2-l2a"] == [1.0, 0.8]
