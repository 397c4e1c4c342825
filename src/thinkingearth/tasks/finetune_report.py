"""The report of a fine-tuning run: ``OUT/report.md`` with its curve and confusion matrix.

* ``training_curve.png``: training loss per logged step and the validation score of the primary
  metric at each validation (from ``OUT/logs/csv/metrics.csv``);
* a per-class table of the test metrics (IoU, F1, precision, recall, AP: whatever the task kind
  reports per class);
* ``confusion_matrix.png`` and its table: test pixels (or scenes) per true and predicted class,
  the ignore index left out, rows normalised in the figure. Multi-label tasks get one
  true-positive / false-positive / false-negative row per label instead, and regression none.

With a split protocol (``split:``), the metrics of each test domain are summarised by
:func:`domain_summary` (the mean and the worst target domain, per metric) and
:func:`oracle_gap`, and the report gains a domain table (:func:`domain_section`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from thinkingearth.fileio import atomic_file
from thinkingearth.tasks.finetune_config import FinetuneConfig, TaskSection
from thinkingearth.tasks.protocols import TaskModule

__all__ = [
    "LOWER_IS_BETTER",
    "confusion_matrix",
    "domain_section",
    "domain_summary",
    "higher_is_better",
    "mean_domain",
    "oracle_gap",
    "worst_domain",
    "worst_domain_names",
    "write_report",
]

#: Metrics (before any ``/class`` suffix) for which a lower value is better.
LOWER_IS_BETTER: frozenset[str] = frozenset({"rmse", "mae", "mse", "loss", "ece", "nll", "brier"})


def higher_is_better(metric: str) -> bool:
    """True unless ``metric`` (``rmse``, ``iou/water``, ...) is an error, a loss or a calibration
    error (:data:`LOWER_IS_BETTER`)."""
    return metric.split("/", 1)[0] not in LOWER_IS_BETTER


def _target_values(
    per_domain: Mapping[str, Mapping[str, float]], targets: Sequence[str]
) -> dict[str, list[float]]:
    """Finite values of every metric over the target domains (metric order of the first)."""
    missing = [t for t in targets if t not in per_domain]
    if missing:
        raise KeyError(f"no metrics for target domain(s) {missing}")
    values: dict[str, list[float]] = {}
    for domain in targets:
        for metric, value in per_domain[domain].items():
            column = values.setdefault(metric, [])
            if value is not None and math.isfinite(float(value)):
                column.append(float(value))
    return values


def worst_domain(
    per_domain: Mapping[str, Mapping[str, float]], targets: Sequence[str]
) -> dict[str, float]:
    """The worst target domain's value of each metric: the minimum where higher is better, the
    maximum for errors and losses. Undefined (NaN) values are left out; a metric undefined on
    every target domain is NaN.

    Args:
        per_domain: ``{domain: {metric: value}}`` (source domains may be in it too).
        targets: The target domains (the only ones compared).
    """
    return {
        metric: (
            math.nan if not column else (min(column) if higher_is_better(metric) else max(column))
        )
        for metric, column in _target_values(per_domain, targets).items()
    }


def mean_domain(
    per_domain: Mapping[str, Mapping[str, float]], targets: Sequence[str]
) -> dict[str, float]:
    """The mean over the target domains of each metric (each domain counts once, whatever its
    size; undefined values left out, NaN if undefined everywhere)."""
    return {
        metric: math.fsum(column) / len(column) if column else math.nan
        for metric, column in _target_values(per_domain, targets).items()
    }


def worst_domain_names(
    per_domain: Mapping[str, Mapping[str, float]], targets: Sequence[str], metric: str
) -> list[str]:
    """The target domain(s) holding the worst value of ``metric`` (ties: all of them)."""
    worst = worst_domain(per_domain, targets).get(metric, math.nan)
    if not math.isfinite(worst):
        return []
    return [t for t in targets if per_domain[t].get(metric) == worst]


def oracle_gap(oracle: Mapping[str, float], method: Mapping[str, float]) -> dict[str, float]:
    """How far a method stays below the oracle trained on target labels, per metric both have:
    ``oracle - method`` where higher is better, ``method - oracle`` for errors and losses, so a
    positive gap always means the method is worse than the oracle."""
    gap: dict[str, float] = {}
    for metric, value in method.items():
        if metric not in oracle or oracle[metric] is None or value is None:
            continue
        difference = float(oracle[metric]) - float(value)
        gap[metric] = difference if higher_is_better(metric) else -difference
    return gap


def domain_summary(
    per_domain: Mapping[str, Mapping[str, float]], targets: Sequence[str]
) -> dict[str, dict[str, float]]:
    """``{"worst_domain": ..., "mean_domain": ...}`` over the target domains."""
    return {
        "worst_domain": worst_domain(per_domain, targets),
        "mean_domain": mean_domain(per_domain, targets),
    }


def domain_section(
    per_domain: Mapping[str, Mapping[str, float]],
    targets: Sequence[str],
    sources: Sequence[str],
    metric: str,
    *,
    protocol: str,
    method: str,
    notes: Sequence[str] = (),
    oracle: Mapping[str, float] | None = None,
) -> str:
    """The report's domain section (markdown): the split, the method, how the model was
    selected, and a table of ``metric`` per domain with the worst target domain marked.

    Args:
        per_domain: ``{domain: {metric: value}}`` of every test domain.
        targets: Target domains (table rows first).
        sources: Source domains (their own test samples).
        metric: The primary metric.
        protocol: The split protocol.
        method: The adaptation method (``none``: source-only training).
        notes: Extra lines (normalisation of the target sensor, ...).
        oracle: The oracle's pooled target metrics, if one was trained.
    """
    worst = set(worst_domain_names(per_domain, targets, metric))
    summary = domain_summary(per_domain, targets)
    arrow = "higher is better" if higher_is_better(metric) else "lower is better"
    lines = [
        "## Domains",
        "",
        f"- split protocol: {protocol}; source: {', '.join(sources)}; target: {', '.join(targets)}",
        f"- adaptation: {method}" + (" (source-only training)" if method == "none" else ""),
        "- model selected on source validation (no target labels)",
        *[f"- {note}" for note in notes],
        "",
        f"| domain | role | {metric} ({arrow}) |",
        "|---|---|---|",
    ]
    for domain in [*targets, *(s for s in sources if s not in targets)]:
        role = "target" if domain in targets else "source"
        value = _num(per_domain.get(domain, {}).get(metric))
        mark = " **(worst)**" if domain in worst else ""
        lines.append(f"| {domain}{mark} | {role} | {value} |")
    lines += [
        f"| mean of targets | | {_num(summary['mean_domain'].get(metric))} |",
        f"| worst target | | {_num(summary['worst_domain'].get(metric))} |",
    ]
    if oracle is not None:
        lines.append(f"| oracle (target labels) | | {_num(oracle.get(metric))} |")
    return "\n".join(lines) + "\n"


def confusion_matrix(
    module: TaskModule, loader: DataLoader[Any], task: TaskSection
) -> torch.Tensor | None:
    """Counts ``[K, K]`` (true row, predicted column) over a split; ``[K, 3]`` TP/FP/FN per label
    for multi-label tasks; ``None`` for regression.

    Args:
        module: The trained task module.
        loader: Batches of normalised samples.
        task: The task (kind, classes, ignore index).
    """
    if task.kind == "regression":
        return None
    k = len(task.classes)
    counts = torch.zeros((k, 3) if task.kind == "multilabel" else (k, k), dtype=torch.int64)
    device = next(module.parameters()).device
    module.eval()
    with torch.no_grad():
        for batch in loader:
            batch = {
                key: value.to(device) if isinstance(value, torch.Tensor) else value
                for key, value in batch.items()
            }
            _, preds, target = module.step(batch)
            preds, target = preds.cpu(), target.cpu()
            if task.kind == "multilabel":
                predicted = preds >= 0.5  # scores are probabilities for multi-label
                truth = target.bool()
                counts[:, 0] += (predicted & truth).sum(0)
                counts[:, 1] += (predicted & ~truth).sum(0)
                counts[:, 2] += (~predicted & truth).sum(0)
                continue
            predicted = preds.argmax(1)
            keep = torch.ones_like(target, dtype=torch.bool)
            if task.ignore_index is not None:
                keep = target != task.ignore_index
            t, p = target[keep].long(), predicted[keep].long()
            counts += torch.bincount(t * k + p, minlength=k * k).reshape(k, k)
    return counts


def _curve(out: Path, metrics_csv: Path, primary: str) -> Path | None:
    if not metrics_csv.is_file():
        return None
    train: list[tuple[int, float]] = []
    val: list[tuple[int, float]] = []
    with metrics_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            step = row.get("step")
            if not step:
                continue
            if row.get("train/loss"):
                train.append((int(float(step)), float(row["train/loss"])))
            if row.get(f"val/{primary}"):
                val.append((int(float(step)), float(row[f"val/{primary}"])))
    if not train and not val:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, left = plt.subplots(figsize=(7, 3.6), dpi=110)
    if train:
        left.plot(*zip(*train, strict=True), color="tab:blue", label="training loss")
    left.set_xlabel("step")
    left.set_ylabel("training loss", color="tab:blue")
    if val:
        right = left.twinx()
        right.plot(*zip(*val, strict=True), "o-", color="tab:orange", label=f"val {primary}")
        right.set_ylabel(f"validation {primary}", color="tab:orange")
    fig.tight_layout()
    path = out / "training_curve.png"
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def _confusion_png(
    out: Path,
    counts: torch.Tensor,
    classes: tuple[str, ...],
    columns: tuple[str, ...] | None = None,
) -> Path:
    """``OUT/confusion_matrix.png``: each row's counts as shares of the row.

    ``columns`` ``None``: a ``[K, K]`` confusion matrix (true rows, predicted columns); else the
    column names of per-label counts (multi-label: true positives, false positives, false
    negatives of each label).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = counts.double()
    share = rows / rows.sum(1, keepdim=True).clamp_min(1)
    k, m = share.shape
    labels = [_short(c) for c in classes]  # BigEarthNet's names run to 80 characters
    names = labels if columns is None else list(columns)
    margin = 0.07 * max(len(n) for n in labels)  # inches for the row labels
    fig, ax = plt.subplots(figsize=(margin + 1.2 + 0.7 * max(m, 4), 1.0 + 0.6 * k), dpi=110)
    ax.imshow(share.numpy(), cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(m), names, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted" if columns is None else "outcome (threshold 0.5)")
    ax.set_ylabel("true" if columns is None else "label")
    for i in range(k):
        for j in range(m):
            ax.text(
                j,
                i,
                f"{share[i, j]:.2f}",
                ha="center",
                va="center",
                color="white" if share[i, j] > 0.5 else "black",
                fontsize=8,
            )
    ax.set_title(
        "test confusion (rows sum to 1)"
        if columns is None
        else "test outcomes per label\n(rows sum to 1)"
    )
    fig.tight_layout()
    path = out / "confusion_matrix.png"
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def _per_class(metrics: Mapping[str, float], classes: tuple[str, ...]) -> list[str]:
    """A markdown table: one row per class, one column per per-class metric."""
    per: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if "/" in key:
            name, cls = key.split("/", 1)
            per.setdefault(name, {})[cls] = value
    if not per:
        return []
    names = sorted(per)
    slugs = [c.lower().replace(" ", "_") for c in classes]
    seen = [s for s in slugs if any(s in per[n] for n in names)]
    rest = sorted({c for n in names for c in per[n]} - set(seen))
    lines = ["| class | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for cls in [*seen, *rest]:
        cells = [per[n].get(cls, math.nan) for n in names]
        lines.append(f"| {cls} | " + " | ".join(_num(v) for v in cells) + " |")
    return lines


def _short(name: str, width: int = 32) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


#: Metrics that count something: shown as whole numbers.
_COUNTS = frozenset({"map_classes_absent", "ece_bins"})


def _metric(key: str, value: Any) -> str:
    if key in _COUNTS and isinstance(value, (int, float)) and math.isfinite(value):
        return str(int(value))
    return _num(value)


def _map_left_out(
    metrics: Mapping[str, float], classes: tuple[str, ...], counts: torch.Tensor | None
) -> list[str]:
    """The sentence saying which labels the mAP left out (no positive test sample), if any.

    ``counts``: the multi-label ``[K, 3]`` true positive / false positive / false negative
    counts; a label with no true positive and no false negative has no positive sample.
    """
    absent = metrics.get("map_classes_absent")
    if absent is None or not math.isfinite(absent) or absent < 1:
        return []
    named = ""
    if counts is not None and len(classes) == counts.shape[0]:
        names = [c for c, row in zip(classes, counts, strict=True) if row[0] + row[2] == 0]
        if len(names) == int(absent):
            named = f" ({'; '.join(names)})"
    n = int(absent)
    return [
        f"mAP is the mean over the {len(classes) - n} of {len(classes)} labels with a positive "
        f"test sample: {n} label{'s' if n != 1 else ''}{named} had none and "
        f"{'are' if n != 1 else 'is'} left out (an average precision without positives is "
        "undefined; `thinkingearth.tasks.metrics`).",
        "",
    ]


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{float(value):.4f}"


def write_report(
    out: Path,
    config: FinetuneConfig,
    record: Mapping[str, Any],
    confusion: torch.Tensor | None,
    log_csv: Path,
    sections: Sequence[str] = (),
    domains: str | None = None,
) -> Path:
    """Write ``OUT/report.md`` (and its figures) for a finished run; returns its path.

    ``sections`` (markdown, e.g. from the test evaluations) are appended in order; ``domains``
    (:func:`domain_section`, a split protocol's runs) follows the test metrics.
    """
    metrics: Mapping[str, float] = record["metrics"]
    primary = str(record["primary_metric"])
    classes = tuple(config.task.classes)
    lines = [
        f"# Fine-tuning report: {config.name}",
        "",
        f"- task: {config.task.name} ({config.task.kind}), classes: "
        + (", ".join(classes) if classes else "none (regression)")
        + (
            f", ignore index {config.task.ignore_index}"
            if config.task.ignore_index is not None
            else ""
        ),
        f"- data: reader `{config.data.reader}`"
        + (f" under `{config.data.root}`" if config.data.root else "")
        + f"; {record['train_samples']} training samples (label fraction {config.fraction:g}), "
        f"{record['val_samples']} validation ({record['validation']}), "
        f"{record['test_samples']} test",
        f"- model: `{record['model']}`, protocol {config.protocol}, normalisation "
        f"{record['normalisation']}, seed {config.seed}"
        + ("" if config.head.plain else f", uncertainty head {config.head.uncertainty}"),
        f"- training: {record['steps']} steps; the saved weights are those of step "
        f"{record['best_step']}, best validation {primary} {_num(record['best_val'])} "
        "(model selection on the validation split only)",
        f"- time: {record['seconds']:.1f} s",
        "",
        "## Test metrics",
        "",
        f"Primary metric **{primary} = {_num(metrics.get(primary))}** on "
        f"{record.get('test_split', 'the test split')}.",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {_metric(k, v)} |" for k, v in metrics.items() if "/" not in k],
        "",
    ]
    lines += _map_left_out(
        metrics, classes, confusion if config.task.kind == "multilabel" else None
    )
    if domains is not None:
        lines += [domains.rstrip(), ""]
    table = _per_class(metrics, classes)
    if table:
        lines += ["## Per class", "", *table, ""]
    curve = _curve(out, log_csv / "metrics.csv", primary)
    if curve is not None:
        lines += ["## Training", "", f"![training curve]({curve.name})", ""]
    if confusion is not None and config.task.kind == "multilabel":
        png = _confusion_png(
            out, confusion, classes, ("true positive", "false positive", "false negative")
        )
        lines += [
            "## Label counts on the test split (threshold 0.5)",
            "",
            f"![confusion matrix]({png.name})",
            "",
            "| label | true positives | false positives | false negatives |",
            "|---|---|---|---|",
            *[
                f"| {name} | {int(row[0])} | {int(row[1])} | {int(row[2])} |"
                for name, row in zip(classes, confusion, strict=True)
            ],
            "",
        ]
    elif confusion is not None:
        png = _confusion_png(out, confusion, classes)
        lines += [
            "## Confusion matrix (test)",
            "",
            f"![confusion matrix]({png.name})",
            "",
            "| true \\ predicted | " + " | ".join(classes) + " |",
            "|---|" + "---|" * len(classes),
            *[
                f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |"
                for name, row in zip(classes, confusion, strict=True)
            ],
            "",
        ]
    for section in sections:
        lines += [section.rstrip(), ""]
    path = out / "report.md"
    with atomic_file(path) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    return path
