"""Raising ``max_steps`` on ``--resume`` stretches the learning-rate schedule to the new end:
continuous at the resume step, decaying to the floor at the new end (not the old one). A run that
had finished (at the floor) is re-warmed instead: a linear ramp from the floor, then the cosine
planned for the new end."""

from __future__ import annotations

import csv
import io
import itertools
import math
import shutil
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from thinkingearth.pretrain import run_pretrain
from thinkingearth.pretrain.modules import WarmupCosine

LR, MIN_RATIO, WARMUP = 1e-3, 0.05, 2


def test_stretch_is_continuous_and_ends_at_the_new_end() -> None:
    old = WarmupCosine(WARMUP, 8, MIN_RATIO)
    schedule = WarmupCosine(WARMUP, 8, MIN_RATIO)
    assert schedule(8) == pytest.approx(MIN_RATIO)  # the original floor, at step 8
    schedule.stretch_to(16, step=4)
    assert schedule.end == 16
    for step in range(5):
        assert schedule(step) == old(step)  # the past and the resume step are untouched
    after = [schedule(s) for s in range(4, 17)]
    assert all(a > b for a, b in itertools.pairwise(after))  # strictly decreasing
    assert schedule(8) > MIN_RATIO + 0.1 and schedule(16) == pytest.approx(MIN_RATIO)
    assert schedule(30) == pytest.approx(MIN_RATIO)
    # Stretching to the end it already has changes nothing (a resume with the same max_steps).
    before = [schedule(s) for s in range(20)]
    schedule.stretch_to(16, step=6)
    assert [schedule(s) for s in range(20)] == before
    # A second raise continues from the stretched curve.
    value = schedule(10)
    schedule.stretch_to(24, step=10)
    assert schedule(10) == value and schedule(24) == pytest.approx(MIN_RATIO)
    assert schedule(16) > MIN_RATIO and schedule(9) == before[9]


def test_stretch_during_warm_up_is_the_schedule_planned_for_the_new_end() -> None:
    schedule = WarmupCosine(4, 8, MIN_RATIO)
    schedule.stretch_to(16, step=2)
    planned = WarmupCosine(4, 16, MIN_RATIO)
    assert [schedule(s) for s in range(20)] == [planned(s) for s in range(20)]
    constant = WarmupCosine(2, 8, MIN_RATIO, cosine=False)
    constant.stretch_to(16, step=5)
    assert [constant(s) for s in range(20)] == [0.5] + [1.0] * 19
    with pytest.raises(ValueError, match="after the resume step"):
        WarmupCosine(2, 8, MIN_RATIO).stretch_to(4, step=4)


def test_resume_after_the_end_rewarms_then_decays_to_the_new_end() -> None:
    steps, warmup = 8, 3
    schedule = WarmupCosine(warmup, steps, MIN_RATIO)
    old = [schedule(s) for s in range(steps + 1)]
    assert old[steps] == MIN_RATIO  # the finished run sits at its floor
    schedule.stretch_to(2 * steps, step=steps)
    assert schedule.end == 2 * steps
    assert [schedule(s) for s in range(steps + 1)] == old  # the past is untouched
    assert schedule(steps) == MIN_RATIO  # continuous: the re-warm starts from the floor
    ramp = [schedule(s) for s in range(steps, steps + warmup + 1)]
    assert all(a < b for a, b in itertools.pairwise(ramp))  # rises over warmup steps
    assert ramp[1] - ramp[0] == pytest.approx(ramp[2] - ramp[1])  # linearly
    planned = WarmupCosine(warmup, 2 * steps, MIN_RATIO)  # the schedule planned for 2N
    assert ramp[-1] == planned(steps + warmup)
    decay = [schedule(s) for s in range(steps + warmup, 2 * steps + 1)]
    assert decay == [planned(s) for s in range(steps + warmup, 2 * steps + 1)]
    assert all(a > b for a, b in itertools.pairwise(decay))  # then decreases monotonically
    assert min(schedule(s) for s in range(steps + 1, 2 * steps)) > MIN_RATIO
    assert schedule(2 * steps) == pytest.approx(MIN_RATIO)  # the floor only at 2N
    assert max(ramp) > 2 * MIN_RATIO
    # warmup_steps 0 still re-warms, over one step; and a later raise stretches continuously.
    quick = WarmupCosine(0, steps, MIN_RATIO)
    quick.stretch_to(2 * steps, step=steps)
    assert quick(steps) == MIN_RATIO
    assert quick(steps + 1) == WarmupCosine(0, 2 * steps, MIN_RATIO)(steps + 1)
    value = schedule(12)
    schedule.stretch_to(3 * steps, step=12)
    assert schedule(12) == value and schedule(3 * steps) == pytest.approx(MIN_RATIO)
    assert schedule(2 * steps) > MIN_RATIO


