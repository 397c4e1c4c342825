"""Training progress that people can see: a bar on a terminal, plain lines elsewhere.

Lightning's progress bar redraws one line with carriage returns, which is right on a terminal
and unreadable in a log file or a CI job. :func:`progress_callbacks` picks per stream: on a
terminal, Lightning's bar (:class:`~lightning.pytorch.callbacks.TQDMProgressBar` without the
logger version); otherwise :class:`ProgressLines`, one line every few seconds with the step, the
loss, the rate and the time left.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any, TextIO

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar

__all__ = [
    "BarWithoutVersion",
    "ProgressLines",
    "QuietLightning",
    "format_seconds",
    "progress_callbacks",
]


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class BarWithoutVersion(TQDMProgressBar):
    """Lightning's progress bar without the logger version (``v_num``)."""

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """The bar's metrics, minus ``v_num``."""
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


class ProgressLines(Callback):
    """One progress line every ``every_s`` seconds (and at the end) while training.

    ``[finetune] step 120/400 (30%) · loss 0.4312 · 3.1 steps/s · 1 min 30 s left``

    Args:
        log: Where lines go.
        prefix: Start of each line, e.g. ``[finetune]``.
        every_s: Seconds between lines.
        clock: Time source (tests pass a fake one).
    """

    def __init__(
        self,
        log: Callable[[str], None],
        prefix: str = "",
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Keep the settings."""
        self._emit = log
        self.prefix = f"{prefix} " if prefix else ""
        self.every_s = float(every_s)
        self.clock = clock
        self._start = 0.0
        self._start_step = 0
        self._last = 0.0

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start the clock (at the resume step for a resumed run)."""
        self._start = self._last = self.clock()
        self._start_step = int(trainer.global_step)

    def line(self, trainer: Trainer) -> str:
        """The progress line now."""
        step, total = int(trainer.global_step), int(trainer.max_steps)
        elapsed = max(self.clock() - self._start, 1e-9)
        rate = (step - self._start_step) / elapsed
        parts = [f"step {step}/{total}" + (f" ({step / total:.0%})" if total > 0 else "")]
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            parts.append(f"loss {float(loss):.4f}")
        if rate > 0:
            parts.append(f"{rate:.2f} steps/s")
            if total > 0:
                parts.append(f"{format_seconds((total - step) / rate)} left")
        return self.prefix + " · ".join(parts)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        """Say where training is, at most every ``every_s`` seconds."""
        now = self.clock()
        if now - self._last >= self.every_s and trainer.is_global_zero:
            self._last = now
            self._emit(self.line(trainer))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Say where training ended."""
        if trainer.is_global_zero:
            self._emit(self.line(trainer))


def progress_callbacks(
    log: Callable[[str], None] | None,
    prefix: str,
    *,
    stream: TextIO | None = None,
    every_s: float = 10.0,
) -> tuple[list[Callback], bool]:
    """The progress callbacks for a run, and whether Lightning's bar is enabled.

    Args:
        log: Where plain lines go; ``None`` shows nothing.
        prefix: Start of each plain line.
        stream: The stream progress goes to (default: standard error); a terminal gets the bar.
        every_s: Seconds between plain lines.

    Returns:
        ``(callbacks, enable_progress_bar)`` for :class:`lightning.Trainer`.
    """
    if log is None:
        return [], False
    stream = stream if stream is not None else sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return [BarWithoutVersion()], True
    return [ProgressLines(log, prefix, every_s)], False


class QuietLightning:
    """Silence Lightning's per-run banners, tips and warnings (GPU available, few workers, …)."""

    _NAMES = ("lightning.pytorch", "lightning.fabric", "lightning")

    def __enter__(self) -> QuietLightning:
        self._levels = {n: logging.getLogger(n).level for n in self._NAMES}
        for name in self._NAMES:
            logging.getLogger(name).setLevel(logging.WARNING)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.filterwarnings("ignore", module=r"lightning(\..*)?$")
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=r".*validation_step.*val_dataloader.*")
        # tiny test splits miss some labels; the metric then says so for every run
        warnings.filterwarnings("ignore", message=r"No positive samples found in target.*")
        return self

    def __exit__(self, *exc: object) -> None:
        self._warnings.__exit__(None, None, None)
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
