"""The one entry point: ``thinkingearth <command>``.

User errors (bad names, sizes, paths, files) print one line on stderr and exit with status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from thinkingearth.errors import UserInputError

app = typer.Typer(
    name="thinkingearth",
    help="Copernicus Earth-observation foundation models: encode, pretrain, benchmark and map.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_USER_ERROR = 2


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Output folder (must not exist or be empty).")],
    format: Annotated[
        str, typer.Option("--format", help="On-disk layout: kurosiwo, bigearthnet or native.")
    ] = "native",
    n: Annotated[int, typer.Option("--n", help="Number of tiles, patches or scenes.")] = 16,
    seed: Annotated[int, typer.Option("--seed", help="World seed.")] = 0,
    size: Annotated[
        int | None, typer.Option("--size", help="Pixels per side (default: the layout's own).")
    ] = None,
    cloud_cover: Annotated[
        float, typer.Option("--cloud-cover", help="Mean Sentinel-2 cloud fraction, 0-1.")
    ] = 0.0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a non-empty --out.")
    ] = False,
) -> None:
    """Generate the synthetic Copernicus world and write it in a real on-disk layout."""
    from thinkingearth.data.export import export_world

    start = time.perf_counter()
    path = export_world(
        out,
        format,
        n=n,
        seed=seed,
        size=size,
        cloud_cover=cloud_cover,  # type: ignore[arg-type]
        overwrite=overwrite,
    )
    typer.echo(f"wrote {n} {format} samples to {path} in {time.perf_counter() - start:.1f} s")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Output folder for the report.")] = Path(
        "demo-out"
    ),
    seed: Annotated[int, typer.Option("--seed", help="World seed.")] = 0,
    quick: Annotated[bool, typer.Option("--quick", help="Smaller everything, for tests.")] = False,
) -> None:
    """Run the whole loop on the synthetic world and write OUT/report.md with figures."""
    from thinkingearth.demo import run_demo

    report = run_demo(out, seed=seed, quick=quick, log=lambda m: typer.echo(m, err=True))
    typer.echo(f"report: {report}")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (the console script passes it to ``sys.exit``).

    Typer reports usage errors itself (exit 2); a :class:`UserInputError` from a command becomes
    one line on stderr and exit 2.
    """
    try:
        app(args=argv, prog_name="thinkingearth", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except UserInputError as exc:
        typer.echo(f"thinkingearth: error: {exc}", err=True)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
