"""The benchmark report: per-task tables and plots, and one aggregate score per model.

Aggregate score (:func:`aggregate`), after the recommendations of Agarwal et al. (2021) for few
runs on many tasks:

1. per task and label fraction, the primary metric of every finished run is min-max normalised
   across all runs of all models: ``(x - min) / (max - min)``, or ``(max - x) / (max - min)``
   where lower is better (RMSE), so 1 is the best run and 0 the worst; when every run scores the
   same, each gets 0.5;
2. per model (and label fraction) the interquartile mean (IQM: the mean of the middle 50 %,
   ``scipy.stats.trim_mean(x, 0.25)``) of its normalised scores over tasks × seeds;
3. a 95 % interval from a seeded stratified bootstrap: seeds are resampled with replacement
   within each task, 2000 times, and the 2.5th and 97.5th percentiles of the IQM are reported.
   With one seed per task there is nothing to resample (every draw is the same run, the
   interval would read ``[x, x]``): the interval is NaN and the tables say ``n = 1``.

A model that cannot do some tasks is scored over the tasks it did (the ``tasks`` column says how
many, and the aggregate table names the tasks each model lacks when the sets differ: averages
over different task sets are not directly comparable). When a model ran several protocols on one
task, each protocol is its own entry (``model (protocol)``).

Per task, a cell from a single run shows its value with ``n = 1`` rather than ``± 0``: one seed
has no spread. Where a task reports ``map_classes_absent`` (classes with no positive test sample,
left out of the mAP; :mod:`thinkingearth.tasks.metrics`), its table says how many were left out.

Reference:
    Agarwal, Schwarzer, Castro, Courville, Bellemare. "Deep Reinforcement Learning at the Edge of
    the Statistical Precipice." NeurIPS 2021.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import trim_mean

from thinkingearth.bench.models import ModelSpec
from thinkingearth.bench.suites import Suite, TaskSpec
from thinkingearth.fileio import atomic_file

__all__ = [
    "AggregateScore",
    "aggregate",
    "entry_names",
    "interquartile_mean",
    "normalised_scores",
    "summarise",
    "write_report",
]

BOOTSTRAP_SAMPLES = 2000


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def interquartile_mean(values: Sequence[float]) -> float:
    """Mean of the middle 50 % of the values (``trim_mean(x, 0.25)``); NaN when empty."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    return float(trim_mean(x, 0.25)) if x.size else math.nan


def entry_names(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], str]:
    """Name of each (model, protocol) in the aggregate: the model, or ``model (protocol)`` where
    the model ran more than one protocol on some task and fraction."""
    protocols: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for r in rows:
        protocols[(r["model"], r["task"], str(r["fraction"]))].add(r["protocol"])
    several = {m for (m, _, _), ps in protocols.items() if len(ps) > 1}
    return {
        (r["model"], r["protocol"]): (
            f"{r['model']} ({r['protocol']})" if r["model"] in several else r["model"]
        )
        for r in rows
    }


def _ok(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rows if r.get("status") == "ok" and math.isfinite(_float(r.get("primary")))]


def normalised_scores(
    rows: Sequence[Mapping[str, Any]], tasks: Mapping[str, TaskSpec]
) -> list[dict[str, Any]]:
    """Per finished run: ``entry``, ``task``, ``fraction``, ``seed`` and ``score`` in [0, 1]."""
    ok = [r for r in _ok(rows) if r["task"] in tasks]
    names = entry_names(ok)
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in ok:
        groups[(r["task"], str(r["fraction"]))].append(r)
    out = []
    for (task, fraction), members in groups.items():
        values = np.array([_float(r["primary"]) for r in members])
        low, high = float(values.min()), float(values.max())
        higher = tasks[task].higher_is_better
        for r, v in zip(members, values, strict=True):
            if high > low:
                score = (v - low) / (high - low) if higher else (high - v) / (high - low)
            else:
                score = 0.5
            out.append(
                {
                    "entry": names[(r["model"], r["protocol"])],
                    "task": task,
                    "fraction": fraction,
                    "seed": str(r["seed"]),
                    "score": float(score),
                }
            )
    return out


