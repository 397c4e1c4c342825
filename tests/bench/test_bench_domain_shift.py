"""Domain shift in the benchmark: run key, planning, oracle gaps, the report's domain section,
the --adapt flag, and the test-only ``_domain-micro`` suite end to end."""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from thinkingearth.bench import get_suite, list_suites, read_results, run_bench
from thinkingearth.bench.models import resolve_models
from thinkingearth.bench.report import domain_section, results_table, summarise
from thinkingearth.bench.runner import (
    FIXED_COLUMNS,
    RunKey,
    _row_key,
    _run_id,
    adapt_section,
    check_adapt,
    fill_oracle_gaps,
    plan_runs,
)
from thinkingearth.cli import main
from thinkingearth.errors import UserInputError

QUIET = {"log": lambda message: None}


def _world_ready() -> bool:
    """The synthetic world's shift options and Landsat (helper A's part) are installed."""
    from thinkingearth.data.readers import reader_options

    return "world" in reader_options("synthetic")


needs_world = pytest.mark.skipif(not _world_ready(), reason="synthetic world without `world`")


def test_run_key_reads_old_rows_as_source_only() -> None:
    old = {"task": "t", "model": "m", "protocol": "finetune", "fraction": "1", "seed": "0"}
    assert _row_key(old) == RunKey("t", "m", "finetune", "1", 0)
    assert _row_key(old).adapt == "none"
    assert _row_key({**old, "adapt": "dann"}).adapt == "dann"
    key = RunKey("t", "m", "finetune", "1", 0)
    assert _run_id(key) == "t__m__finetune__f1__s0"  # older runs keep their names
    assert _run_id(key._replace(adapt="dann")) == "t__m__finetune__f1__s0__adann"
    for column in ("adapt", "split_protocol", "source", "target", "worst_domain",
                   "source_primary", "oracle_gap"):  # fmt: skip
        assert column in FIXED_COLUMNS


def test_adapt_values_are_checked() -> None:
    assert check_adapt(["none", "dann", "none", "oracle", "generalise"]) == (
        "none",
        "dann",
        "oracle",
        "generalise",
    )
    with pytest.raises(UserInputError, match="unknown adaptation method 'lora'; expected one of"):
        check_adapt(["lora"])
    with pytest.raises(UserInputError, match="at least one adaptation method"):
        check_adapt([])
    suite = get_suite("domain-shift")
    assert adapt_section(suite, "none") is None and adapt_section(suite, "oracle") is None
    generalise = adapt_section(suite, "generalise")
    assert generalise is not None and generalise.method == "none" and generalise.augments
    assert generalise.band_dropout == suite.generalise["band_dropout"]
    dann = adapt_section(suite, "dann")
    assert dann is not None and dann.method == "dann" and not dann.augments
    bad = replace(suite, adapt_settings={**suite.adapt_settings, "threshold": 2.0})
    with pytest.raises(UserInputError, match=r"adapt\.threshold"):
        adapt_section(bad, "self_training")


def test_plan_runs_adapts_only_tasks_with_a_split() -> None:
    micro = get_suite("_micro")
    domain = get_suite("_domain-micro")
    mixed = replace(domain, tasks=(micro.tasks[0], *domain.tasks))
    specs = resolve_models("thinkingearth_vit_tiny")
    keys = plan_runs(mixed, specs, [0, 1], ["finetune"], adapt=["none", "dann", "oracle"])
    plain = [k for k in keys if k.task == micro.tasks[0].name]
    assert {k.adapt for k in plain} == {"none"} and len(plain) == 2
    for task in domain.tasks:
        mine = [k for k in keys if k.task == task.name]
        assert [(k.adapt, k.seed) for k in mine] == [
            (a, s) for a in ("none", "dann", "oracle") for s in (0, 1)
        ]
        assert {k.protocol for k in mine} == {"finetune"}
    # the suite's default
    assert {k.adapt for k in plan_runs(domain, specs, [0])} == set(domain.adapt)
    with pytest.raises(UserInputError, match="unknown adaptation method"):
        plan_runs(domain, specs, [0], adapt=["nope"])


