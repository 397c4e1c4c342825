"""Process resources shared by the model runtime and the cost meters."""

from __future__ import annotations

import contextlib
import ctypes
import gc

__all__ = ["release_freed_memory"]


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    glibc keeps freed memory mapped, so a process's RSS stays at its past peak; trimming makes
    the next allocation's growth visible (peak-memory meters) and returns what a large temporary
    build no longer needs (the int8 export).
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
