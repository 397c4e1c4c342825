"""Atomic output: write into a temporary sibling, rename into place when complete.

A crash, a kill or a user error never leaves a half-written folder or file where a finished
one is expected, and readers never index a partial output. Ctrl-C and SIGTERM (through
:mod:`thinkingearth.stopping`) remove the temporary sibling; SIGKILL may leave one, named
``.<name>.tmp-<hex>``, never the output's own name.

What is renamed into place has the permissions of a plain new file, ``0666 & ~umask``
(``0777 & ~umask`` for folders): writers that create private temporary files (safetensors'
``save_file`` writes mode 0600) do not make outputs unreadable to the group.

One overwrite policy for every command: an existing output is refused, with a message that
names ``--overwrite`` (:func:`check_new_file`, :func:`atomic_dir`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from thinkingearth.errors import UserInputError

__all__ = [
    "atomic_dir",
    "atomic_file",
    "check_new_file",
    "check_writable_parent",
    "current_umask",
    "remove_outputs",
    "remove_temporaries",
    "user_cache_dir",
]


def user_cache_dir() -> Path:
    """The toolkit's folder in the user's cache: ``$XDG_CACHE_HOME/thinkingearth``, else
    ``~/.cache/thinkingearth`` (read from the environment at each call)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(os.path.expandvars(xdg)).expanduser() if xdg else Path.home() / ".cache"
    return base / "thinkingearth"


def current_umask() -> int:
    """The process's umask (read without changing it where ``/proc`` says it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no other portable way to read it
    os.umask(mask)
    return mask


def _publish_mode(path: Path) -> None:
    """Give ``path`` (and, for a folder, what it holds) the modes of plain new files."""
    mask = current_umask()
    file_mode, dir_mode = 0o666 & ~mask, 0o777 & ~mask
    if path.is_symlink():
        return
    if not path.is_dir():
        os.chmod(path, file_mode)
        return
    os.chmod(path, dir_mode)
    for folder, dirs, files in os.walk(path):
        for name in dirs:
            child = os.path.join(folder, name)
            if not os.path.islink(child):
                os.chmod(child, dir_mode)
        for name in files:
            child = os.path.join(folder, name)
            if not os.path.islink(child):
                # a file a writer made executable stays executable (as the umask allows)
                executable = stat.S_IMODE(os.lstat(child).st_mode) & 0o111
                os.chmod(child, dir_mode if executable else file_mode)


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


def check_new_file(
    path: str | Path,
    *,
    overwrite: bool = False,
    suffixes: Sequence[str] = (),
    what: str = "output",
    flag: str = "--out",
) -> Path:
    """Check, before any work, that an output file may be written: one-line errors otherwise.

    Args:
        path: the output file.
        overwrite: an existing file may be replaced.
        suffixes: accepted name endings, lower case (``(".tif", ".tiff")``); empty: any.
        what: what the file is, for the messages (``"GeoTIFF"``).
        flag: the option that named the path, for the messages.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        UserInputError: a name with another ending, a folder of that name, an existing file
            (without ``overwrite``), or a parent folder that cannot be created or written.
    """
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise UserInputError(
            f"{flag} {path}: the {what} needs a name ending in {' or '.join(suffixes)}"
        )
    if path.is_dir():
        raise UserInputError(f"{flag} {path} is a folder; expected a {what} file name")
    if path.exists() and not overwrite:
        raise UserInputError(
            f"{flag} {path} exists; pass --overwrite to replace it, or choose another path"
        )
    check_writable_parent(path)
    return path


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
        raise UserInputError(
            f"output folder {final} exists and is not empty; pass --overwrite to replace it, "
            "or choose another"
        )
    check_writable_parent(final)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as exc:
        raise UserInputError(f"cannot write folder {final}: {exc.strerror}") from None
    try:
        yield tmp
        _publish_mode(tmp)
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
        if tmp.exists():
            _publish_mode(tmp)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_outputs(folder: str | Path, names: Sequence[str]) -> list[Path]:
    """Delete the named files and folders of an earlier run in ``folder`` (``--overwrite``).

    Only what a command writes is named, never the whole folder: ``--out .`` with
    ``--overwrite`` must not empty the working directory. Returns what was deleted.
    """
    removed = []
    for name in names:
        path = Path(folder) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(path)
    return removed


_TEMPORARY = re.compile(r"\.(?:tmp|old|stream)-[0-9a-f]{8}")


def remove_temporaries(folder: str | Path, stems: Sequence[str]) -> list[Path]:
    """Delete the temporary siblings (``.<name>.tmp-<hex>``…) of outputs named ``<stem>…``.

    For outputs written by other processes (Dask workers) that were killed before their own
    clean-up ran; the process that started them sweeps what they left. Returns what was
    deleted.
    """
    folder = Path(folder)
    if not folder.is_dir() or not stems:
        return []
    removed = []
    for path in folder.iterdir():
        name = path.name
        if not name.startswith(".") or not _TEMPORARY.search(name):
            continue
        if not any(name[1:].startswith(stem) for stem in stems):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed
