"""Lightning callbacks and loggers of pretraining runs (shared with every run: see
:mod:`thinkingearth.runs` and :mod:`thinkingearth.progress`).

* :class:`StepCheckpoint`: a checkpoint every N steps and at the end, the latest few kept;
* :class:`QuietProgressBar`: the progress bar without the logger version;
* :class:`ResumableCSVLogger`: a CSV logger that appends to an existing ``metrics.csv``.
"""

from __future__ import annotations

from thinkingearth.progress import BarWithoutVersion as QuietProgressBar
from thinkingearth.runs import ResumableCSVLogger, StepCheckpoint, truncate_metrics

__all__ = ["QuietProgressBar", "ResumableCSVLogger", "StepCheckpoint", "truncate_metrics"]
