"""Training progress that people can see: a bar on a terminal, plain lines elsewhere.

Lightning's progress bar redraws one line with carriage returns, which is right on a terminal
and unreadable in a log file or a CI job. :func:`progress_callbacks` picks per stream: on a
terminal, Lightning's bar (:class:`~lightning.pytorch.callbacks.TQDMProgressBar` without the
logger version, drawn on standard error); otherwise :class:`ProgressLines`, one line every few
seconds with the step, the loss, the rate and the time left. Work counted outside Lightning
(the rows of a predicted scene, the scenes of a synthetic export) uses
:class:`~thinkingearth.count_progress.CountProgress` the same way; it lives apart so that those
commands do not import Lightning. ``thinkingearth -q`` shows no progress at all
(:func:`thinkingearth.output.verbosity`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any, TextIO

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from thinkingearth.count_progress import CountProgress, format_seconds
from thinkingearth.output import verbosity

__all__ = [
    "BarWithoutVersion",
    "CountProgress",
    "ProgressLines",
    "QuietLightning",
    "format_seconds",
    "progress_callbacks",
]


class BarWithoutVersion(TQDMProgressBar):
    """Lightning's progress bar without the logger version (``v_num``), on standard error.

    Lightning draws its bars on standard output, where they would mix with a command's result.
    """

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """The bar's metrics, minus ``v_num``."""
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics

    # Lightning passes ``file=sys.stdout`` when it makes each bar: point that name at stderr.
    def init_sanity_tqdm(self) -> Tqdm:
        """The sanity-check bar, on standard error."""
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_sanity_tqdm()

    def init_train_tqdm(self) -> Tqdm:
        """The training bar, on standard error."""
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_train_tqdm()

    def init_validation_tqdm(self) -> Tqdm:
        """The validation bar, on standard error."""
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_validation_tqdm()

    def init_test_tqdm(self) -> Tqdm:
        """The test bar, on standard error."""
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_test_tqdm()

    def init_predict_tqdm(self) -> Tqdm:
        """The prediction bar, on standard error."""
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_predict_tqdm()


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
        log: Where plain lines go; ``None`` shows nothing, and so does ``thinkingearth -q``.
        prefix: Start of each plain line.
        stream: The stream progress goes to (default: standard error); a terminal gets the bar.
        every_s: Seconds between plain lines.

    Returns:
        ``(callbacks, enable_progress_bar)`` for :class:`lightning.Trainer`.
    """
    if log is None or verbosity() == "quiet":
        return [], False
    stream = stream if stream is not None else sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return [BarWithoutVersion()], True
    return [ProgressLines(log, prefix, every_s)], False


class QuietLightning:
    """Silence Lightning for the life of a Trainer: banners, tips and warnings.

    Use it around the Trainer's construction as well as ``fit``/``test``: the accelerator banner
    (``GPU available: False, used: False``, ``TPU available``) is logged when the Trainer is made,
    the ``💡 Tip: ... litlogger`` when its loggers are set up, both at ``INFO`` by the logger
    ``lightning.pytorch.utilities.rank_zero``. Inside, Lightning's loggers stop at ``WARNING``
    (at ``ERROR`` under ``thinkingearth -q``) and its warnings and deprecation notices are
    ignored; under ``thinkingearth -v`` everything passes, ``INFO`` included.
    """

    _NAMES = (
        "lightning",
        "lightning.pytorch",
        "lightning.fabric",
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "pytorch_lightning",
        "lightning_fabric",
    )

    def __enter__(self) -> QuietLightning:
        level = {"quiet": logging.ERROR, "normal": logging.WARNING, "verbose": logging.INFO}[
            verbosity()
        ]
        self._levels = {n: logging.getLogger(n).level for n in self._NAMES}
        for name in self._NAMES:
            logging.getLogger(name).setLevel(level)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        if level > logging.INFO:
            warnings.filterwarnings("ignore", module=r"(pytorch_)?lightning(_fabric)?(\..*)?$")
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=r".*validation_step.*val_dataloader.*")
            # tiny test splits miss some labels; the metric then says so for every run
            warnings.filterwarnings("ignore", message=r"No positive samples found in target.*")
        return self

    def __exit__(self, *exc: object) -> None:
        self._warnings.__exit__(None, None, None)
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
