"""How loud a command is: ``-q/--quiet``, the default, ``-v/--verbose``.

Results go to standard output; progress, warnings and logs to standard error, so that
``thinkingearth ... > result.txt`` (or ``--json | jq``) keeps only the result. The command line
sets the verbosity for the length of one command (:func:`use_verbosity`); library code asks
:func:`verbosity` (the training progress in :mod:`thinkingearth.progress` does) and may say things
through :func:`info` and :func:`warning`.

* ``quiet``: no progress lines and no warnings; errors and the final result only.
* ``normal``: progress lines and warnings on standard error.
* ``verbose``: also ``DEBUG`` records of the ``thinkingearth`` loggers and Lightning's own
  ``INFO`` messages and warnings (accelerator banners, tips), which are otherwise silenced.

Kept light (no torch, no Lightning): every command imports it.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import PurePath
from typing import Any, Literal, get_args

__all__ = [
    "VERBOSITIES",
    "Verbosity",
    "info",
    "jsonable",
    "loading_bars_hidden",
    "print_json",
    "table",
    "use_verbosity",
    "verbosity",
    "warning",
]

Verbosity = Literal["quiet", "normal", "verbose"]
VERBOSITIES: tuple[str, ...] = get_args(Verbosity)

_current: Verbosity = "normal"


def verbosity() -> Verbosity:
    """The verbosity of the command running now (``normal`` outside a command)."""
    return _current


@contextmanager
def use_verbosity(level: Verbosity) -> Iterator[None]:
    """Run a command at ``level``; everything is put back afterwards.

    ``quiet`` ignores Python warnings; ``verbose`` sends ``DEBUG`` records of the
    ``thinkingearth`` loggers to standard error.
    """
    global _current
    if level not in VERBOSITIES:
        raise ValueError(f"unknown verbosity {level!r}; expected one of {VERBOSITIES}")
    previous = _current
    logger = logging.getLogger("thinkingearth")
    old_level = logger.level
    handler: logging.Handler | None = None
    with warnings.catch_warnings():
        if level == "quiet":
            warnings.simplefilter("ignore")
        elif level == "verbose":
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.DEBUG)
        _current = level
        try:
            yield
        finally:
            _current = previous
            if handler is not None:
                logger.removeHandler(handler)
                logger.setLevel(old_level)


@contextmanager
def loading_bars_hidden() -> Iterator[None]:
    """Within the block, transformers draws no ``Loading weights`` bar, unless ``verbose``.

    Loading a text encoder (sentence-transformers over transformers) draws that bar on standard
    error in every command that embeds words, ``-q`` included: library noise, as Lightning's
    banners are. The previous setting comes back afterwards (``weights fetch`` keeps the
    download bar of huggingface_hub, which transformers' switch also turns off).
    """
    if _current == "verbose":
        yield
        return
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:  # no transformers: no bar to hide
        yield
        return
    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


def info(message: str) -> None:
    """A progress or log line on standard error, unless quiet."""
    if _current != "quiet":
        print(message, file=sys.stderr, flush=True)


def warning(message: str) -> None:
    """``thinkingearth: warning: ...`` on standard error, unless quiet."""
    if _current != "quiet":
        print(f"thinkingearth: warning: {message}", file=sys.stderr, flush=True)


def jsonable(value: Any) -> Any:
    """Plain JSON values: paths as strings, tuples as lists, NaN and infinities as null."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if not isinstance(value, str | int | float | bool) and callable(getattr(value, "item", None)):
        return jsonable(value.item())  # numpy and torch scalars
    return value


def print_json(data: Any) -> None:
    """A command's result as one JSON document on standard output (strict: no NaN)."""
    print(json.dumps(jsonable(data), indent=2, allow_nan=False), flush=True)


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows (the first one the header) as lines of left-aligned columns two spaces apart."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