@dataclass(frozen=True)
class AggregateScore:
    """Aggregate of one entry at one label fraction.

    Attributes:
        entry: Model name (``model (protocol)`` where a model ran several protocols).
        fraction: Label fraction.
        iqm: Interquartile mean of the normalised scores.
        low: 2.5th bootstrap percentile; NaN with one run per task (no interval).
        high: 97.5th bootstrap percentile; NaN with one run per task.
        runs: Finished runs aggregated.
        tasks: Number of tasks scored.
        task_names: The tasks scored, sorted.
    """

    entry: str
    fraction: str
    iqm: float
    low: float
    high: float
    runs: int
    tasks: int
    task_names: tuple[str, ...] = ()

    @property
    def single_run(self) -> bool:
        """One run per task: no bootstrap interval (``n = 1``)."""
        return self.runs == self.tasks


def aggregate(
    rows: Sequence[Mapping[str, Any]],
    tasks: Mapping[str, TaskSpec],
    seed: int = 0,
    samples: int = BOOTSTRAP_SAMPLES,
) -> list[AggregateScore]:
    """IQM of normalised scores with a stratified-bootstrap 95 % interval (module docstring).

    Returns:
        One score per (entry, fraction), best first within each fraction; ``low`` and ``high``
        are NaN where every task has one run (a bootstrap of single runs is degenerate).
    """
    scores = normalised_scores(rows, tasks)
    grouped: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for s in scores:
        grouped[(s["entry"], s["fraction"])][s["task"]].append(s["score"])
    rng = np.random.default_rng(seed)
    out = []
    for (entry, fraction), per_task in grouped.items():
        strata = [np.asarray(v) for v in per_task.values()]
        flat = np.concatenate(strata)
        iqm = interquartile_mean(flat.tolist())
        if flat.size == len(strata):
            low = high = math.nan
        else:
            resampled = [s[rng.integers(0, s.size, (samples, s.size))] for s in strata]
            boot = trim_mean(np.concatenate(resampled, axis=1), 0.25, axis=1)
            low, high = (float(p) for p in np.percentile(boot, [2.5, 97.5]))
        out.append(
            AggregateScore(
                entry,
                fraction,
                iqm,
                low,
                high,
                flat.size,
                len(strata),
                tuple(sorted(per_task)),
            )
        )
    out.sort(key=lambda a: (_float(a.fraction), -a.iqm))
    return out


