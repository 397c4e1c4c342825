"""Progress of counted work without Lightning: a bar on a terminal, plain lines elsewhere.

The rows of a predicted scene and the scenes of a synthetic export are counted, not trained;
:class:`CountProgress` shows them as :mod:`thinkingearth.progress` shows training steps: a tqdm
bar when the stream is a terminal, else a plain line every :data:`LINE_EVERY_S` seconds (a bar
redrawn with carriage returns is unreadable in a log file or a CI job). It imports no Lightning,
so ``synth`` and ``predict`` with the threshold model start without it.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from thinkingearth import stopping

__all__ = ["LINE_EVERY_S", "CountProgress", "format_seconds"]


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


#: Seconds between plain progress lines of :class:`CountProgress` (read at construction).
LINE_EVERY_S = 10.0


def _is_terminal(stream: TextIO) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


class CountProgress:
    """Progress through a known count of units: a bar on a terminal, plain lines elsewhere.

    On a terminal (``stream.isatty()``) a tqdm bar on ``stream`` shows the count, rate and time
    left; otherwise a line goes to ``log`` at most every ``every_s`` seconds, and only when the
    count moved, e.g. ``[predict] rows 512/2500 (20%) · 83.1 rows/s · 24 s left``. A run shorter
    than ``every_s`` prints no line. A context manager: leaving it closes the bar.

    Args:
        total: Units of work in all.
        unit: What a unit is, plural (``rows``, ``scenes``).
        log: Where plain lines go; ``None`` shows nothing (no bar either).
        prefix: Start of each line, e.g. ``[predict]``; the bar's description.
        stream: The stream progress goes to (default: standard error); a terminal gets the bar.
        every_s: Seconds between plain lines (default: :data:`LINE_EVERY_S`).
        clock: Time source (tests pass a fake one).
    """

    def __init__(
        self,
        total: int,
        *,
        unit: str,
        log: Callable[[str], None] | None,
        prefix: str = "",
        stream: TextIO | None = None,
        every_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Start the clock; open the bar on a terminal."""
        self.total = max(0, int(total))
        self.unit = unit
        self.prefix = f"{prefix} " if prefix else ""
        self.every_s = float(LINE_EVERY_S if every_s is None else every_s)
        self.clock = clock
        self.done = 0
        self._shown = 0  # the count of the last line
        self._emit = log
        self._start = self._last = clock()
        self._bar: Any = None
        stream = stream if stream is not None else sys.stderr
        if log is not None and _is_terminal(stream):
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total,
                unit=f" {unit}",
                desc=prefix.strip("[] ") or None,
                file=stream,
                leave=False,
                dynamic_ncols=True,
            )

    @property
    def bar(self) -> bool:
        """Whether progress shows as a terminal bar (else as plain lines)."""
        return self._bar is not None

    def line(self) -> str:
        """The progress line now."""
        elapsed = max(self.clock() - self._start, 1e-9)
        rate = self.done / elapsed
        share = f" ({self.done / self.total:.0%})" if self.total > 0 else ""
        parts = [f"{self.unit} {self.done}/{self.total}{share}"]
        if rate > 0:
            parts.append(f"{rate:.1f} {self.unit}/s")
            parts.append(f"{format_seconds((self.total - self.done) / rate)} left")
        return self.prefix + " · ".join(parts)

    def update(self, done: int) -> None:
        """Say that ``done`` units are finished (a count so far, not an increment).

        Also a place where a loop stops after a SIGTERM a finaliser swallowed
        (:func:`thinkingearth.stopping.check`).
        """
        stopping.check()
        done = min(max(int(done), self.done), self.total)
        if self._bar is not None:
            self._bar.update(done - self.done)
            self.done = done
            return
        self.done = done
        now = self.clock()
        if self._emit is not None and done > self._shown and now - self._last >= self.every_s:
            self._last, self._shown = now, done
            self._emit(self.line())

    def close(self) -> None:
        """Close the bar (plain lines need no closing)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> CountProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
