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

Runs with an uncertainty head method or label noise (columns ``uncertainty`` and ``noise``) are
entries of their own (``model [heteroscedastic, noise 0.4]``), normalised among the runs of the
same task, label fraction and noise rate.

Per task, a cell from a single run shows its value with ``n = 1`` rather than ``± 0``: one seed
has no spread. Where a task reports ``map_classes_absent`` (classes with no positive test sample,
left out of the mAP; :mod:`thinkingearth.tasks.metrics`), its table says how many were left out.

Tasks with a split protocol (``TaskSpec.split``) get a section ``## Domain shift``
(:func:`domain_section`): per task a table of adaptation method × target primary metric (mean ±
std over seeds), worst target domain, each domain, source, gap to the oracle and runs, and one
sentence per method against source-only training on the same seeds. Its runs with an
adaptation method are entries of their own elsewhere too (``model [dann]``).

Whenever rows carry the uncertainty evaluation (:mod:`thinkingearth.uncertainty.evaluation`),
the report gains a section ``## Uncertainty`` (:func:`uncertainty_section`): per task a table of
head × noise rate with the clean-label primary metric, NLL, ECE (bins stated), Brier, the discard
test's area against random discarding and the rank correlation of uncertainty with error (mean ±
std over seeds), a reliability diagram and a discard-curve figure at the highest noise rate
(pooled over seeds from the per-run curves in ``OUT/curves/``), and one sentence per head
comparing it with the deterministic head at each noise rate, in numbers.

Reference:
    Agarwal, Schwarzer, Castro, Courville, Bellemare. "Deep Reinforcement Learning at the Edge of
    the Statistical Precipice." NeurIPS 2021.