def summarise(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds per (task, model, protocol, fraction).

    Returns:
        Dicts with ``task``, ``model``, ``protocol``, ``fraction``, ``seeds`` and, per metric
        (and the cost columns), ``<name>`` (mean) and ``<name>_std`` (NaN from fewer than two
        values: one seed has no spread).
    """
    groups: dict[tuple[str, str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in _ok(rows):
        groups[(r["task"], r["model"], r["protocol"], str(r["fraction"]))].append(r)
    costs = ("train_seconds", "inference_ips", "params", "trainable_params", "peak_mem_mb")
    out = []
    for (task, model, protocol, fraction), members in groups.items():
        item: dict[str, Any] = {
            "task": task,
            "model": model,
            "protocol": protocol,
            "fraction": fraction,
            "seeds": len(members),
            "normalisation": members[0].get("normalisation", ""),
        }
        for name in ("primary", *metrics, *costs):
            values = np.array([_float(r.get(name)) for r in members], dtype=np.float64)
            values = values[np.isfinite(values)]
            item[name] = float(values.mean()) if values.size else math.nan
            item[f"{name}_std"] = float(values.std(ddof=1)) if values.size > 1 else math.nan
        out.append(item)
    return out


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------


def _label(model: str, labels: Mapping[str, str]) -> str:
    return labels.get(model, model)


def _plot_tasks(
    path: Path,
    summary: Sequence[Mapping[str, Any]],
    suite: Suite,
    labels: Mapping[str, str],
) -> bool:
    tasks = [t for t in suite.tasks if any(s["task"] == t.name for s in summary)]
    if not tasks:
        return False
    cols = min(len(tasks), 3)
    rows_n = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.6 * cols, 3.6 * rows_n), squeeze=False)
    for ax in axes.flat[len(tasks) :]:
        ax.axis("off")
    for ax, task in zip(axes.flat, tasks, strict=False):
        items = [s for s in summary if s["task"] == task.name]
        fractions = sorted({s["fraction"] for s in items}, key=float)
        entries = list(dict.fromkeys((s["model"], s["protocol"]) for s in items))
        width = 0.8 / max(1, len(fractions))
        for j, fraction in enumerate(fractions):
            xs, ys, es = [], [], []
            for i, (model, protocol) in enumerate(entries):
                match = [
                    s
                    for s in items
                    if (s["model"], s["protocol"], s["fraction"]) == (model, protocol, fraction)
                ]
                if match:
                    xs.append(i + (j - (len(fractions) - 1) / 2) * width)
                    ys.append(match[0]["primary"])
                    std = match[0]["primary_std"]
                    es.append(std if math.isfinite(std) else 0.0)  # one seed: no bar
            label = f"{float(fraction):.0%} labels" if len(fractions) > 1 else None
            ax.bar(xs, ys, width * 0.9, yerr=es, capsize=3, label=label)
        ax.set_xticks(range(len(entries)))
        ax.set_xticklabels(
            [f"{_label(m, labels)}\n{p}" for m, p in entries], rotation=30, ha="right", fontsize=7
        )
        arrow = "↑" if task.higher_is_better else "↓"
        ax.set_title(f"{task.name} ({task.kind})", fontsize=10)
        ax.set_ylabel(f"{task.primary} {arrow}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        if len(fractions) > 1:
            ax.legend(fontsize=7)
    fig.suptitle("primary metric on the test split, mean ± std over seeds", fontsize=11)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return True


def _plot_aggregate(
    path: Path, scores: Sequence[AggregateScore], labels: Mapping[str, str]
) -> bool:
    if not scores:
        return False
    fractions = sorted({s.fraction for s in scores}, key=float)
    fig, axes = plt.subplots(
        1, len(fractions), figsize=(5.0 * len(fractions), 0.45 * len(scores) + 1.8), squeeze=False
    )
    for ax, fraction in zip(axes.flat, fractions, strict=True):
        items = [s for s in scores if s.fraction == fraction][::-1]
        ys = np.arange(len(items))
        iqm = np.array([s.iqm for s in items])
        err = np.nan_to_num(  # one run per task: no interval, no bar
            np.array([[s.iqm - s.low for s in items], [s.high - s.iqm for s in items]])
        )
        ax.barh(ys, iqm, xerr=err, capsize=3, color="#4c72b0")
        ax.set_yticks(ys)
        ax.set_yticklabels([_label(s.entry, labels) for s in items], fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_xlabel("IQM of min-max normalised primary metric (95 % CI)", fontsize=8)
        ax.set_title(f"aggregate, {float(fraction):.0%} labels", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------


def _fmt(value: float, digits: int = 3) -> str:
    if not math.isfinite(value):
        return "–"
    return f"{value:.{digits}f}"


def _count(value: float) -> str:
    if not math.isfinite(value):
        return "–"
    return f"{value / 1e6:.2f} M" if value >= 1e5 else f"{value / 1e3:.1f} k"


def _spread(mean: float, std: float, seeds: int, bold: bool = False) -> str:
    """``mean ± std``; a single run shows its value (with ``n = 1`` when ``bold``)."""
    value = f"**{_fmt(mean)}**" if bold else _fmt(mean)
    if seeds < 2:
        return f"{value} (n = 1)" if bold else value
    return f"{value} ± {_fmt(std)}"


def _classes_left_out(rows: Sequence[Mapping[str, Any]], task: TaskSpec) -> str | None:
    """The sentence saying how many classes the task's mAP left out, if it left any out."""
    values = {_float(r.get("map_classes_absent")) for r in rows}
    counts = sorted(int(v) for v in values if math.isfinite(v))
    if not counts or counts[-1] == 0:
        return None
    n = str(counts[0]) if counts[0] == counts[-1] else f"{counts[0]}–{counts[-1]}"
    return (
        f"mAP leaves out {n} of {task.num_classes} classes: they have no positive sample in the "
        "test split, so their average precision is undefined."
    )


def results_table(
    rows: Sequence[Mapping[str, Any]], suite: Suite, labels: Mapping[str, str] | None = None
) -> str:
    """Markdown tables of the results, one per task: mean ± std over seeds and the costs.

    A single run shows its value and ``n = 1``; a task whose mAP left classes out (no positive
    test sample) says how many below its table.
    """
    labels = labels or {}
    parts = []
    for task in suite.tasks:
        task_rows = [r for r in _ok(rows) if r["task"] == task.name]
        summary = summarise(task_rows, task.shown)
        if not summary:
            continue
        arrow = "↑" if task.higher_is_better else "↓"
        head = [
            "model",
            "protocol",
            "labels",
            f"**{task.primary}** {arrow}",
            *task.shown,
            "train s",
            "img/s",
            "params (trained)",
            "peak MB",
            "seeds",
        ]
        lines = [
            f"**{task.name}** ({task.kind}; {task.description})",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        summary.sort(
            key=lambda s: (
                float(s["fraction"]),
                -s["primary"] if task.higher_is_better else s["primary"],
            )
        )
        for s in summary:
            cells = [
                _label(s["model"], labels),
                s["protocol"],
                f"{float(s['fraction']):.0%}",
                _spread(s["primary"], s["primary_std"], s["seeds"], bold=True),
                *[_spread(s[m], s[m + "_std"], s["seeds"]) for m in task.shown],
                _fmt(s["train_seconds"], 1),
                _fmt(s["inference_ips"], 0),
                f"{_count(s['params'])} ({_count(s['trainable_params'])})",
                _fmt(s["peak_mem_mb"], 0),
                str(s["seeds"]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        left_out = _classes_left_out(task_rows, task)
        if left_out:
            lines += ["", left_out]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _missing_tasks(scores: Sequence[AggregateScore]) -> list[tuple[AggregateScore, list[str]]]:
    """Per score, the tasks other entries at its label fraction were scored on and it was not."""
    union: dict[str, set[str]] = defaultdict(set)
    for s in scores:
        union[s.fraction].update(s.task_names)
    out = []
    for s in scores:
        missing = sorted(union[s.fraction] - set(s.task_names))
        if missing:
            out.append((s, missing))
    return out


def aggregate_table(
    scores: Sequence[AggregateScore], labels: Mapping[str, str] | None = None
) -> str:
    """Markdown table of the aggregate scores, with notes on single runs and task sets.

    An entry with one run per task shows ``n = 1`` instead of an interval; where entries were
    scored on different task sets, a note names the tasks each one lacks.
    """
    labels = labels or {}
    lines = [
        "| model | labels | IQM | 95 % CI | runs | tasks |",
        "|---|---|---|---|---|---|",
    ]
    for s in scores:
        interval = "n = 1" if s.single_run else f"[{_fmt(s.low)}, {_fmt(s.high)}]"
        lines.append(
            f"| {_label(s.entry, labels)} | {float(s.fraction):.0%} | **{_fmt(s.iqm)}** | "
            f"{interval} | {s.runs} | {s.tasks} |"
        )
    if any(s.single_run for s in scores):
        lines += [
            "",
            "n = 1: one seed per task, so there is no interval (a bootstrap over single runs "
            "would only repeat the score); run more seeds (`--seeds`) for one.",
        ]
    missing = _missing_tasks(scores)
    if missing:
        several = len({s.fraction for s in scores}) > 1
        notes = [
            f"{_label(s.entry, labels)}"
            + (f" ({float(s.fraction):.0%} labels)" if several else "")
            + f": not scored on {', '.join(tasks)}"
            for s, tasks in missing
        ]
        lines += [
            "",
            "Models were scored on different task sets, so their aggregates average over "
            "different tasks and do not compare directly: " + "; ".join(notes) + ".",
        ]
    return "\n".join(lines)


def _architecture(name: str, suite: Suite) -> str:
    """The suite's size settings of a baseline, for the model table."""
    if name == "wrn-eca":
        return f" (WRN-{suite.wrn_depth}-{suite.wrn_width})"
    if name in ("unet", "siamese-diff", "siamese-concat"):
        return f" (widths {', '.join(str(w) for w in suite.unet_widths)})"
    if name == "vit-scratch":
        return f" ({suite.vit_depth} blocks, patch {suite.patch_size or 16})"
    return ""


_NORMALISATION = {
    "registry": "(x − mean) / std with the sensor registry's published statistics",
    "sar_db": "10·log10(sigma0), then (x − mean) / std with SSL4EO-S12 dB statistics",
    "dataset": "(x − mean) / std with statistics estimated on training samples",
}


def write_report(
    out: str | Path,
    rows: Sequence[Mapping[str, Any]],
    suite: Suite,
    models: Sequence[ModelSpec],
    *,
    command: str | None = None,
    seconds: float | None = None,
    machine: str | None = None,
) -> Path:
    """Write ``OUT/report.md`` with ``per_task.png`` and ``aggregate.png``; returns its path."""
    out = Path(out)
    tasks = {t.name: t for t in suite.tasks}
    labels = {m.name: m.label for m in models}
    ok = _ok(rows)
    summary = summarise(ok, sorted({m for t in suite.tasks for m in t.shown}))
    scores = aggregate(ok, tasks)
    has_tasks = _plot_tasks(out / "per_task.png", summary, suite, labels)
    has_aggregate = _plot_aggregate(out / "aggregate.png", scores, labels)
    protocols = sorted({r["protocol"] for r in ok})
    norms = sorted({r.get("normalisation", "") for r in ok} - {""})
    lines = [
        f"# Benchmark: {suite.name}",
        "",
        f"{suite.description}; {suite.max_steps} steps of batch {suite.batch_size} per run.",
        "",
    ]
    if command:
        lines += ["```bash", command, "```", ""]
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    facts = [f"written {when}"]
    if seconds is not None:
        facts.append(f"wall-clock {seconds:.0f} s ({seconds / 60:.1f} min)")
    if machine:
        facts.append(machine)
    lines += ["; ".join(facts) + ".", ""]
    statuses = defaultdict(int)
    for r in rows:
        statuses[r.get("status", "")] += 1
    lines += [
        "Runs: " + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) + ".",
        "",
        "## Aggregate score",
        "",
        "Per task, each run's primary metric is min-max normalised across all runs (1 = best, "
        "0 = worst; RMSE inverted); per model, the interquartile mean over tasks × seeds with a "
        "stratified bootstrap 95 % interval (Agarwal et al. 2021; none from one seed per task: "
        "n = 1). Models that cannot do a task are scored over the tasks they did.",
        "",
        aggregate_table(scores, labels) if scores else "No finished runs.",
        "",
    ]
    if has_aggregate:
        lines += ["![aggregate](aggregate.png)", ""]
    lines += ["## Per task", "", "Test split, mean ± std over seeds (n = 1: a single run).", ""]
    if has_tasks:
        lines += ["![per task](per_task.png)", ""]
    lines += [results_table(ok, suite, labels), ""]
    lines += ["## Setup", "", "| task | kind | data | primary metric |", "|---|---|---|---|"]
    for t in suite.tasks:
        arrow = "higher" if t.higher_is_better else "lower"
        lines.append(f"| {t.name} | {t.kind} | {t.description} | {t.primary} ({arrow} is better) |")
    lines += ["", "| model | what |", "|---|---|"]
    lines += [f"| {m.label} | {m.description}{_architecture(m.name, suite)} |" for m in models]
    lines += [
        "",
        f"Protocols run: {', '.join(protocols) or '–'} (encoders: the suite's per task kind; "
        "baselines are trained from scratch, `finetune`). Training: "
        f"{suite.max_steps} steps of AdamW, batch {suite.batch_size}, peak learning rate "
        + ", ".join(f"{p} {lr:g}" for p, lr in suite.lr.items())
        + ", linear warm-up over 5 % of the steps then cosine decay; no augmentation, no model "
        "selection (the last weights are tested). Encoders run at patch size "
        f"{suite.patch_size or 'their own'}; UPerNet width {suite.decoder_channels}.",
        "",
        "Normalisation: " + "; ".join(f"`{n}`: {_NORMALISATION.get(n, n)}" for n in norms) + ".",
        "",
        "Costs: train s = wall-clock seconds of training; img/s = test samples per second "
        "through the model in eval mode (frozen-feature caches off); params = all parameters "
        "(trained ones in brackets); peak MB = peak resident memory above the run's start "
        "(sampled every 10 ms; GPU: peak allocated).",
        "",
    ]
    skipped = [r for r in rows if r.get("status") == "skipped"]
    failed = [r for r in rows if r.get("status") == "failed"]
    if skipped:
        reasons = sorted(
            {(r["task"], r["model"], r["protocol"], r.get("reason", "")) for r in skipped}
        )
        lines += ["## Skipped", "", "| task | model | protocol | reason |", "|---|---|---|---|"]
        lines += [f"| {t} | {_label(m, labels)} | {p} | {why} |" for t, m, p, why in reasons]
        lines.append("")
    if failed:
        lines += [
            "## Failed",
            "",
            "| task | model | protocol | seed | error |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['task']} | {_label(r['model'], labels)} | {r['protocol']} | {r['seed']} | "
            f"{r.get('reason', '')} |"
            for r in failed
        ]
        lines.append("")
    path = out / "report.md"
    with atomic_file(path) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    return path
