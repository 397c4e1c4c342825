"""SIGTERM stops a command the way Ctrl-C does, and training saves a checkpoint first.

``timeout``, SLURM (``scancel``, the end of a job's time) and ``docker stop`` send SIGTERM, then
SIGKILL after a grace period. Python's default for SIGTERM is to die at once, without running
``finally`` blocks or context managers, so temporary outputs (``fileio.atomic_dir`` /
``atomic_file``) would be left behind. :func:`sigterm_raises`, installed by ``thinkingearth``'s
``main`` only (a library does not take over a process's signals), makes SIGTERM raise
:class:`Terminated` in the main thread instead: every ``finally`` and context manager runs,
temporary outputs are removed, and the CLI exits with :data:`EXIT_TERMINATED`.

Inside :func:`deferred` (a training loop: ``runs.stop_on_sigterm``), the first SIGTERM only
records the request (:func:`stop_requested`); the loop finishes its current step, saves a
checkpoint of it and then raises :class:`Terminated`, so ``--resume`` continues from exactly
there. A second SIGTERM raises at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = [
    "EXIT_TERMINATED",
    "Terminated",
    "clear_stop",
    "deferred",
    "request_stop",
    "sigterm_raises",
    "stop_requested",
]

#: Exit status after SIGTERM: 128 + 15, what a shell reports for a process SIGTERM ended.
EXIT_TERMINATED = 128 + int(signal.SIGTERM)


class Terminated(BaseException):
    """SIGTERM arrived: the command stops, cleaning up as for Ctrl-C.

    A :class:`BaseException` like :class:`KeyboardInterrupt`, so the ``except Exception`` of a
    benchmark run or a batch job does not record it as that job's failure.
    """


_requested = False
_defer_depth = 0


def stop_requested() -> bool:
    """Whether a stop was requested (SIGTERM inside :func:`deferred`, or :func:`request_stop`)."""
    return _requested


def request_stop() -> None:
    """Ask a training loop to stop after its current step, as a SIGTERM inside it does."""
    global _requested
    _requested = True


def clear_stop() -> None:
    """Forget a stop request (it has been acted on)."""
    global _requested
    _requested = False


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block, a first SIGTERM requests a stop instead of raising (see the module)."""
    global _defer_depth
    _defer_depth += 1
    try:
        yield
    finally:
        _defer_depth -= 1


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    if _defer_depth > 0 and not _requested:
        request_stop()
        # os.write: a signal handler must not re-enter a buffered stream being written
        os.write(
            2,
            b"thinkingearth: SIGTERM: stopping after the current step, once its checkpoint is "
            b"saved (send it again to stop at once)\n",
        )
        return
    raise Terminated("stopped by SIGTERM; temporary outputs were removed")


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (module docs).

    The previous handler comes back afterwards. Nothing changes outside the main thread (only it
    can set handlers) or where SIGTERM is ignored (``SIG_IGN``, a parent's choice).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        clear_stop()