def test_domain_shift_suite_is_listed_with_its_methods() -> None:
    assert "domain-shift" in list_suites() and "_domain-micro" not in list_suites()
    suite = get_suite("domain-shift")
    assert {t.split.protocol for t in suite.tasks if t.split} == {
        "leave-regions-out",
        "cross-sensor",
    }
    assert all(t.split is not None and t.domains is not None for t in suite.tasks)
    by = {t.name: t for t in suite.tasks}
    assert by["landcover-biomes"].split.source == ("temperate",)  # type: ignore[union-attr]
    assert by["landcover-biomes"].split.target == ("boreal", "arid")  # type: ignore[union-attr]
    assert by["flood-types"].split.target == ("urban",)  # type: ignore[union-attr]
    assert by["landcover-s2-to-landsat"].split.target == ("landsat-8-9",)  # type: ignore[union-attr]
    assert set(suite.adapt) >= {"none", "dann", "deep_coral", "self_training", "tent", "oracle"}


def _row(method: str, seed: int, primary: float, **extra: Any) -> dict[str, Any]:
    return {
        "suite": "s",
        "task": "shift",
        "model": "m",
        "protocol": "finetune",
        "fraction": "1",
        "seed": str(seed),
        "uncertainty": "none",
        "noise": "0",
        "adapt": method,
        "status": "ok",
        "primary": str(primary),  # as read back from results.csv
        **extra,
    }


def _shift_task(higher: bool = True) -> Any:
    from thinkingearth.bench.suites import TaskSpec
    from thinkingearth.data.domains import SplitSpec

    return TaskSpec(
        name="shift",
        kind="classification" if higher else "regression",
        load=lambda split: [],  # type: ignore[arg-type, return-value]
        primary="oa" if higher else "rmse",
        higher_is_better=higher,
        num_classes=3 if higher else 1,
        split=SplitSpec("leave-regions-out", source=("temperate",), target=("boreal", "arid")),
    )


def test_oracle_gap_sign_and_pairing_by_seed() -> None:
    rows = [
        _row("none", 0, 0.5),
        _row("none", 1, 0.6),
        _row("dann", 0, 0.7),
        _row("oracle", 0, 0.9),  # seed 1 has no oracle yet
    ]
    fill_oracle_gaps(rows, {"shift": _shift_task()})
    gaps = {(r["adapt"], r["seed"]): r.get("oracle_gap") for r in rows}
    assert gaps[("none", "0")] == pytest.approx(0.4)  # positive: below the oracle
    assert gaps[("dann", "0")] == pytest.approx(0.2)
    assert gaps[("oracle", "0")] == pytest.approx(0.0)
    assert gaps[("none", "1")] is None
    # lower is better: run − oracle
    rows = [_row("none", 0, 3.0), _row("oracle", 0, 1.0)]
    fill_oracle_gaps(rows, {"shift": _shift_task(higher=False)})
    assert rows[0]["oracle_gap"] == pytest.approx(2.0)
    # tasks without a split get no gap
    other = [{**_row("none", 0, 0.5), "task": "plain"}]
    fill_oracle_gaps(other, {"plain": replace(_shift_task(), name="plain", split=None)})
    assert "oracle_gap" not in other[0]


