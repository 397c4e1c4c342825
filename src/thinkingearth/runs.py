"""What every training run writes and reads back: checkpoints and logs (pretrain, finetune).

* Checkpoints are ``OUT/checkpoints/step-00000100.ckpt``: Lightning checkpoints (weights,
  optimiser, scheduler, loop progress, data-order position, the run's own records), written by
  :class:`AtomicCheckpointIO` to a temporary sibling, flushed to disk (``fsync``) and renamed
  into place, so a run killed while saving (even with SIGKILL) leaves the previous checkpoints
  intact and never a half-written file under a checkpoint's name; :class:`StepCheckpoint` writes
  one every N steps and at the end and keeps the latest few.
* Reading uses ``torch.load(weights_only=True)`` (no arbitrary unpickling) and turns a corrupt,
  truncated or foreign file into a one-line :class:`~thinkingearth.errors.UserInputError`
  (:func:`read_checkpoint_file`), never a silent fresh start.
* :class:`ResumableCSVLogger`: Lightning's CSV logger deletes an existing ``metrics.csv`` when it
  starts; this one appends to it, so a resumed run continues the same file (rows after the
  checkpoint are dropped first by :func:`truncate_metrics`, and redone).
* SIGTERM (``timeout``, SLURM, ``docker stop``): ``trainer.fit`` inside :func:`stop_on_sigterm`
  finishes its current step, :class:`StepCheckpoint` saves it, and
  :class:`~thinkingearth.stopping.Terminated` is raised naming the step, so ``--resume``
  continues from there (:class:`StopOnSignal` sets ``trainer.should_stop``).
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.exceptions import SIGTERMException

from thinkingearth import stopping
from thinkingearth.errors import UserInputError
from thinkingearth.fileio import atomic_file

__all__ = [
    "AtomicCheckpointIO",
    "ResumableCSVLogger",
    "StepCheckpoint",
    "StepSeed",
    "StopOnSignal",
    "check_same_config",
    "checkpoint_path",
    "list_checkpoints",
    "read_checkpoint_file",
    "stop_on_sigterm",
    "truncate_metrics",
]

_NAME = re.compile(r"^step-(\d+)\.ckpt$")


def checkpoint_path(folder: str | Path, step: int) -> Path:
    """``folder/step-XXXXXXXX.ckpt``."""
    return Path(folder) / f"step-{int(step):08d}.ckpt"


def list_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the checkpoints in ``folder``, oldest first (temporary files skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def read_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``.

    Raises:
        UserInputError: The file is missing, corrupt or truncated (one line naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        text = str(error).strip()
        first = text.splitlines()[0] if text else type(error).__name__
        raise UserInputError(
            f"checkpoint {path} is corrupt or truncated ({first}); delete it to resume from the "
            "previous checkpoint, or start a new run in another --out"
        ) from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O: atomic, fsynced writes; ``weights_only`` reads with clear errors."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` through a temporary sibling and a rename."""
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        with atomic_file(path) as tmp, open(tmp, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Read with ``weights_only=True`` (see :func:`read_checkpoint_file`; ``ddp_spawn`` also passes
        the final weights back to the main process through this)."""
        return read_checkpoint_file(path)


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


def _flatten(data: Mapping[str, Any], opaque: Collection[str], prefix: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` for nested sections; the ``opaque`` keys' mappings stay whole."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and key not in opaque:
            out.update(_flatten(value, opaque, full + "."))
        else:
            out[full] = value
    return out


def check_same_config(
    saved: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    resumable: Collection[str],
    opaque: Collection[str],
    where: str,
) -> None:
    """Refuse ``--resume`` with a config that differs from the run's own, but in ``resumable`` keys.

    Args:
        saved: The config the run started with (its ``to_dict()``, as saved).
        new: The config given now.
        resumable: Dotted keys that may change on resume (e.g. ``trainer.max_steps``).
        opaque: Keys whose mapping values compare whole (free-form options, model overrides).
        where: Where the saved config is, for the message.

    Raises:
        UserInputError: Naming the first key that differs, its old and new values.
    """
    old, now = _flatten(saved, opaque), _flatten(new, opaque)
    for key in sorted(set(old) | set(now)):
        if key not in resumable and old.get(key) != now.get(key):
            raise UserInputError(
                f"--resume with a different config: {key} was {old.get(key)!r}, is "
                f"{now.get(key)!r} now; resume with the run's own config ({where})"
            )


def _stopping(trainer: Trainer) -> bool:
    """SIGTERM arrived: through our handler (:mod:`thinkingearth.stopping`) or Lightning's."""
    return stopping.stop_requested() or bool(getattr(trainer, "received_sigterm", False))


class StopOnSignal(Callback):
    """End training after the current step once SIGTERM arrived (``trainer.should_stop``).

    :class:`StepCheckpoint` saves that step. Use with :func:`stop_on_sigterm` around
    ``trainer.fit``, which turns the stop into :class:`~thinkingearth.stopping.Terminated`.
    """

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Ask the loop to stop when a stop was requested."""
        if _stopping(trainer):
            trainer.should_stop = True


@contextlib.contextmanager
def stop_on_sigterm(trainer: Trainer, hint: str) -> Iterator[None]:
    """Run ``trainer.fit`` inside: SIGTERM ends it after the current step, then raises.

    Within the block the first SIGTERM only requests a stop (:func:`thinkingearth.stopping.
    deferred`); :class:`StopOnSignal` and :class:`StepCheckpoint` end the step and save it.
    Lightning's own SIGTERM exit (``SIGTERMException``, a ``SystemExit`` whose status would
    read 0) is absorbed the same way. A run that reached ``max_steps`` anyway is complete and
    carries on; otherwise :class:`~thinkingearth.stopping.Terminated` says at which step it
    stopped, followed by ``hint`` (how to continue).

    Args:
        trainer: The trainer whose ``fit`` runs in the block.
        hint: What the user does next, e.g. ``"run again with --resume to continue"``.
    """
    with stopping.deferred(), contextlib.suppress(SIGTERMException):
        yield
    if not _stopping(trainer):
        return
    step = int(trainer.global_step)
    stopping.clear_stop()  # acted on here: a later run in this process starts afresh
    if 0 < trainer.max_steps <= step:
        return  # the run is complete: nothing to resume
    raise stopping.Terminated(f"stopped by SIGTERM at step {step}; {hint}")


class StepCheckpoint(Callback):
    """Save a checkpoint every ``every`` optimiser steps and at the end; keep the latest ``keep``.

    A step after which training stops early (``trainer.should_stop``, e.g. SIGTERM through
    :class:`StopOnSignal`) is saved too.

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
        """Save on every ``every``-th step, and on the step where training stops early."""
        step = int(trainer.global_step)
        due = step % self.every == 0 or trainer.should_stop or _stopping(trainer)
        if due and step != self._last_saved:
            self._save(trainer)

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        """Save the step that SIGTERM interrupted if :meth:`on_train_batch_end` did not.

        Lightning raises its ``SIGTERMException`` at the end of a step; a signal that arrives
        after this callback's ``on_train_batch_end`` but before that check would otherwise end
        the run with its last step unsaved (``--resume`` would redo it from an older one).
        """
        if not isinstance(exception, SIGTERMException) and not _stopping(trainer):
            return
        step = int(trainer.global_step)
        if step > 0 and step != self._last_saved:
            self._save(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Save the final state unless it was just saved."""
        if int(trainer.global_step) != self._last_saved and trainer.global_step > 0:
            self._save(trainer)


class StepSeed(Callback):
    """Seed the random generators from ``(seed, step, rank)`` before every training step.

    Dropout masks and any other random draw of a step then depend on the step alone, so a run
    resumed from a checkpoint repeats exactly what the uninterrupted run did (Lightning does not
    save generator states).

    Args:
        seed: The run's seed.
    """

    def __init__(self, seed: int) -> None:
        """Keep the seed."""
        self.seed = int(seed)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Seed torch (CPU and CUDA) for this step."""
        step = int(trainer.global_step)
        torch.manual_seed((self.seed * 1_000_003 + step) * 1009 + int(trainer.global_rank))
