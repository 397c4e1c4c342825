"""Aggregate score, summaries and cost meters, on hand-made rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from thinkingearth.bench.meters import PeakMemory, count_parameters, inference_throughput
from thinkingearth.bench.models import ModelSpec
from thinkingearth.bench.report import (
    aggregate,
    aggregate_table,
    entry_names,
    interquartile_mean,
    normalised_scores,
    results_table,
    summarise,
    write_report,
)
from thinkingearth.bench.suites import Suite, TaskSpec


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


def test_one_seed_shows_n_equals_1_instead_of_a_degenerate_interval() -> None:
    rows = [r for r in ROWS if r["seed"] == 0]  # one seed per task and model
    result = {a.entry: a for a in aggregate(rows, TASKS, seed=0, samples=300)}
    assert result["a"].runs == 2 and result["a"].tasks == 2
    assert math.isnan(result["a"].low) and math.isnan(result["a"].high)
    table = aggregate_table(list(result.values()))
    assert "| n = 1 |" in table and "[1.000, 1.000]" not in table and "[0.000, 0.000]" not in table
    assert "one seed per task" in table
    # Per task: the cell of a single run shows n = 1, not "± 0.000".
    summary = {(s["task"], s["model"]): s for s in summarise(rows, [])}
    assert math.isnan(summary[("seg", "a")]["primary_std"])
    suite = _suite((TASKS["seg"], TASKS["reg"]))
    cells = results_table(rows, suite)
    assert "**0.800** (n = 1)" in cells and "±" not in cells
    # Two seeds keep mean ± std and a real interval.
    two = {a.entry: a for a in aggregate(ROWS, TASKS, seed=0, samples=300)}
    assert math.isfinite(two["a"].low) and "n = 1" not in aggregate_table(list(two.values()))
    assert "**0.700** ± 0.141" in results_table(ROWS, suite)


def test_aggregate_names_the_tasks_a_model_was_not_scored_on() -> None:
    rows = [*ROWS, _row("seg", "c", 0.5, 0), _row("seg", "c", 0.7, 1)]  # c: no reg run
    result = {a.entry: a for a in aggregate(rows, TASKS, seed=0, samples=300)}
    assert result["c"].task_names == ("seg",)
    assert result["a"].task_names == ("reg", "seg") and result["a"].tasks == 2
    table = aggregate_table(list(result.values()))
    assert "different task sets" in table
    assert "c: not scored on reg" in table
    assert "a: not scored" not in table and "b: not scored" not in table
    # The same task set for every model: no note.
    assert "different task sets" not in aggregate_table(aggregate(ROWS, TASKS, samples=300))


def _suite(tasks: tuple[TaskSpec, ...]) -> Suite:
    return Suite(
        name="hand-made",
        description="hand-made rows",
        tasks=tasks,
        models=(),
        protocols={},
        max_steps=2,
        batch_size=2,
    )


def test_report_says_how_many_classes_map_left_out_per_task(tmp_path) -> None:
    landcover = TaskSpec(
        name="landcover",
        kind="multilabel",
        load=lambda split: [],  # type: ignore[arg-type, return-value]
        primary="map",
        higher_is_better=True,
        num_classes=5,
        shown=("f1_macro",),
    )
    other = TaskSpec(
        name="other",
        kind="multilabel",
        load=lambda split: [],  # type: ignore[arg-type, return-value]
        primary="map",
        higher_is_better=True,
        num_classes=4,
    )
    rows = [
        {**_row("landcover", "a", 0.6, 0), "map": 0.6, "map_classes_absent": 2.0},
        {**_row("landcover", "b", 0.5, 0), "map": 0.5, "map_classes_absent": "2"},
        {**_row("other", "a", 0.7, 0), "map": 0.7, "map_classes_absent": 0.0},
        {**_row("other", "b", 0.4, 0), "map": 0.4, "map_classes_absent": 0.0},
        {**_row("seg", "b", 0.4, 0), "status": "skipped", "reason": "no"},
    ]
    suite = _suite((landcover, other))
    models = [ModelSpec(m, "baseline", m, f"model {m}") for m in ("a", "b")]
    report = write_report(tmp_path, rows, suite, models).read_text()
    landcover_part = report.split("**landcover**")[1].split("**other**")[0]
    assert "mAP leaves out 2 of 5 classes" in landcover_part
    assert "left out" not in report.split("**other**")[1].split("## Setup")[0]
    assert "| n = 1 |" in report and "**0.600** (n = 1)" in report