def test_domain_section_table_and_verdicts() -> None:
    task = _shift_task()
    rows = []
    for seed, (none, dann, oracle) in enumerate([(0.5, 0.6, 0.9), (0.55, 0.65, 0.92)]):
        for method, value in (("none", none), ("dann", dann), ("oracle", oracle)):
            rows.append(
                _row(
                    method,
                    seed,
                    value,
                    **{
                        "oa@boreal": value - 0.1,
                        "oa@arid": value + 0.1,
                        "oa@temperate": 0.95,
                        "worst_domain": value - 0.1,
                        "source_primary": 0.95,
                        "split_protocol": "leave-regions-out",
                        "source": "temperate",
                        "target": "boreal,arid",
                    },
                )
            )
    rows.append({**_row("tent", 0, 0.0), "status": "failed"})  # failed runs are left out
    fill_oracle_gaps(rows, {"shift": task})
    suite = replace(get_suite("_domain-micro"), tasks=(task,))
    text = domain_section(rows, suite)
    assert text.startswith("## Domain shift")
    assert "Model selection: none, and no target labels" in text
    assert "leave-regions-out: source temperate → target boreal, arid" in text
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| method"))
    assert "oa@boreal (target)" in header and header.index("oa@boreal") < header.index("oa@arid")
    assert "oa@temperate" not in header  # one source domain: the `source` column says it
    table = [line for line in lines if line.startswith("| ") and "---" not in line][1:]
    assert [line.split(" | ")[0] for line in table] == [
        "| source only",
        "| dann",
        "| oracle (target labels)",
    ]
    source_only = table[0].split(" | ")
    assert source_only[1] == "**0.525** ± 0.035"  # target mean ± std over 2 seeds
    assert source_only[-2] == "0.385 ± 0.021"  # gap to oracle: 0.9-0.5, 0.92-0.55
    assert source_only[-1].rstrip(" |") == "2"
    assert "tent" not in text
    assert "dann helps on the target: oa +0.100 against source only (better in 2 of 2" in text
    assert "source only is +0.385 oa from the oracle" in text
    # the per-task results table names the adaptation as a column
    assert "| adaptation |" in results_table(rows, suite)
    summary = summarise(rows, [])
    assert {s["adapt"] for s in summary} == {"none", "dann", "oracle"}
    assert domain_section([r for r in rows if r["task"] != "shift"], suite) == ""


def test_cli_adapt_flag_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["--adapt", "lora"], "unknown adaptation method 'lora'"),
        (["--adapt", ","], "expected a comma-separated list"),
    ):
        code = main(["bench", "--suite", "_domain-micro", *argv, "--out", str(tmp_path / "x")])
        assert code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("thinkingearth: error:") and message in err
        assert len(err.splitlines()) == 1


def _hand_made_split(log: Any) -> Any:
    """Domain splits built by hand from the plain synthetic world: two worlds of other seeds
    stand for the target domains ``north`` and ``south`` (no world shift options needed)."""
    from thinkingearth.data.domains import DomainSplits, Unlabelled, WithDomain
    from thinkingearth.data.synthetic import SyntheticCopernicus

    def world(domain: str, split: str, n: int) -> Any:
        seed = {"home": 0, "north": 11, "south": 23}[domain]
        data = SyntheticCopernicus("multilabel", split=split, n=n, size=32, seed=seed)
        return WithDomain(data, domain)

    return DomainSplits(
        train=world("home", "train", 6),
        val=world("home", "val", 2),
        val_source="split val",
        test={
            "north": world("north", "test", 3),
            "south": world("south", "test", 5),
            "home": world("home", "test", 4),
        },
        unlabelled=Unlabelled(
            torch.utils.data.ConcatDataset([world("north", "train", 4), world("south", "train", 4)])
        ),
        source_domains=("home",),
        target_domains=("north", "south"),
        protocol="leave-regions-out",
        target_train=torch.utils.data.ConcatDataset(
            [world("north", "train", 4), world("south", "train", 4)]
        ),
    )


@pytest.fixture(scope="module")
def hand_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    """Every kind of adaptation run on a multi-label task with a hand-made split."""
    from thinkingearth.bench.suites import TaskSpec
    from thinkingearth.data.domains import SplitSpec
    from thinkingearth.data.synthetic import LANDCOVER_CLASSES

    task = TaskSpec(
        name="shifted",
        kind="multilabel",
        load=lambda split: [],  # type: ignore[arg-type, return-value]
        primary="map",
        higher_is_better=True,
        num_classes=len(LANDCOVER_CLASSES),
        shown=("f1_macro",),
        split=SplitSpec("leave-regions-out", source=("home",), target=("north", "south")),
        domains=_hand_made_split,
    )
    suite = replace(
        get_suite("_domain-micro"), tasks=(task,), protocols={"multilabel": ("finetune",)}
    )
    out = tmp_path_factory.mktemp("bench") / "hand"
    result = run_bench(
        suite, None, out, seeds=1, adapt="none,dann,tent,oracle,generalise",
        command="thinkingearth bench (hand-made split)", **QUIET,
    )  # fmt: skip
    return out, result, suite


