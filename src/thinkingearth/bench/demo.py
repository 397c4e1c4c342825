"""The benchmark stage of ``make demo``: the pretrained encoder against the baselines.

The stage runs the ``synthetic-lite`` suite with one seed and a shorter schedule on the
pretrained encoder of an earlier demo stage, its architecture with random weights
(``random:PATH``) and the supervised baselines, and returns a report section with the aggregate score, the per-task table
and the plots (files under ``OUT/bench/``). With ``--quick`` it runs the test-only ``_micro``
suite on the pretrained (else the random-init) encoder and a U-Net.

Every run of the benchmark is also scored for its uncertainty on the clean test labels
(:mod:`thinkingearth.uncertainty.evaluation`); the section shows the reliability diagram and the
discard-test curve of one task (:data:`DEMO_UNCERTAINTY_TASK`) from the benchmark's report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["DEMO_BASELINES", "DEMO_UNCERTAINTY_TASK", "benchmark_stage", "find_pretrained"]

#: Baselines the demo compares against.
DEMO_BASELINES: tuple[str, ...] = ("wrn-eca", "unet", "siamese-diff")
#: The task whose reliability diagram and discard curve the demo shows.
DEMO_UNCERTAINTY_TASK = "landcover"
_ATTRIBUTES = ("pretrained_encoder", "encoder_path", "pretrained", "encoder")


def _is_ours(path: Path) -> bool:
    config = path.with_suffix(".json")
    try:
        return json.loads(config.read_text()).get("format") == "thinkingearth.encoder"
    except (OSError, ValueError, AttributeError):
        return False


def find_pretrained(ctx: Any) -> Path | None:
    """The encoder checkpoint an earlier stage left: a context attribute, else the newest
    ``*.safetensors`` with our ``.json`` beside it under the output folder."""
    for name in _ATTRIBUTES:
        value = getattr(ctx, name, None)
        if isinstance(value, str | Path) and Path(value).is_file():
            return Path(value)
    found = [p for p in Path(ctx.out).rglob("*.safetensors") if _is_ours(p)]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _uncertainty_part(out: Path, rows: list[dict[str, Any]], labels: dict[str, str]) -> str:
    """The demo's calibration paragraph: the figures of :data:`DEMO_UNCERTAINTY_TASK` written by
    the benchmark's report, and its ECE / discard numbers per model (empty if none)."""

    def number(value: Any) -> float:
        try:
            return float(value)
        except (TypeError, ValueError):
            return float("nan")

    stem = f"uncertainty_{DEMO_UNCERTAINTY_TASK}"
    figures = [
        f"![{what}](bench/{name})"
        for what, name in (
            ("reliability diagram", f"{stem}_reliability.png"),
            ("discard test", f"{stem}_discard.png"),
        )
        if (out / name).is_file()
    ]
    if not figures:
        return ""
    scored = [
        r
        for r in rows
        if r["task"] == DEMO_UNCERTAINTY_TASK and r.get("status") == "ok" and r.get("ece")
    ]
    numbers = "; ".join(
        f"{labels.get(r['model'], r['model'])}: ECE {number(r['ece']):.3f}, accuracy after "
        f"discarding the most uncertain 0–50 % {number(r['discard_auc']):.3f} against "
        f"{number(r['discard_auc_random']):.3f} discarding at random"
        for r in scored
    )
    return (
        f"\n\nUncertainty of the same runs on the {DEMO_UNCERTAINTY_TASK} test split (all "
        "deterministic heads; every run is scored this way, see `bench/report.md`, section "
        "Uncertainty): the reliability diagram (accuracy per confidence bin against the "
        "diagonal) and the discard test (pixel accuracy after discarding the most uncertain "
        f"pixels by predictive entropy, beside discarding at random). {numbers}.\n\n"
        + "\n\n".join(figures)
    )


def benchmark_stage(ctx: Any) -> str:
    """Run the demo benchmark under ``ctx.out / "bench"``; returns the report section."""
    from thinkingearth.bench.models import resolve_models
    from thinkingearth.bench.report import aggregate, aggregate_table, results_table
    from thinkingearth.bench.runner import run_bench
    from thinkingearth.bench.suites import get_suite

    quick = bool(getattr(ctx, "quick", False))
    suite = get_suite("_micro") if quick else get_suite("synthetic-lite", max_steps=60)
    pretrained = find_pretrained(ctx)
    baselines = DEMO_BASELINES[1:2] if quick else DEMO_BASELINES
    if pretrained is not None:
        # the pretrained encoder and its own architecture with random weights
        encoders = [str(pretrained)] + ([] if quick else [f"random:{pretrained}"])
    else:
        encoders = ["thinkingearth_vit_tiny"]
    models = [*encoders, *baselines]
    out = Path(ctx.out) / "bench"
    result = run_bench(suite, models, out, seeds=1, command=None, log=lambda m: None)
    specs = resolve_models(models)
    labels = {m.name: m.label for m in specs}
    uncertainty = _uncertainty_part(out, result.rows, labels)
    say = getattr(ctx, "log", None)
    if uncertainty and callable(say):
        stem = f"bench/uncertainty_{DEMO_UNCERTAINTY_TASK}"
        say(f"[demo] reliability diagram: {stem}_reliability.png; discard test: {stem}_discard.png")
    tasks = {t.name: t for t in suite.tasks}
    scores = aggregate(result.rows, tasks)
    if pretrained is None:
        who = (
            "the encoder with random weights (`thinkingearth_vit_tiny`; no pretraining stage "
            "left a checkpoint)"
        )
    else:
        who = f"the encoder pretrained by the demo (`{pretrained.parent.name}/{pretrained.name}`)"
        if not quick:
            who += (
                " against its own architecture with random weights "
                f"(`random-init {pretrained.parent.name}/{pretrained.stem}`)"
            )
    return (
        f"`thinkingearth bench` on {suite.description} (one seed, {suite.max_steps} steps of "
        f"batch {suite.batch_size} per run): {who} and supervised baselines "
        f"({', '.join(baselines)}) trained from scratch. Encoders are frozen (linear probe "
        "for classification, UPerNet for dense tasks); baselines train every weight. "
        f"{result.ran} runs in {result.seconds:.0f} s; full results in `bench/results.csv` and "
        "`bench/report.md`.\n\n"
        "Aggregate (per-task min-max normalised primary metric, interquartile mean over tasks, "
        "95 % bootstrap interval):\n\n"
        f"{aggregate_table(scores, labels)}\n\n"
        "![aggregate](bench/aggregate.png)\n\n![per task](bench/per_task.png)\n\n"
        f"{results_table(result.rows, suite, labels)}"
        f"{uncertainty}"
    )