"""

from __future__ import annotations

import json
import math
import re
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
    "adapt_of",
    "aggregate",
    "domain_section",
    "entry_names",
    "interquartile_mean",
    "normalised_scores",
    "summarise",
    "uncertainty_section",
    "variant_of",
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


def _rate(value: Any) -> str:
    number = _float(value)
    return f"{number:g}" if math.isfinite(number) else "0"


def variant_of(row: Mapping[str, Any]) -> tuple[str, str]:
    """``(uncertainty method, noise rate)`` of a row; rows without the columns: ``("none",
    "0")`` (results written before they existed)."""
    return (str(row.get("uncertainty") or "none"), _rate(row.get("noise")))


def adapt_of(row: Mapping[str, Any]) -> str:
    """The domain adaptation of a row (``none``: source only, and every row written before the
    ``adapt`` column existed)."""
    return str(row.get("adapt") or "none")


def _variant_suffix(uncertainty: str, noise: str, adapt: str = "none") -> str:
    parts = (
        ([] if uncertainty == "none" else [uncertainty])
        + ([] if noise == "0" else [f"noise {noise}"])
        + ([] if adapt == "none" else [adapt])
    )
    return f" [{', '.join(parts)}]" if parts else ""


def _ok(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rows if r.get("status") == "ok" and math.isfinite(_float(r.get("primary")))]


def normalised_scores(
    rows: Sequence[Mapping[str, Any]], tasks: Mapping[str, TaskSpec]
) -> list[dict[str, Any]]:
    """Per finished run: ``entry``, ``task``, ``fraction``, ``seed`` and ``score`` in [0, 1]."""
    ok = [r for r in _ok(rows) if r["task"] in tasks]
    names = entry_names(ok)
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in ok:  # runs at one noise rate compete with each other only
        groups[(r["task"], str(r["fraction"]), variant_of(r)[1])].append(r)
    out = []
    for (task, fraction, _), members in groups.items():
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
                    "entry": names[(r["model"], r["protocol"])]
                    + _variant_suffix(*variant_of(r), adapt_of(r)),
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
    """Mean and standard deviation over seeds per (task, model, protocol, fraction, uncertainty,
    noise, adaptation).

    Returns:
        Dicts with ``task``, ``model``, ``protocol``, ``fraction``, ``uncertainty``, ``noise``,
        ``adapt``, ``seeds`` and, per metric (and the cost columns), ``<name>`` (mean) and ``<name>_std``
        (NaN from fewer than two values: one seed has no spread).
    """
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = defaultdict(list)
    for r in _ok(rows):
        key = (r["task"], r["model"], r["protocol"], str(r["fraction"]), *variant_of(r))
        groups[(*key, adapt_of(r))].append(r)
    costs = ("train_seconds", "inference_ips", "params", "trainable_params", "peak_mem_mb")
    out = []
    for (task, model, protocol, fraction, uncertainty, noise, adapt), members in groups.items():
        item: dict[str, Any] = {
            "task": task,
            "model": model,
            "protocol": protocol,
            "fraction": fraction,
            "uncertainty": uncertainty,
            "noise": noise,
            "adapt": adapt,
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
    widest = max(
        len({(s["model"], s["protocol"], s["uncertainty"], s["noise"], s["adapt"]) for s in
             summary if s["task"] == t.name})
        for t in tasks
    )  # fmt: skip
    panel = max(4.6, 0.6 * widest)
    fig, axes = plt.subplots(rows_n, cols, figsize=(panel * cols, 3.6 * rows_n), squeeze=False)
    for ax in axes.flat[len(tasks) :]:
        ax.axis("off")
    for ax, task in zip(axes.flat, tasks, strict=False):
        items = [s for s in summary if s["task"] == task.name]
        fractions = sorted({s["fraction"] for s in items}, key=float)
        entries = list(
            dict.fromkeys(
                (s["model"], s["protocol"], s["uncertainty"], s["noise"], s["adapt"]) for s in items
            )
        )
        width = 0.8 / max(1, len(fractions))
        for j, fraction in enumerate(fractions):
            xs, ys, es = [], [], []
            for i, entry in enumerate(entries):
                match = [
                    s
                    for s in items
                    if (s["model"], s["protocol"], s["uncertainty"], s["noise"], s["adapt"])
                    == entry
                    and s["fraction"] == fraction
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
            [f"{_label(m, labels)}\n{p}{_variant_suffix(u, n, a)}" for m, p, u, n, a in entries],
            rotation=30,
            ha="right",
            fontsize=7,
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
    if abs(value) >= 1e5:  # e.g. an NLL on a variance floor: digits, not a wall of figures
        return f"{value:.{digits + 1}g}"
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
        variants = any((s["uncertainty"], s["noise"]) != ("none", "0") for s in summary)
        shifts = task.split is not None or any(s["adapt"] != "none" for s in summary)
        head = [
            "model",
            "protocol",
            "labels",
            *(["head", "noise"] if variants else []),
            *(["adaptation"] if shifts else []),
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
                float(s["noise"]),
                -s["primary"] if task.higher_is_better else s["primary"],
            )
        )
        for s in summary:
            cells = [
                _label(s["model"], labels),
                s["protocol"],
                f"{float(s['fraction']):.0%}",
                *([s["uncertainty"], s["noise"]] if variants else []),
                *([_method_name(s["adapt"])] if shifts else []),
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


# ----------------------------------------------------------------------------------------------
# Uncertainty
# ----------------------------------------------------------------------------------------------

#: Uncertainty columns per task kind: (key, header, digits).
_UNC_COLUMNS: Mapping[str, tuple[tuple[str, str, int], ...]] = {
    "classes": (
        ("nll", "NLL ↓", 3),
        ("ece", "ECE ↓", 3),
        ("brier", "Brier ↓", 3),
        ("discard_auc", "discard AUC ↑", 3),
        ("discard_auc_random", "random discard AUC", 3),
        ("unc_err_spearman", "Spearman(unc, err) ↑", 3),
    ),
    "regression": (
        ("nll", "Gaussian NLL ↓", 3),
        ("coverage90", "90 % coverage", 3),
        ("discard_auc", "discard AUC (RMSE) ↓", 3),
        ("discard_auc_random", "random discard AUC", 3),
        ("unc_err_spearman", "Spearman(std, abs err) ↑", 3),
    ),
}
_UNC_FAILED = "uncertainty evaluation failed"
_HEAD_NAMES = {"none": "deterministic"}


def _head_name(method: str) -> str:
    return _HEAD_NAMES.get(method, method)


def _has_uncertainty(row: Mapping[str, Any]) -> bool:
    return math.isfinite(_float(row.get("nll"))) or math.isfinite(_float(row.get("discard_auc")))


def _read_curves(out: Path, row: Mapping[str, Any]) -> dict[str, Any] | None:
    name = str(row.get("curves") or "")
    if not name:
        return None
    try:
        return json.loads((out / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _pooled_reliability(records: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Reliability bins pooled over runs: counts summed, accuracy and confidence weighted by
    count, the ECE of the pooled bins."""
    parts = [r["reliability"] for r in records if r.get("reliability")]
    if not parts:
        return None
    edges = np.asarray(parts[0]["edges"], dtype=np.float64)
    parts = [p for p in parts if len(p["counts"]) == edges.size - 1]
    counts = np.sum([np.asarray(p["counts"], dtype=np.float64) for p in parts], axis=0)

    def weighted(key: str) -> np.ndarray:
        total = np.zeros_like(counts)
        for p in parts:
            n = np.asarray(p["counts"], dtype=np.float64)
            total += np.nan_to_num(np.asarray(p[key], dtype=np.float64)) * n
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, total / np.maximum(counts, 1), np.nan)

    accuracy, confidence = weighted("accuracy"), weighted("confidence")
    n = counts.sum()
    gaps = np.nan_to_num(np.abs(accuracy - confidence))
    ece = float((counts * gaps).sum() / n) if n else math.nan
    return {
        "edges": edges,
        "accuracy": accuracy,
        "confidence": confidence,
        "counts": counts,
        "ece": ece,
        "runs": len(parts),
    }