@pytest.mark.slow
def test_every_adaptation_run_is_tested_per_domain(hand_run: tuple[Path, Any, Any]) -> None:
    out, result, _ = hand_run
    assert not result.failed, [r["reason"] for r in result.failed]
    rows = read_results(out / "results.csv")
    header = next(csv.reader((out / "results.csv").open()))
    assert tuple(header[: len(FIXED_COLUMNS)]) == FIXED_COLUMNS
    by = {r["adapt"]: r for r in rows}
    assert set(by) == {"none", "dann", "tent", "oracle", "generalise"}
    for method, row in by.items():
        assert row["status"] == "ok", (method, row["reason"])
        assert (row["split_protocol"], row["source"], row["target"]) == (
            "leave-regions-out",
            "home",
            "north,south",
        )
        per = {d: float(row[f"map@{d}"]) for d in ("north", "south", "home")}
        assert all(math.isfinite(v) for v in per.values()), method
        assert float(row["worst_domain"]) == pytest.approx(min(per["north"], per["south"]))
        assert row["worst_domain_name"] == min(("north", "south"), key=per.__getitem__)
        assert float(row["source_primary"]) == pytest.approx(per["home"])
        assert row["test_samples"] == "8"  # the target domains' test samples, pooled (3 + 5)
        assert row["steps"] == "2"
    assert by["oracle"]["train_samples"] == "8" and by["none"]["train_samples"] == "6"
    # the oracle's gap is 0; every other run's gap is the oracle's primary minus its own
    assert float(by["oracle"]["oracle_gap"]) == 0.0
    for method in ("none", "dann", "tent", "generalise"):
        gap = float(by["oracle"]["primary"]) - float(by[method]["primary"])
        assert float(by[method]["oracle_gap"]) == pytest.approx(gap, abs=1e-5)
    # TENT adapts the source-only model of the same seed after training: same training, so
    # only the normalisation parameters can differ
    assert by["tent"]["train_samples"] == by["none"]["train_samples"]
    report = (out / "report.md").read_text()
    assert "## Domain shift" in report and "### shifted" in report
    assert "| source only |" in report and "| oracle (target labels) |" in report
    assert "dann" in report and "against source only" in report


@pytest.mark.slow
def test_rerun_keeps_rows_and_fills_oracle_gaps(hand_run: tuple[Path, Any, Any]) -> None:
    from thinkingearth.bench.runner import write_results

    out, _, suite = hand_run
    rows = read_results(out / "results.csv")
    for row in rows:  # as if written before the oracle run existed
        row["oracle_gap"] = ""
    write_results(out / "results.csv", rows)
    again = run_bench(
        suite, None, out, seeds=1, adapt="none,dann,tent,oracle,generalise", report=False,
        **QUIET,
    )  # fmt: skip
    assert again.ran == 0 and again.reused == 5
    rows = read_results(out / "results.csv")
    assert all(r["oracle_gap"] not in ("", "nan") for r in rows)


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    if not _world_ready():
        pytest.skip("synthetic world without `world`")
    out = tmp_path_factory.mktemp("bench") / "domain"
    result = run_bench(
        "_domain-micro",
        None,
        out,
        seeds=1,
        adapt="none,deep_coral,oracle",
        command="thinkingearth bench --suite _domain-micro",
        **QUIET,
    )
    return out, result


