"""Lightning callbacks and loggers of pretraining runs.

* :class:`StepCheckpoint`: a checkpoint every N steps and at the end, the latest few kept;
* :class:`QuietProgressBar`: the progress bar without the logger version;
* :class:`ResumableCSVLogger`: Lightning's CSV logger deletes an existing ``metrics.csv`` when it
  starts; this one appends to it, so a resumed run continues the same file (rows after the
  checkpoint are dropped first by :func:`truncate_metrics`, and redone).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from thinkingearth.fileio import atomic_file
from thinkingearth.pretrain.checkpoint import checkpoint_path, list_checkpoints

__all__ = ["QuietProgressBar", "ResumableCSVLogger", "StepCheckpoint", "truncate_metrics"]


class _AppendingWriter(ExperimentWriter):
    """Keeps an existing ``metrics.csv`` and its columns instead of deleting it."""

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if path.is_file():
            with open(path, newline="") as handle:
                self.metrics_keys = list(csv.DictReader(handle).fieldnames or [])


class ResumableCSVLogger(CSVLogger):
    """Lightning's :class:`~lightning.pytorch.loggers.CSVLogger`, appending to an existing file."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        """The writer (created on first use)."""
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def truncate_metrics(path: str | Path, before_step: int) -> None:
    """Drop the rows of ``metrics.csv`` at steps ``>= before_step`` (they will be redone)."""
    path = Path(path)
    if not path.is_file():
        return
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        fields = list(reader.fieldnames or [])
        rows = [r for r in reader if r.get("step") and int(float(r["step"])) < before_step]
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


class QuietProgressBar(TQDMProgressBar):
    """Lightning's progress bar without the logger version (``v_num``)."""

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """The bar's metrics, minus ``v_num``."""
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


class StepCheckpoint(Callback):
    """Save a checkpoint every ``every`` optimiser steps and at the end; keep the latest ``keep``.

    Args:
        folder: Where checkpoints go.
        every: Interval in optimiser steps.
        keep: Number of the most recent checkpoints to keep (older ones are deleted).
    """

    def __init__(self, folder: str | Path, every: int, keep: int) -> None:
        """Store the settings."""
        self.folder = Path(folder)
        self.every = int(every)
        self.keep = int(keep)
        self._last_saved = -1

    def _save(self, trainer: Trainer) -> None:
        step = int(trainer.global_step)
        trainer.save_checkpoint(checkpoint_path(self.folder, step), weights_only=False)
        self._last_saved = step
        if trainer.is_global_zero:
            for _, old in list_checkpoints(self.folder)[: -self.keep]:
                old.unlink(missing_ok=True)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Remember the resume step: it is already on disk."""
        self._last_saved = int(trainer.global_step)

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Save on every ``every``-th step."""
        step = int(trainer.global_step)
        if step % self.every == 0 and step != self._last_saved:
            self._save(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Save the final state unless it was just saved."""
        if int(trainer.global_step) != self._last_saved and trainer.global_step > 0:
            self._save(trainer)