def _pooled_discard(records: Sequence[Mapping[str, Any]]) -> Any:
    """The discard curves of runs averaged point by point (a DiscardCurve), or ``None``."""
    from thinkingearth.uncertainty.calibration import DiscardCurve

    parts = [r["discard"] for r in records if r.get("discard")]
    if not parts:
        return None
    fractions = np.asarray(parts[0]["fractions"], dtype=np.float64)
    parts = [p for p in parts if len(p["values"]) == fractions.size]
    return DiscardCurve(
        fractions=fractions,
        values=np.mean([np.asarray(p["values"], dtype=np.float64) for p in parts], axis=0),
        random_values=np.mean(
            [np.asarray(p["random_values"], dtype=np.float64) for p in parts], axis=0
        ),
        auc=float(np.mean([_float(p["auc"]) for p in parts])),
        random_auc=float(np.mean([_float(p["random_auc"]) for p in parts])),
        metric=str(parts[0]["metric"]),
        higher_is_better=bool(parts[0]["higher_is_better"]),
    )


def _plot_reliability(path: Path, panels: Mapping[str, Mapping[str, Any]], title: str) -> None:
    """Reliability diagrams side by side, one per entry (accuracy per confidence bin against
    the diagonal, the count per bin beneath)."""
    n = len(panels)
    fig, axes = plt.subplots(
        2,
        n,
        figsize=(3.4 * n, 4.4),
        squeeze=False,
        sharex=True,
        gridspec_kw={"height_ratios": [3, 1]},
    )
    for col, (label, rel) in enumerate(panels.items()):
        ax, below = axes[0, col], axes[1, col]
        edges = np.asarray(rel["edges"])
        lefts, widths = edges[:-1], np.diff(edges)
        filled = np.asarray(rel["counts"]) > 0
        ax.plot([0, 1], [0, 1], "--", color="0.4", linewidth=1)
        ax.bar(
            lefts[filled],
            np.asarray(rel["accuracy"])[filled],
            widths[filled],
            align="edge",
            color="#4c72b0",
            edgecolor="white",
            label="accuracy",
        )
        ax.plot(
            (lefts + widths / 2)[filled],
            np.asarray(rel["confidence"])[filled],
            "o",
            color="#dd8452",
            markersize=3,
            label="mean confidence",
        )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{label}\nECE {rel['ece']:.3f} ({rel['runs']} run(s) pooled)", fontsize=8)
        ax.grid(alpha=0.3)
        if col == 0:
            ax.set_ylabel("accuracy")
            ax.legend(fontsize=7, loc="upper left")
        below.bar(lefts, np.asarray(rel["counts"]), widths, align="edge", color="0.6")
        below.set_xlabel("confidence", fontsize=8)
        if col == 0:
            below.set_ylabel("predictions", fontsize=8)
    bins = len(next(iter(panels.values()))["counts"])
    fig.suptitle(f"{title}; {bins} equal-width bins", fontsize=9)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def _file_name(task: str) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", task)