@needs_world
@pytest.mark.slow
def test_domain_micro_end_to_end(micro_run: tuple[Path, Any]) -> None:
    out, result = micro_run
    assert not result.failed, [r["reason"] for r in result.failed]
    rows = read_results(out / "results.csv")
    header = next(csv.reader((out / "results.csv").open()))
    assert tuple(header[: len(FIXED_COLUMNS)]) == FIXED_COLUMNS
    assert len(rows) == 3 * 3  # 3 tasks x 3 methods x 1 seed
    by = {(r["task"], r["adapt"]): r for r in rows}
    biomes = by[("landcover-biomes", "none")]
    assert biomes["status"] == "ok"
    assert (biomes["split_protocol"], biomes["source"], biomes["target"]) == (
        "leave-regions-out",
        "temperate",
        "boreal,arid",
    )
    for domain in ("boreal", "arid", "temperate"):
        assert math.isfinite(float(biomes[f"oa@{domain}"]))
    worst = min(float(biomes["oa@boreal"]), float(biomes["oa@arid"]))
    assert float(biomes["worst_domain"]) == pytest.approx(worst)
    assert biomes["worst_domain_name"] in ("boreal", "arid")
    assert float(biomes["source_primary"]) == pytest.approx(float(biomes["oa@temperate"]))
    # the row's metrics are the pooled target test (4 samples per target domain)
    assert biomes["test_samples"] == "8"
    oracle = by[("landcover-biomes", "oracle")]
    assert float(oracle["oracle_gap"]) == 0.0
    gap = float(oracle["primary"]) - float(biomes["primary"])
    assert float(biomes["oracle_gap"]) == pytest.approx(gap, abs=1e-5)
    flood = by[("flood-types", "deep_coral")]
    assert flood["status"] == "ok" and "miou@urban" in flood and "miou@rural" in flood
    sensor = by[("landcover-s2-to-landsat", "none")]
    assert sensor["status"] == "ok"
    assert "oa@landsat-8-9" in sensor and "oa@sentinel-2-l2a" in sensor
    assert sensor["normalisation"] == "registry/dataset"  # Landsat: stats from the unlabelled
    report = (out / "report.md").read_text()
    assert "## Domain shift" in report and "### landcover-s2-to-landsat" in report
    assert "target statistics" in report or "unlabelled target images" in report


@needs_world
@pytest.mark.slow
def test_domain_micro_resumes(micro_run: tuple[Path, Any]) -> None:
    out, _ = micro_run
    again = run_bench(
        "_domain-micro", None, out, seeds=1, adapt="none,deep_coral,oracle",
        report=False, **QUIET,
    )  # fmt: skip
    assert again.ran == 0 and again.reused == 9


@needs_world
def test_fixed_band_baseline_is_skipped_on_cross_sensor(tmp_path: Path) -> None:
    suite = get_suite("_domain-micro")
    sensor_task = next(t for t in suite.tasks if t.split and t.split.protocol == "cross-sensor")
    result = run_bench(
        replace(suite, tasks=(sensor_task,)), "wrn-eca", tmp_path, seeds=1, adapt="none",
        report=False, **QUIET,
    )  # fmt: skip
    (row,) = result.rows
    assert row["status"] == "skipped"
    assert "fixed band set" in row["reason"] and "landsat-8-9" in row["reason"]
    assert "B04" in row["reason"]


@needs_world
@pytest.mark.slow
def test_cli_bench_with_adapt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    code = main(["bench", "--suite", "_domain-micro", "--adapt", "none", "--seeds", "1",
                 "--max-steps", "1", "--out", str(out)])  # fmt: skip
    assert code == 0
    assert "3 run(s) done" in capsys.readouterr().out
    rows = read_results(out / "results.csv")
    assert {r["adapt"] for r in rows} == {"none"} and {r["status"] for r in rows} == {"ok"}
    assert {r["split_protocol"] for r in rows} == {"leave-regions-out", "cross-sensor"}
    report = (out / "report.md").read_text()
    assert "bench --suite _domain-micro --seeds 1 --adapt none --max-steps 1" in report