def test_stretch_survives_the_scheduler_checkpoint() -> None:
    """The stretch rides in LambdaLR's state (loaded with weights_only=True, as Lightning does)."""
    schedule = WarmupCosine(WARMUP, 8, MIN_RATIO)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    schedule.stretch_to(16, step=4)
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = WarmupCosine(WARMUP, 16, MIN_RATIO)  # what configure_optimizers builds on resume
    restored = torch.optim.lr_scheduler.LambdaLR(
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR), fresh
    )
    restored.load_state_dict(state)
    assert [fresh(s) for s in range(20)] == [schedule(s) for s in range(20)]
    assert fresh.end == 16
    # A re-warm (resumed after the end) rides along the same way.
    schedule.stretch_to(24, step=16)
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert [fresh(s) for s in range(30)] == [schedule(s) for s in range(30)]
    assert fresh(17) > MIN_RATIO and fresh.end == 24
    # A checkpoint written before re-warming existed holds 3-tuples: still a plain stretch.
    legacy = WarmupCosine(WARMUP, 8, MIN_RATIO)
    legacy.__dict__.update({"total": 8, "stretches": [(4, schedule(4), 16)]})
    assert [legacy(s) for s in range(17)] == [schedule(s) for s in range(17)]


class _StopAt(Callback):
    """Stop training after ``step`` optimiser steps, as an interruption would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:  # type: ignore[no-untyped-def]
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def _lrs(out: Path) -> dict[int, float]:
    with open(out / "logs" / "csv" / "metrics.csv") as handle:
        return {
            int(row["step"]): float(row["train/lr"])
            for row in csv.DictReader(handle)
            if row.get("train/lr")
        }


def _final_lr(out: Path, step: int) -> float:
    ckpt = torch.load(out / "checkpoints" / f"step-{step:08d}.ckpt", weights_only=True)
    return float(ckpt["optimizer_states"][0]["param_groups"][0]["lr"])


@pytest.mark.slow
def test_resume_with_more_steps_stretches_or_rewarms_the_schedule(tiny, tmp_path) -> None:
    steps, stop = 8, 4
    config = tiny(trainer={"max_steps": steps, "checkpoint_every": 2, "keep_checkpoints": 1})
    o = config.optim
    assert (o.lr, o.min_lr_ratio, o.warmup_steps) == (LR, MIN_RATIO, WARMUP)
    planned = WarmupCosine(WARMUP, steps, MIN_RATIO)
    interrupted = tmp_path / "interrupted"
    run_pretrain(config, interrupted, callbacks=[_StopAt(stop)], log=None)
    first = _lrs(interrupted)
    assert sorted(first) == list(range(stop))
    for step, lr in first.items():
        assert lr == pytest.approx(LR * planned(step), rel=1e-9)
    same = tmp_path / "same"
    shutil.copytree(interrupted, same)

    # Raised to 2N: continuous at the resume step, decreasing, at the floor only at 2N.
    messages: list[str] = []
    result = run_pretrain(
        config, interrupted, resume=True, max_steps=2 * steps, log=messages.append
    )
    assert result.resumed_from == stop and result.steps == 2 * steps
    assert any("max_steps 8 -> 16" in m for m in messages), messages
    lrs = _lrs(interrupted)
    assert sorted(lrs) == list(range(2 * steps))
    assert lrs[stop] == pytest.approx(LR * planned(stop), rel=1e-9)  # no jump at the resume
    resumed = [lrs[s] for s in range(stop, 2 * steps)]
    assert all(a > b for a, b in itertools.pairwise(resumed))
    assert min(resumed) > LR * MIN_RATIO  # not at the floor at N = 8 (the old end), nor before 2N
    assert lrs[steps] > LR * MIN_RATIO + 0.1 * LR
    assert _final_lr(interrupted, 2 * steps) == pytest.approx(LR * MIN_RATIO, rel=1e-9)

    # The same max_steps reproduces the uninterrupted schedule exactly.
    run_pretrain(config, same, resume=True, log=None)
    again = _lrs(same)
    assert sorted(again) == list(range(steps))
    for step in range(steps):
        assert again[step] == pytest.approx(LR * planned(step), rel=1e-12)
    assert math.isclose(_final_lr(same, steps), LR * MIN_RATIO, rel_tol=1e-9)

    # That run finished at its floor; raised to 2N it re-warms, then decays to the floor at 2N.
    messages.clear()
    run_pretrain(config, same, resume=True, max_steps=2 * steps, log=messages.append)
    assert any("max_steps 8 -> 16" in m and "re-warms over 2 steps" in m for m in messages)
    lrs = _lrs(same)
    assert sorted(lrs) == list(range(2 * steps))
    floor = LR * MIN_RATIO
    assert lrs[steps] == pytest.approx(floor, rel=1e-9)  # continuous: still the floor at N
    rising = [lrs[s] for s in range(steps, steps + WARMUP + 1)]
    assert all(a < b for a, b in itertools.pairwise(rising))
    assert lrs[steps + 1] > floor and max(lrs[s] for s in range(steps, 2 * steps)) > 2 * floor
    falling = [lrs[s] for s in range(steps + WARMUP, 2 * steps)]
    assert all(a > b for a, b in itertools.pairwise(falling))
    assert min(lrs[s] for s in range(steps + 1, 2 * steps)) > floor
    assert _final_lr(same, 2 * steps) == pytest.approx(floor, rel=1e-9)
