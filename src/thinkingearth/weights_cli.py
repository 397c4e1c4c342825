"""``thinkingearth weights list|fetch``: published weights by name (:mod:`.models.published`).

Kept apart from ``cli.py`` and light: torch and the registry are imported only when a command
runs. Errors are :class:`~thinkingearth.errors.UserInputError` (one line, exit 2 in ``main``).
"""

from __future__ import annotations

from typing import Annotated

import typer

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


@app.command("list")
def list_command() -> None:
    """Show every published checkpoint: architecture, licence, whether it is cached, size."""
    from thinkingearth.models import published

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
        for row in published.status()
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        typer.echo("  ".join(cells).rstrip())
    typer.echo(
        f"folders: {published.weights_dir()} (${published.WEIGHTS_ENV}), then the Hugging Face "
        f"cache {published.hub_cache_dir()}; checksums are verified on fetch and load"
    )


@app.command("fetch")
def fetch_command(
    name: Annotated[str, typer.Argument(help="A name from `thinkingearth weights list`.")],
) -> None:
    """Download (unless cached) and verify published weights; print the file's path."""
    from thinkingearth.models import published

    typer.echo(str(published.fetch(name)))
