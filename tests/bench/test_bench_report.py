"""Aggregate score, summaries and cost meters, on hand-made rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from thinkingearth.bench.meters import PeakMemory, count_parameters, inference_throughput
from thinkingearth.bench.report import (
    aggregate,
    entry_names,
    interquartile_mean,
    normalised_scores,
    summarise,
)
from thinkingearth.bench.suites import TaskSpec


def _task(name: str, higher: bool) -> TaskSpec:
    return TaskSpec(
        name=name,
        kind="segmentation" if higher else "regression",
        load=lambda split: [],  # type: ignore[arg-type, return-value]
        primary="miou" if higher else "rmse",
        higher_is_better=higher,
        num_classes=2 if higher else 1,
    )


TASKS = {"seg": _task("seg", True), "reg": _task("reg", False)}


def _row(task: str, model: str, value: float, seed: int, protocol: str = "finetune") -> dict:
    return {
        "task": task,
        "model": model,
        "protocol": protocol,
        "fraction": "1",
        "seed": seed,
        "status": "ok",
        "primary": value,
        "train_seconds": 2.0,
    }


ROWS = [
    _row("seg", "a", 0.8, 0),
    _row("seg", "a", 0.6, 1),
    _row("seg", "b", 0.4, 0),
    _row("seg", "b", 0.4, 1),
    _row("reg", "a", 10.0, 0),  # lower is better: a is best on reg
    _row("reg", "a", 10.0, 1),
    _row("reg", "b", 30.0, 0),
    _row("reg", "b", 20.0, 1),
    {**_row("reg", "c", 1.0, 0), "status": "failed"},  # failed rows never count
]


def test_min_max_normalisation_per_task_inverts_lower_is_better() -> None:
    scores = {
        (s["entry"], s["task"], s["seed"]): s["score"] for s in normalised_scores(ROWS, TASKS)
    }
    assert scores[("a", "seg", "0")] == 1.0 and scores[("b", "seg", "0")] == 0.0
    assert scores[("a", "seg", "1")] == pytest.approx(0.5)
    assert scores[("a", "reg", "0")] == 1.0 and scores[("b", "reg", "0")] == 0.0
    assert scores[("b", "reg", "1")] == pytest.approx(0.5)
    assert all(entry != "c" for entry, _, _ in scores)


def test_iqm_and_bootstrap_interval() -> None:
    assert interquartile_mean([0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 100.0]) == 1.0
    assert math.isnan(interquartile_mean([]))
    result = {a.entry: a for a in aggregate(ROWS, TASKS, seed=0, samples=300)}
    a, b = result["a"], result["b"]
    assert a.iqm > b.iqm and a.runs == 4 and a.tasks == 2
    assert a.low <= a.iqm <= a.high and b.low <= b.iqm <= b.high
    again = {x.entry: x for x in aggregate(ROWS, TASKS, seed=0, samples=300)}
    assert (again["a"].low, again["a"].high) == (a.low, a.high)  # seeded
    assert aggregate(ROWS, TASKS)[0].entry == "a"  # best first


def test_entries_split_by_protocol_only_when_a_model_ran_several() -> None:
    rows = [*ROWS, _row("seg", "a", 0.5, 0, protocol="linear-probe")]
    names = entry_names(rows)
    assert names[("a", "linear-probe")] == "a (linear-probe)"
    assert names[("a", "finetune")] == "a (finetune)"
    assert names[("b", "finetune")] == "b"


def test_all_equal_scores_normalise_to_one_half() -> None:
    rows = [_row("seg", "a", 0.3, 0), _row("seg", "b", 0.3, 0)]
    assert {s["score"] for s in normalised_scores(rows, TASKS)} == {0.5}


def test_summary_is_mean_and_std_over_seeds() -> None:
    summary = {(s["task"], s["model"]): s for s in summarise(ROWS, [])}
    assert summary[("seg", "a")]["primary"] == pytest.approx(0.7)
    assert summary[("seg", "a")]["primary_std"] == pytest.approx(np.std([0.8, 0.6], ddof=1))
    assert summary[("seg", "a")]["seeds"] == 2 and ("reg", "c") not in summary


def test_peak_memory_sees_an_allocation() -> None:
    with PeakMemory() as memory:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB
        torch.zeros(1).add_(float(block[0]))
        import time

        time.sleep(0.05)
        del block
    assert memory.method == "rss"
    assert memory.peak_mb > 40


def test_parameter_count_and_throughput() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    net[0].weight.requires_grad_(False)
    assert count_parameters(net) == (15 + 8, 15 + 8 - 12)

    class Module(torch.nn.Module):
        def forward(self, batch: dict) -> torch.Tensor:
            return net(batch["image"])

    batches = [{"image": torch.randn(5, 4)} for _ in range(3)]
    ips = inference_throughput(Module(), batches)
    assert math.isfinite(ips) and ips > 0
    assert math.isnan(inference_throughput(Module(), []))
