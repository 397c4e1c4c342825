"""The report of a fine-tuning run: ``OUT/report.md`` with its curve and confusion matrix.

* ``training_curve.png``: training loss per logged step and the validation score of the primary
  metric at each validation (from ``OUT/logs/csv/metrics.csv``);
* a per-class table of the test metrics (IoU, F1, precision, recall, AP: whatever the task kind
  reports per class);
* ``confusion_matrix.png`` and its table: test pixels (or scenes) per true and predicted class,
  the ignore index left out, rows normalised in the figure. Multi-label tasks get one
  true-positive / false-positive / false-negative row per label instead, and regression none.
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

__all__ = ["confusion_matrix", "write_report"]


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


def _confusion_png(out: Path, counts: torch.Tensor, classes: tuple[str, ...]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = counts.double()
    share = rows / rows.sum(1, keepdim=True).clamp_min(1)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * k, 1.0 + 0.6 * k), dpi=110)
    ax.imshow(share.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{share[i, j]:.2f}",
                ha="center",
                va="center",
                color="white" if share[i, j] > 0.5 else "black",
                fontsize=8,
            )
    ax.set_title("test confusion (rows sum to 1)")
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
) -> Path:
    """Write ``OUT/report.md`` (and its figures) for a finished run; returns its path.

    ``sections`` (markdown, e.g. from the test evaluations) are appended in order.
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
        f"Primary metric **{primary} = {_num(metrics.get(primary))}** on the test split.",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {_num(v)} |" for k, v in metrics.items() if "/" not in k],
        "",
    ]
    table = _per_class(metrics, classes)
    if table:
        lines += ["## Per class", "", *table, ""]
    curve = _curve(out, log_csv / "metrics.csv", primary)
    if curve is not None:
        lines += ["## Training", "", f"![training curve]({curve.name})", ""]
    if confusion is not None and config.task.kind == "multilabel":
        lines += [
            "## Label counts on the test split (threshold 0.5)",
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