def _mean_std(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[float, float, int]:
    values = np.array([_float(r.get(key)) for r in rows], dtype=np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return math.nan, math.nan, 0
    std = float(values.std(ddof=1)) if values.size > 1 else math.nan
    return float(values.mean()), std, int(values.size)


def _comparison(
    task: TaskSpec,
    groups: Mapping[tuple[str, ...], Sequence[Mapping[str, Any]]],
    entry: tuple[str, str, str],
    method: str,
) -> str | None:
    """One sentence: ``method`` against the deterministic head at each noise rate, in numbers."""
    rates = sorted({k[4] for k in groups if k[:3] == entry}, key=float)
    parts, nll_wins, nll_compared, primary_wins, compared = [], 0, 0, 0, 0
    ece = task.kind != "regression"
    for rate in rates:
        ours, base = groups.get((*entry, method, rate)), groups.get((*entry, "none", rate))
        if not ours or not base:
            continue
        nll = (_mean_std(ours, "nll")[0], _mean_std(base, "nll")[0])
        prim = (_mean_std(ours, "primary")[0], _mean_std(base, "primary")[0])
        text = f"at rate {rate}: NLL {_fmt(nll[0])} vs {_fmt(nll[1])}"
        if ece:
            e = (_mean_std(ours, "ece")[0], _mean_std(base, "ece")[0])
            text += f", ECE {_fmt(e[0])} vs {_fmt(e[1])}"
        text += f", {task.primary} {_fmt(prim[0])} vs {_fmt(prim[1])}"
        parts.append(text)
        compared += 1
        if math.isfinite(nll[0]) and math.isfinite(nll[1]):
            nll_compared += 1
            nll_wins += int(nll[0] < nll[1])
        better = prim[0] > prim[1] if task.higher_is_better else prim[0] < prim[1]
        primary_wins += int(better)
    if not parts:
        return None
    nll_text = (
        f"Lower NLL at {nll_wins} of {nll_compared} rate(s)"
        if nll_compared
        else "NLL not comparable (the deterministic model predicts no variance)"
    )
    return (
        f"{method} vs deterministic (mean over seeds; {method} first): "
        + "; ".join(parts)
        + f". {nll_text}; better {task.primary} on the clean test labels at {primary_wins} of "
        f"{compared}."
    )


def uncertainty_section(
    out: str | Path,
    rows: Sequence[Mapping[str, Any]],
    suite: Suite,
    labels: Mapping[str, str] | None = None,
) -> str:
    """The ``## Uncertainty`` section of the report, and its figures under ``out``.

    Per task with uncertainty metrics: a table of model × head × noise rate (mean ± std over
    seeds), a reliability diagram (``uncertainty_<task>_reliability.png``, not for regression)
    and discard curves (``uncertainty_<task>_discard.png``) of every head at the highest noise
    rate, pooled over seeds from the curves stored with each run, and per head one sentence
    comparing it with the deterministic head at each rate. Runs whose uncertainty evaluation
    failed are listed. Returns ``""`` when no row has uncertainty metrics or such a failure.
    """
    from thinkingearth.uncertainty.plots import discard_png

    out = Path(out)
    labels = labels or {}
    ok = _ok(rows)
    # runs with domain adaptation are compared in the domain-shift section; here the heads
    plain = [r for r in ok if adapt_of(r) == "none"]
    scored = [r for r in plain if _has_uncertainty(r)]
    failed = [r for r in ok if str(r.get("reason") or "").startswith(_UNC_FAILED)]
    if not scored and not failed:
        return ""
    bins = sorted({int(_float(r.get("ece_bins"))) for r in scored if
                   math.isfinite(_float(r.get("ece_bins")))})  # fmt: skip
    bins_text = "/".join(str(b) for b in bins) if bins else "–"
    lines = [
        "## Uncertainty",
        "",
        "Every trained run scored again on the clean test labels "
        "(`thinkingearth.uncertainty.evaluation`): NLL (nats; regression: Gaussian NLL of the "
        f"predicted mean and variance), ECE over {bins_text} equal-width confidence bins, Brier "
        "score (sum over classes), the discard test (the metric after discarding the most "
        "uncertain 0–50 % of predictions by total entropy or predicted std, averaged over the "
        "fractions: `discard AUC`; beside it the same discarding at random) and the Spearman "
        "correlation of the uncertainty with the error. Multi-label: every (image, label) is a "
        "binary event for ECE. Mean ± std over seeds; label noise is applied to the training "
        "split only (`noise`: its rate; `measured`: the share of training labels it changed)."
        + (
            " Runs without domain adaptation only (`adapt` none; the others are in the domain-"
            "shift section)."
            if len(plain) < len(ok)
            else ""
        ),
        "",
    ]
    for task in suite.tasks:
        task_rows = [r for r in scored if r["task"] == task.name]
        if not task_rows:
            continue
        groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = defaultdict(list)
        for r in task_rows:
            groups[(r["model"], r["protocol"], str(r["fraction"]), *variant_of(r))].append(r)
        entries = list(dict.fromkeys(k[:3] for k in groups))
        several = len(entries) > 1
        columns = _UNC_COLUMNS["regression" if task.kind == "regression" else "classes"]
        arrow = "↑" if task.higher_is_better else "↓"
        head = [
            *(["model"] if several else []),
            "head",
            "noise",
            "measured",
            f"**{task.primary}** {arrow}",
            *[h.replace("ECE", f"ECE ({bins_text} bins)") for _, h, _ in columns],
            "seeds",
        ]
        lines += [
            f"### {task.name}",
            "",
            f"{task.kind}; {task.description}" if task.description else task.kind,
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        order = sorted(
            groups,
            key=lambda k: (entries.index(k[:3]), float(k[4]), k[3] != "none", k[3]),
        )
        for key in order:
            members = groups[key]
            model, protocol, fraction, method, rate = key
            mean, std, _ = _mean_std(members, "primary")
            measured = _mean_std(members, "noise_measured")[0]
            cells = [
                *(
                    [f"{_label(model, labels)} ({protocol}, {float(fraction):.0%})"]
                    if several
                    else []
                ),
                _head_name(method),
                rate,
                _fmt(measured) if float(rate) > 0 else "–",
                _spread(mean, std, len(members), bold=True),
            ]
            for name, _, _ in columns:
                m, sd, _ = _mean_std(members, name)
                cells.append(_spread(m, sd, len(members)))
            cells.append(str(len(members)))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if task.kind == "regression" and any(k[3] == "none" for k in groups):
            lines += [
                "A deterministic regression model predicts no variance: it has no Gaussian NLL "
                "or coverage (–), and its discard curve (every uncertainty tied at 0) tests "
                "nothing.",
                "",
            ]
        # figures: every head of the first entry at the highest noise rate, pooled over seeds
        top = max((float(k[4]) for k in groups), default=0.0)
        shown = {
            k: v
            for k, v in groups.items()
            if float(k[4]) == top and (several or k[:3] == entries[0])
        }
        records = {
            (f"{_label(k[0], labels)} " if several else "") + _head_name(k[3]): [
                c for c in (_read_curves(out, r) for r in v) if c is not None
            ]
            for k, v in sorted(shown.items(), key=lambda kv: (kv[0][3] != "none", kv[0][3]))
        }
        records = {k: v for k, v in records.items() if v}
        stem = f"uncertainty_{_file_name(task.name)}"
        where = f"{task.name}, noise rate {top:g}" if top > 0 else task.name
        if task.kind != "regression":
            panels = {k: p for k, v in records.items() if (p := _pooled_reliability(v))}
            if panels:
                _plot_reliability(out / f"{stem}_reliability.png", panels, where)
                lines += [f"![reliability, {where}]({stem}_reliability.png)", ""]
        curves = {k: c for k, v in list(records.items())[:6] if (c := _pooled_discard(v))}
        if curves and len({c.metric for c in curves.values()}) == 1:
            discard_png(
                curves, out / f"{stem}_discard.png", f"discard test, {where} (mean over seeds)"
            )
            lines += [f"![discard test, {where}]({stem}_discard.png)", ""]
        for entry in entries:
            for method in sorted({k[3] for k in groups if k[:3] == entry} - {"none"}):
                sentence = _comparison(task, groups, entry, method)
                if sentence:
                    prefix = f"{_label(entry[0], labels)} ({entry[1]}): " if several else ""
                    lines += [prefix + sentence, ""]
    if failed:
        lines += [
            "Runs whose uncertainty evaluation failed (their task metrics stand; the log has the "
            "traceback):",
            "",
        ]
        lines += [
            f"- {r['task']} {_label(r['model'], labels)} {r['protocol']} "
            f"{_head_name(variant_of(r)[0])} noise {variant_of(r)[1]} seed {r['seed']}: "
            f"{str(r.get('reason'))[len(_UNC_FAILED) + 2 :]}"
            for r in failed
        ]
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Domain shift
# ----------------------------------------------------------------------------------------------

_METHOD_NAMES = {
    "none": "source only",
    "generalise": "generalise (augmentation, no target data)",
    "oracle": "oracle (target labels)",
}
#: Order of the methods in the domain tables: source only first, the oracle last.
_METHOD_ORDER = ("none", "generalise", "dann", "deep_coral", "mmd", "adabn", "self_training",
                 "tent", "oracle")  # fmt: skip


def _method_name(method: str) -> str:
    return _METHOD_NAMES.get(method, method)


def _method_rank(method: str) -> tuple[int, str]:
    order = _METHOD_ORDER.index(method) if method in _METHOD_ORDER else len(_METHOD_ORDER) - 1
    return (order, method)


def _paired(
    ours: Sequence[Mapping[str, Any]], base: Sequence[Mapping[str, Any]], name: str
) -> list[float]:
    """``ours − base`` of column ``name`` per seed both have (finite values only)."""
    by_seed = {str(r["seed"]): _float(r.get(name)) for r in base}
    out = []
    for r in ours:
        a, b = _float(r.get(name)), by_seed.get(str(r["seed"]), math.nan)
        if math.isfinite(a) and math.isfinite(b):
            out.append(a - b)
    return out


def _helps(
    task: TaskSpec,
    method: str,
    ours: Sequence[Mapping[str, Any]],
    base: Sequence[Mapping[str, Any]],
) -> str | None:
    """One sentence: ``method`` against source only on the target (same seeds), in numbers."""
    diffs = _paired(ours, base, "primary")
    if not diffs:
        return None
    sign = 1.0 if task.higher_is_better else -1.0
    better = sum(1 for d in diffs if sign * d > 0)
    worse = sum(1 for d in diffs if sign * d < 0)
    mean = float(np.mean(diffs))
    worst = _paired(ours, base, "worst_domain")
    source = _paired(ours, base, "source_primary")
    if better == len(diffs):
        verdict = "helps"
    elif worse == len(diffs):
        verdict = "hurts"
    elif better and worse:
        verdict = "is mixed"
    elif better:
        verdict = "helps in some seeds"
    elif worse:
        verdict = "hurts in some seeds"
    else:
        verdict = "changes nothing"
    text = (
        f"{_method_name(method)} {verdict} on the target: {task.primary} {mean:+.3f} against "
        f"source only (better in {better} of {len(diffs)} seed(s), worse in {worse})"
    )
    if worst:
        text += f"; worst domain {float(np.mean(worst)):+.3f}"
    if source:
        text += f"; source {float(np.mean(source)):+.3f}"
    return text + "."


def domain_section(
    rows: Sequence[Mapping[str, Any]], suite: Suite, labels: Mapping[str, str] | None = None
) -> str:
    """The ``## Domain shift`` section: per task with a split, a table of adaptation method ×
    (target primary metric mean ± std over seeds, worst target domain, each domain, source,
    gap to the oracle, runs), and one sentence per method against source-only training on the
    same seeds. Returns ``""`` when no finished run has a split."""
    labels = labels or {}
    ok = _ok(rows)
    tasks = [t for t in suite.tasks if t.split is not None and any(r["task"] == t.name for r in ok)]
    if not tasks:
        return ""
    lines = [
        "## Domain shift",
        "",
        "Per task with a split protocol: the model is trained on the source domains and tested "
        "on each target domain (`target`: the target domains' test samples pooled; `worst "
        "domain`: the primary metric on the worst target domain; `source`: the source "
        "domains' own test samples; `gap to oracle`: the oracle's target metric minus the "
        "method's, same seed — positive means below the oracle; lower is better for RMSE). "
        "Mean ± std over seeds. Adaptation methods see the target domains' training scenes "
        "without labels (never the target test scenes); the oracle is trained on those scenes "
        "with their labels. **Model selection: none, and no target labels** — every run trains "
        "a fixed number of steps and its last weights are tested (the source validation split "
        "is not used either), so no method is tuned on the target.",
        "",
    ]
    for task in tasks:
        task_rows = [r for r in ok if r["task"] == task.name]
        groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = defaultdict(list)
        for r in task_rows:
            key = (r["model"], r["protocol"], str(r["fraction"]), *variant_of(r))
            groups[(*key, adapt_of(r))].append(r)
        entries = list(dict.fromkeys(k[:-1] for k in groups))
        several = len(entries) > 1
        split = task.split
        targets = list(split.target) if split is not None else []
        domains = list(
            dict.fromkeys(
                k.split("@", 1)[1]
                for r in task_rows
                for k in r
                if k.startswith(f"{task.primary}@") and math.isfinite(_float(r[k]))
            )
        )
        sources = [d for d in domains if d not in targets]
        # one source domain: its column would repeat `source`
        ordered = [d for d in domains if d in targets] + (sources if len(sources) > 1 else [])
        arrow = "↑" if task.higher_is_better else "↓"
        protocol = str(task_rows[0].get("split_protocol") or (split.protocol if split else ""))
        source = str(task_rows[0].get("source") or "").replace(",", ", ")
        target = str(task_rows[0].get("target") or "").replace(",", ", ")
        head = [
            *(["model"] if several else []),
            "method",
            f"**target {task.primary}** {arrow}",
            "worst domain",
            *[f"{task.primary}@{d}" + (" (target)" if d in targets else " (source)")
              for d in ordered],
            f"source {task.primary}",
            "gap to oracle",
            "runs",
        ]  # fmt: skip
        lines += [
            f"### {task.name}",
            "",
            f"{protocol}: source {source} → target {target}."
            + (
                f" {task.description[:1].upper()}{task.description[1:]}."
                if task.description
                else ""
            ),
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        order = sorted(groups, key=lambda k: (entries.index(k[:-1]), _method_rank(k[-1])))
        for key in order:
            members = groups[key]
            n = len(members)
            cells = [
                *([f"{_label(key[0], labels)} ({key[1]}, {float(key[2]):.0%})"] if several else []),
                _method_name(key[-1]),
                _spread(*_mean_std(members, "primary")[:2], n, bold=True),
                _spread(*_mean_std(members, "worst_domain")[:2], n),
                *[_spread(*_mean_std(members, f"{task.primary}@{d}")[:2], n) for d in ordered],
                _spread(*_mean_std(members, "source_primary")[:2], n),
                "–" if key[-1] == "oracle" else _spread(*_mean_std(members, "oracle_gap")[:2], n),
                str(n),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        for entry in entries:
            base = groups.get((*entry, "none"))
            if not base:
                continue
            prefix = f"{_label(entry[0], labels)} ({entry[1]}): " if several else ""
            for key in order:
                if key[:-1] != entry or key[-1] in ("none", "oracle"):
                    continue
                sentence = _helps(task, key[-1], groups[key], base)
                if sentence:
                    lines.append(f"- {prefix}{sentence}")
            gap = _mean_std(base, "oracle_gap")[0]
            if math.isfinite(gap):
                lines.append(
                    f"- {prefix}source only is {gap:+.3f} {task.primary} from the oracle on the "
                    "target (positive: below it)."
                )
        lines.append("")
    return "\n".join(lines)


def _architecture(name: str, suite: Suite) -> str:
    """The suite's size settings of a baseline, for the model table."""
    if name == "wrn-eca":
        return f" (WRN-{suite.wrn_depth}-{suite.wrn_width})"
    if name in ("unet", "siamese-diff", "siamese-concat"):
        return f" (widths {', '.join(str(w) for w in suite.unet_widths)})"
    if name == "vit-scratch":
        return f" ({suite.vit_depth} blocks, patch {suite.patch_size or 16})"
    if suite.encoder_overrides:
        from thinkingearth.models.weights import CONFIGS

        if name in CONFIGS:  # a registry encoder with random weights, resized by the suite
            return " (" + ", ".join(f"{k} {v}" for k, v in suite.encoder_overrides.items()) + ")"
    return ""


_NORMALISATION = {
    "registry": "(x − mean) / std with the sensor registry's published statistics",
    "sar_db": "10·log10(sigma0), then (x − mean) / std with SSL4EO-S12 dB statistics",
    "dataset": "(x − mean) / std with statistics estimated on training samples",
}


def _normalisation_text(name: str) -> str:
    """A ``normalisation`` value in words; ``source/target`` where the target sensor of a split
    is normalised otherwise (its statistics estimated on the unlabelled target images)."""
    if "/" in name:
        source, *targets = name.split("/")
        return f"`{name}`: source {_NORMALISATION.get(source, source)}; target " + ", ".join(
            "per-band statistics estimated on the unlabelled target images"
            if t == "dataset"
            else _NORMALISATION.get(t, t)
            for t in targets
        )
    return f"`{name}`: {_NORMALISATION.get(name, name)}"


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
    section = domain_section(rows, suite, labels)
    if section:
        lines += [section, ""]
    section = uncertainty_section(out, rows, suite, labels)
    if section:
        lines += [section, ""]
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
        "Normalisation: " + "; ".join(_normalisation_text(n) for n in norms) + ".",
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
