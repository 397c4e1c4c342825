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

A signal handler's exception is raised wherever the main thread happens to be, which may be a
finaliser (``__del__`` run by the garbage collector) whose exceptions Python prints and ignores.
There the handler only records the signal (raising would print a traceback and be lost), and
long loops call :func:`check` between units of work (bench runs, progress updates), which
raises it at the next safe point.
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
    "check",
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
_signalled = False  # SIGTERM raised Terminated (which a finaliser may have swallowed)
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
    global _requested, _signalled
    _requested = False
    _signalled = False


def check() -> None:
    """Raise :class:`Terminated` if SIGTERM arrived outside a training loop's :func:`deferred`.

    Normally the handler's own exception has already stopped the command; this catches the case
    where it was raised inside a finaliser and ignored.
    """
    if _signalled:
        raise Terminated("stopped by SIGTERM; temporary outputs were removed")


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
    global _signalled
    _signalled = True
    if _in_finaliser(frame):
        return  # raising here would be printed as "Exception ignored" and lost: check() raises
    raise Terminated("stopped by SIGTERM; temporary outputs were removed")


def _in_finaliser(frame: FrameType | None) -> bool:
    """Whether the interrupted code runs inside a ``__del__`` (exceptions there are ignored)."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


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
