"""Atomic output: write into a temporary sibling, rename into place when complete.

A crash, a kill or a user error never leaves a half-written folder or file where a finished
one is expected, and readers never index a partial output.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from thinkingearth.errors import UserInputError

__all__ = ["atomic_dir", "atomic_file", "check_writable_parent"]


def check_writable_parent(path: Path) -> None:
    """Raise a one-line :class:`UserInputError` unless ``path`` can be created."""
    parent = path.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserInputError(f"cannot write {path}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserInputError(f"cannot write {path}: {probe} is not writable")


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``path`` when the block ends without error.

    Args:
        path: the final folder.
        overwrite: replace an existing non-empty ``path``; otherwise that is a user error.

    Raises:
        UserInputError: ``path`` exists and is not empty (without ``overwrite``), or its parent
            cannot be written.
    """
    final = Path(path)
    if final.exists() and not final.is_dir():
        raise UserInputError(f"cannot write folder {final}: a file of that name exists")
    if final.is_dir() and any(final.iterdir()) and not overwrite:
        raise UserInputError(f"output folder {final} exists and is not empty; choose another")
    check_writable_parent(final)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as exc:
        raise UserInputError(f"cannot write folder {final}: {exc.strerror}") from None
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    try:
        if final.exists():
            old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            final.rename(old)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not final.exists():
            old.rename(final)  # put the previous folder back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the same folder that replaces ``path`` when the block succeeds."""
    final = Path(path)
    check_writable_parent(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(f"cannot write {final}: {exc.strerror}") from None
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}{final.suffix}"
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
