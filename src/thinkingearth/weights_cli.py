"""``thinkingearth weights list|fetch``: published weights by name (:mod:`.models.published`).

Kept apart from ``cli.py`` and light: torch and the registry are imported only when a command
runs. Errors are :class:`~thinkingearth.errors.UserInputError` (one line, exit 2 in ``main``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from thinkingearth import output

app = typer.Typer(
    name="weights",
    help="Published weights by name: list them, fetch them into the cache.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _human(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def show_weights(as_json: bool = False) -> None:
    """Print every published checkpoint (``weights list``, ``list weights``): a table or JSON."""
    from thinkingearth.models import published

    found = published.status()
    if as_json:
        output.print_json(
            {
                "weights": [
                    {
                        "name": row.entry.name,
                        "architecture": row.entry.architecture,
                        "licence": row.entry.licence,
                        "cached": row.path is not None,
                        "path": row.path,
                        "size": row.size,
                        "repo_id": row.entry.repo_id,
                        "filename": row.entry.filename,
                        "revision": row.entry.revision,
                        "sha256": row.entry.sha256,
                        "citation": row.entry.citation,
                    }
                    for row in found
                ],
                "folders": [published.weights_dir(), published.hub_cache_dir()],
            }
        )
        return
    header = ("NAME", "ARCHITECTURE", "LICENCE", "CACHED", "SIZE", "SOURCE")
    rows = [
        (
            row.entry.name,
            row.entry.architecture,
            row.entry.licence,
            "yes" if row.path is not None else "no",
            _human(row.size),
            f"{row.entry.repo_id}/{row.entry.filename}",
        )
        for row in found
    ]
    for line in output.table([header, *rows]):
        typer.echo(line)
    typer.echo(
        f"folders: {published.weights_dir()} (${published.WEIGHTS_ENV}), then the Hugging Face "
        f"cache {published.hub_cache_dir()}; checksums are verified on fetch and load"
    )


@app.command("list")
def list_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON on standard output.")
    ] = False,
) -> None:
    """Show every published checkpoint: architecture, licence, whether it is cached, size."""
    show_weights(as_json)


@app.command("fetch")
def fetch_command(
    name: Annotated[str, typer.Argument(help="A name from `thinkingearth weights list`.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON on standard output.")
    ] = False,
) -> None:
    """Download (unless cached) and verify published weights; print the file's path.

    The download's progress bar goes to standard error; ``-q`` hides it.
    """
    from thinkingearth.models import published

    if output.verbosity() != "quiet":
        path = published.fetch(name)
    else:
        from huggingface_hub.utils import (
            are_progress_bars_disabled,
            disable_progress_bars,
            enable_progress_bars,
        )

        already_off = are_progress_bars_disabled()
        disable_progress_bars()
        try:
            path = published.fetch(name)
        finally:
            if not already_off:
                enable_progress_bars()
    if as_json:
        entry = published.get(name)
        # fetch verified the file against the entry: a full checksum is the file's, unhashed again
        sha256 = entry.sha256 if entry.full_checksum else published.sha256_of(path)
        output.print_json(
            {
                "name": entry.name,
                "path": path,
                "sha256": sha256,
                "bytes": path.stat().st_size,
                "architecture": entry.architecture,
                "licence": entry.licence,
            }
        )
        return
    typer.echo(str(path))
