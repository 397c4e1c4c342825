"""The one entry point: ``thinkingearth <command>``.

User errors (bad names, sizes, paths, files) print one line on stderr and exit with status 2;
anything else is a bug and keeps its traceback.

Conventions every command shares (:class:`_Command`): ``-h``/``--help``; ``-q/--quiet`` and
``-v/--verbose`` before or after the command's name (:mod:`thinkingearth.output`); results on
standard output, progress, warnings and logs on standard error; ``--json`` where a command
prints a result; flags shown as flags and options with their defaults in the help.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from typer.core import TyperCommand, TyperGroup

from thinkingearth import output
from thinkingearth.errors import UserInputError

EXIT_USER_ERROR = 2
_VERBOSITY = "thinkingearth.verbosity"  # key in the click context's meta (shared by subcommands)
_SHARED_OPTIONS = ("quiet", "verbose")


def _conventional(command: Any, ctx: Any, params: list[Any]) -> list[Any]:
    """The command's parameters with -q/-v (the root's options) added and flags shown as flags."""
    root = ctx.find_root().command
    if root is not command:
        shared = [p for p in root.params if p.name in _SHARED_OPTIONS]
        own = [p for p in params if p.name not in _SHARED_OPTIONS]
        help_option = command.get_help_option(ctx)
        params = [p for p in own if p is not help_option] + shared
        params += [help_option] if help_option is not None else []
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""  # typer would show `<bool>` beside a flag that takes no value
    return params


class _Command(TyperCommand):
    """A command with the shared conventions; it runs at the verbosity asked for."""

    def get_params(self, ctx: Any) -> list[Any]:
        """Own parameters, then -q/-v, then -h/--help."""
        return _conventional(self, ctx, super().get_params(ctx))

    def invoke(self, ctx: Any) -> Any:
        """Run the command at the verbosity of -q/-v."""
        with output.use_verbosity(ctx.meta.get(_VERBOSITY, "normal")):
            return super().invoke(ctx)


class _Group(TyperGroup):
    """A group of commands with the shared conventions (the root, ``weights``)."""

    def get_params(self, ctx: Any) -> list[Any]:
        """Own parameters (with -q/-v), then -h/--help."""
        return _conventional(self, ctx, super().get_params(ctx))


app = typer.Typer(
    name="thinkingearth",
    cls=_Group,
    help="Copernicus Earth-observation foundation models: encode, pretrain, benchmark and map.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("thinkingearth")
    except PackageNotFoundError:  # a source tree on sys.path, not installed
        return "unknown (not installed)"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"thinkingearth {_package_version()}")
        raise typer.Exit()


def _set_verbosity(ctx: typer.Context, param: typer.CallbackParam, value: bool) -> None:
    if not value:
        return
    level = "quiet" if param.name == "quiet" else "verbose"
    if ctx.meta.get(_VERBOSITY, level) != level:
        raise UserInputError("-q/--quiet and -v/--verbose contradict each other; give one")
    ctx.meta[_VERBOSITY] = level


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Show the version and exit.",
            callback=_show_version,
            is_eager=True,
            expose_value=False,
        ),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "-q",
            "--quiet",
            help="No progress and no warnings: errors and the result only.",
            callback=_set_verbosity,
            expose_value=False,
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "-v",
            "--verbose",
            help="Debug logging, Lightning's own messages included.",
            callback=_set_verbosity,
            expose_value=False,
        ),
    ] = False,
) -> None:
    """Copernicus Earth-observation foundation models: encode, pretrain, benchmark and map."""


def _log() -> Callable[[str], None] | None:
    """Where a command's progress lines go: standard error, or nowhere under -q."""
    return None if output.verbosity() == "quiet" else output.info


Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON on standard output.")]
PrintConfig = Annotated[
    bool, typer.Option("--print-config", help="Print the resolved config (YAML) and exit.")
]
Sets = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Change one setting by its dotted key, e.g. --set optim.lr=3e-4 (repeatable; "
        "the value is read as YAML).",
    ),
]
_DOTTED_KEY = re.compile(r"[A-Za-z_][\w-]*(\.[\w-]+)*")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _set_value(text: str, pair: str) -> Any:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise UserInputError(f"--set {pair}: the value is not valid YAML") from None
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 3e-4 (no dot) as a string
    return value


def dotted_overrides(pairs: Sequence[str] | None) -> dict[str, Any]:
    """``--set`` pairs as nested overrides: ``["optim.lr=3e-4"]`` -> ``{"optim": {"lr": 3e-4}}``.

    Raises:
        UserInputError: A pair without ``=``, a malformed key or a value that is not YAML.
    """
    from thinkingearth.configfile import merge

    nested: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not _DOTTED_KEY.fullmatch(key):
            raise UserInputError(
                f"--set takes KEY=VALUE with a dotted KEY, e.g. --set optim.lr=3e-4; got {pair!r}"
            )
        branch: Any = _set_value(text, pair)
        for part in reversed(key.split(".")):
            branch = {part: branch}
        nested = merge(nested, branch)
    return nested


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
    as_json: Json = False,
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
        log=_log(),
    )
    seconds = time.perf_counter() - start
    if as_json:
        output.print_json({"path": path, "format": format, "n": n, "seconds": round(seconds, 2)})
        return
    typer.echo(f"wrote {n} {format} samples to {path} in {seconds:.1f} s")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Output folder for the report.")] = Path(
        "demo-out"
    ),
    seed: Annotated[int, typer.Option("--seed", help="World seed.")] = 0,
    quick: Annotated[bool, typer.Option("--quick", help="Smaller everything, for tests.")] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a non-empty --out.")
    ] = False,
    as_json: Json = False,
) -> None:
    """Run the whole loop on the synthetic world and write OUT/report.md with figures."""
    from thinkingearth.demo import run_demo

    start = time.perf_counter()
    report = run_demo(out, seed=seed, quick=quick, overwrite=overwrite, log=output.info)
    if as_json:
        seconds = round(time.perf_counter() - start, 2)
        output.print_json({"report": report, "out": report.parent, "seconds": seconds})
        return
    typer.echo(f"report: {report}")


@app.command()
def pretrain(
    config: Annotated[
        str,
        typer.Option(
            "--config", help="A shipped config name (e.g. tiny-synthetic) or a YAML file."
        ),
    ],
    max_steps: Annotated[
        int | None,
        typer.Option("--max-steps", help="Override trainer.max_steps (default: the config's)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output folder (default: runs/pretrain/<config name>)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the latest checkpoint in OUT.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the run in OUT (its files are deleted).")
    ] = False,
    sets: Sets = None,
    print_config: PrintConfig = False,
    as_json: Json = False,
) -> None:
    """Pretrain an encoder (MAE, SoftCon, SupCon, SimCLR, cross-sensor, distillation)."""
    from thinkingearth.pretrain import load_config, run_pretrain

    overrides = dotted_overrides(sets)
    if print_config:
        import yaml

        from thinkingearth.configfile import merge

        if max_steps is not None:
            overrides = merge(overrides, {"trainer": {"max_steps": max_steps}})
        settings = load_config(config, overrides)
        typer.echo(yaml.safe_dump(settings.to_dict(), sort_keys=False).rstrip())
        return
    settings = load_config(config, overrides)
    folder = out if out is not None else Path("runs") / "pretrain" / settings.name
    result = run_pretrain(
        settings,
        folder,
        max_steps=max_steps,
        resume=resume,
        overwrite=overwrite,
        log=_log(),
    )
    if result.encoder is None:  # a rank other than 0 of a multi-process run
        return
    if as_json:
        output.print_json(
            {
                "encoder": result.encoder,
                "out": result.out,
                "steps": result.steps,
                "seconds": round(result.seconds, 2),
                "final_loss": result.final_loss,
                "resumed_from": result.resumed_from,
            }
        )
        return
    typer.echo(f"encoder: {result.encoder} ({result.steps} steps, {result.seconds:.1f} s)")


@app.command()
def shard(
    config: Annotated[
        str,
        typer.Option(
            "--config", help="A pretraining config (shipped name or YAML file): its data section."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for the shards and index.json.")],
    shard_size: Annotated[
        int, typer.Option("--shard-size", help="Samples per shard (one sensor per shard).")
    ] = 256,
    max_samples: Annotated[
        int | None,
        typer.Option(
            "--max-samples",
            help="Write at most N samples, shared among the sensors in proportion to their sizes "
            "(default: all of them).",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the shards already in OUT.")
    ] = False,
    sets: Sets = None,
    as_json: Json = False,
) -> None:
    """Write a pretraining config's data as WebDataset tar shards (read back: data.source shards)."""
    from thinkingearth.pretrain import load_config
    from thinkingearth.pretrain.shards import shard_config

    settings = load_config(config, dotted_overrides(sets))
    start = time.perf_counter()
    index = shard_config(
        settings,
        out,
        shard_size=shard_size,
        max_samples=max_samples,
        overwrite=overwrite,
        log=_log(),
    )
    seconds = time.perf_counter() - start
    size = sum(s.bytes for s in index.shards)
    if as_json:
        output.print_json(
            {
                "out": index.root,
                "samples": index.total,
                "shards": len(index.shards),
                "bytes": size,
                "groups": list(index.groups),
                "seconds": round(seconds, 2),
            }
        )
        return
    typer.echo(
        f"wrote {index.total} samples in {len(index.shards)} shards ({size / 1e6:.1f} MB) to "
        f"{index.root} in {seconds:.1f} s"
    )


@app.command()
def finetune(
    config: Annotated[
        str,
        typer.Option(
            "--config",
            help="A shipped config (synthetic-flood, synthetic-landcover, kurosiwo-flood, "
            "sen1floods11-water, bigearthnet-landcover, eurosat-ms; domain shift: "
            "synthetic-landcover-biomes, synthetic-cross-sensor, kurosiwo-leave-events-out, "
            "bigearthnet-leave-countries-out) or a YAML file.",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output folder (default: runs/finetune/<config name>)."),
    ] = None,
    data_root: Annotated[
        Path | None,
        typer.Option("--data-root", help="Root of the data set (default: the config's data.root)."),
    ] = None,
    encoder: Annotated[
        str | None,
        typer.Option(
            "--encoder",
            help="Encoder: registry config (random init), published weights name or checkpoint "
            "(default: the config's).",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="A supervised baseline instead (unet, siamese-diff, ...; default: the config's).",
        ),
    ] = None,
    protocol: Annotated[
        str | None,
        typer.Option(
            "--protocol", help="linear-probe, frozen-upernet or finetune (default: the config's)."
        ),
    ] = None,
    fraction: Annotated[
        float | None,
        typer.Option(
            "--fraction", help="Share of training labels, in (0, 1] (default: the config's)."
        ),
    ] = None,
    max_steps: Annotated[
        int | None,
        typer.Option("--max-steps", help="Override trainer.max_steps (default: the config's)."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed (default: the config's).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the latest checkpoint in OUT.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the run in OUT (its files are deleted).")
    ] = False,
    accelerator: Annotated[
        str | None,
        typer.Option("--accelerator", help="cpu, gpu or auto (default: the config's)."),
    ] = None,
    devices: Annotated[
        int | None,
        typer.Option(
            "--devices", help="Devices (processes); >1 trains with DDP (default: the config's)."
        ),
    ] = None,
    adapt: Annotated[
        str | None,
        typer.Option(
            "--adapt",
            help="Domain adaptation: none, dann, deep_coral, mmd, adabn, self_training or tent; "
            "needs a split protocol (--set split.protocol=...; default: the config's).",
        ),
    ] = None,
    oracle: Annotated[
        bool,
        typer.Option(
            "--oracle",
            help="With a split protocol: also train on the target domains' labels and report "
            "the gap to that oracle in metrics.json.",
        ),
    ] = False,
    sets: Sets = None,
    print_config: PrintConfig = False,
    as_json: Json = False,
) -> None:
    """Fine-tune a model on labelled data; save it for predict --weights OUT/model."""
    from thinkingearth.tasks.finetune_config import load_finetune_config
    from thinkingearth.tasks.finetuning import finetune as run_finetune
    from thinkingearth.tasks.finetuning import resolve_config

    overrides = dict(
        data_root=data_root,
        encoder=encoder,
        model=model,
        protocol=protocol,
        fraction=fraction,
        max_steps=max_steps,
        seed=seed,
        accelerator=accelerator,
        devices=devices,
        adapt=adapt,
        oracle=True if oracle else None,
    )
    changes = dotted_overrides(sets)  # --set first; the named flags above win over it
    base = load_finetune_config(config, changes) if changes else config
    # --encoder drops the config's model.overrides (they describe its encoder), not --set's.
    encoder_overrides = changes.get("model", {}).get("overrides")
    settings = resolve_config(base, **overrides, encoder_overrides=encoder_overrides)  # type: ignore[arg-type]
    if print_config:
        import yaml

        typer.echo(yaml.safe_dump(settings.to_dict(), sort_keys=False).rstrip())
        return
    folder = out if out is not None else Path("runs") / "finetune" / settings.name
    result = run_finetune(settings, folder, resume=resume, overwrite=overwrite, log=_log())
    metric = settings.task.primary_metric[0]
    if as_json:
        output.print_json(
            {
                "model": result.model,
                "report": result.report,
                "metrics_path": result.metrics_path,
                "out": result.out,
                "primary_metric": metric,
                "metrics": result.metrics,
                "steps": result.steps,
                "best_step": result.best_step,
                "seconds": round(result.seconds, 2),
                "resumed_from": result.resumed_from,
            }
        )
        return
    typer.echo(
        f"model: {result.model} (test {metric} {result.metrics.get(metric, float('nan')):.4f}, "
        f"{result.steps} steps, {result.seconds:.1f} s); report: {result.report}"
    )


@app.command()
def predict(
    task: Annotated[str, typer.Option("--task", help="What to map: flood, water or landcover.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Output class map COG (a folder with --scenes); beside it go "
            "NAME_uncertainty.tif, QGIS styles (.qml), class names (.tif.aux.xml) and a PNG "
            "quicklook.",
        ),
    ],
    image: Annotated[
        str | None,
        typer.Option("--image", help="Image to map (water, landcover); with --scenes a file name."),
    ] = None,
    pre: Annotated[
        str | None,
        typer.Option("--pre", help="Pre-event SAR image (flood); with --scenes a file name."),
    ] = None,
    pre2: Annotated[
        str | None,
        typer.Option("--pre2", help="Second, older pre-event image (flood, optional)."),
    ] = None,
    post: Annotated[
        str | None,
        typer.Option("--post", help="Post-event SAR image (flood); its grid is the output's."),
    ] = None,
    scenes: Annotated[
        Path | None,
        typer.Option(
            "--scenes",
            help="Many scenes: a folder (of scene folders or images) or a JSON of STAC items.",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="threshold: Otsu on Sentinel-1 VV, needs no training (default for flood and "
            "water without --weights).",
        ),
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(
            "--weights", help="Trained task checkpoint (.safetensors with its .json, save_task)."
        ),
    ] = None,
    bands: Annotated[
        str | None,
        typer.Option(
            "--bands",
            help="Comma-separated registry names of every band of the input file, in file order "
            "(default: the file's band descriptions; they must agree). Bands the model does not "
            "need are ignored.",
        ),
    ] = None,
    sar_units: Annotated[
        str,
        typer.Option(
            "--sar-units",
            help="Units of SAR inputs: auto (decided per file from its values), linear (sigma0) "
            "or db; case-insensitive. Stated units the values contradict are an error.",
        ),
    ] = "auto",
    tile: Annotated[
        int | None, typer.Option("--tile", help="Tile side in pixels (default: the model's).")
    ] = None,
    overlap: Annotated[
        int | None,
        typer.Option("--overlap", help="Tile overlap in pixels (default: the model's)."),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", help="Tiles per forward pass (default: the model's)."),
    ] = None,
    quicklook: Annotated[
        bool, typer.Option("--quicklook/--no-quicklook", help="Write a PNG quicklook.")
    ] = True,
    scheduler: Annotated[
        str | None,
        typer.Option("--scheduler", help="Dask scheduler address (default: a LocalCluster)."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Local Dask workers (default: one per core).")
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace an existing --out (with --scenes: redo scenes whose output exists).",
        ),
    ] = False,
    date: Annotated[
        str | None,
        typer.Option(
            "--date",
            help="Acquisition date of --image (YYYY-MM-DD, UTC); default: the file's "
            "TIFFTAG_DATETIME, else a date in its name.",
        ),
    ] = None,
    pre_date: Annotated[
        str | None, typer.Option("--pre-date", help="Acquisition date of --pre (YYYY-MM-DD).")
    ] = None,
    pre2_date: Annotated[
        str | None, typer.Option("--pre2-date", help="Acquisition date of --pre2 (YYYY-MM-DD).")
    ] = None,
    post_date: Annotated[
        str | None, typer.Option("--post-date", help="Acquisition date of --post (YYYY-MM-DD).")
    ] = None,
    device: Annotated[
        str,
        typer.Option(
            "--device", help="cpu, cuda or auto (cuda when PyTorch sees a GPU; int8: cpu)."
        ),
    ] = "auto",
    precision: Annotated[
        str,
        typer.Option(
            "--precision",
            help="fp32, or int8: the encoder's blocks quantised (ONNX Runtime, CPU; "
            "--weights on the any-sensor encoder only).",
        ),
    ] = "fp32",
    int8_cache: Annotated[
        Path | None,
        typer.Option(
            "--int8-cache",
            help="With --precision int8: folder of the quantised graphs, reused by later runs "
            "(named by a digest of the weights) [default: $THINKINGEARTH_CACHE/int8, else "
            "~/.cache/thinkingearth/int8].",
            show_default=False,
        ),
    ] = None,
    uncertainty: Annotated[
        str,
        typer.Option(
            "--uncertainty",
            help="What NAME_uncertainty.tif holds, in nats: total (one band, entropy) or split "
            "(entropy, aleatoric, epistemic; trained --weights only: the epistemic part comes "
            "from their weight samples, MC dropout or an ensemble); case-insensitive.",
        ),
    ] = "total",
    as_json: Json = False,
) -> None:
    """Map a whole scene (or many) to a georeferenced COG with classes and uncertainty."""
    import dataclasses
    import warnings

    from thinkingearth.data.scene import Acquisition, parse_date, parse_sar_units
    from thinkingearth.infer.model import TASKS

    if task not in TASKS:
        raise UserInputError(f"unknown task {task!r}; expected one of: {', '.join(TASKS)}")
    from thinkingearth.infer.predictor import check_uncertainty, parse_uncertainty

    uncertainty_output = parse_uncertainty(uncertainty)
    # The output is checked before any model is loaded or pixel read.
    from thinkingearth.fileio import check_writable_parent

    if scenes is not None:
        if out.exists() and not out.is_dir():
            raise UserInputError(f"--out {out} is a file; with --scenes it is the output folder")
        check_writable_parent(out / "scene.tif")
    else:
        from thinkingearth.infer.predictor import check_output_path

        given = [Path(p) for p in (image, pre2, pre, post) if p is not None]
        check_output_path(out, given)  # an input is never an output, --overwrite or not
        from thinkingearth.infer.predictor import check_new_outputs

        check_new_outputs(out, quicklook=quicklook, overwrite=overwrite)  # sidecars too
    sar_units_option = parse_sar_units(sar_units)
    from thinkingearth.infer.predictor import resolve_device
    from thinkingearth.infer.task_model import PRECISIONS

    if precision not in PRECISIONS:
        raise UserInputError(
            f"unknown --precision {precision!r}; expected one of: {', '.join(PRECISIONS)}"
        )
    torch_device = resolve_device(device, precision=precision)
    if scenes is not None and device.strip().lower() == "cuda":
        raise UserInputError(
            "--scenes runs on CPU Dask workers; --device cuda maps one scene at a time "
            "(--image or --pre/--post): use --device cpu or auto with --scenes"
        )
    date_flags = {
        "--image": ("--date", date),
        "--pre2": ("--pre2-date", pre2_date),
        "--pre": ("--pre-date", pre_date),
        "--post": ("--post-date", post_date),
    }
    days = {
        option: parse_date(value, flag)
        for option, (flag, value) in date_flags.items()
        if value is not None
    }
    if days and scenes is not None:
        given = ", ".join(date_flags[o][0] for o in days)
        raise UserInputError(
            f"{given}: a date flag dates one image, not --scenes; each scene's dates come from "
            "its files (TIFFTAG_DATETIME or a YYYY-MM-DD in the file name)"
        )
    if task == "flood" and "--image" in days:
        raise UserInputError(
            "--task flood takes --pre-date, --post-date (and --pre2-date), not --date"
        )
    if task != "flood" and set(days) - {"--image"}:
        raise UserInputError(f"--task {task} takes --date, not --pre-date/--post-date/--pre2-date")
    images = {"--image": image, "--pre2": pre2, "--pre": pre, "--post": post}
    for option in days:
        if images[option] is None:
            raise UserInputError(f"{date_flags[option][0]} is the date of {option}; give {option}")
    if weights is not None:
        if model is not None:
            raise UserInputError("give --model or --weights, not both")
        from thinkingearth.infer.task_model import default_int8_cache, load_task

        cache = None
        if precision == "int8":
            from thinkingearth.fileio import check_writable_parent

            cache = Path(int8_cache or default_int8_cache()).expanduser()
            check_writable_parent(cache / "graph.onnx")  # the folder may be created, or written
        scene_model = load_task(weights, precision=precision, cache_dir=cache)  # type: ignore[arg-type]
        if cache is not None:
            output.info(f"int8 graphs: {cache} (built once per checkpoint, then reused)")
        if scene_model.task != task:
            raise UserInputError(
                f"--weights {weights} holds a {scene_model.task} model; it cannot map --task {task}"
            )
    else:
        if model is None and task in ("flood", "water"):
            model = "threshold"
        if model != "threshold":
            what = (
                f"unknown --model {model!r}" if model else f"--task {task} needs trained --weights"
            )
            raise UserInputError(
                f"{what}; --model threshold (flood, water) or --weights CHECKPOINT.safetensors"
            )
        if precision == "int8":
            raise UserInputError(
                "--precision int8 quantises a trained encoder (--weights); the threshold model "
                "has no network weights to quantise: use --precision fp32"
            )
        from thinkingearth.infer.threshold import threshold_model

        scene_model = threshold_model(task)  # type: ignore[arg-type]
    check_uncertainty(scene_model, uncertainty_output)
    changes = {
        k: v
        for k, v in (("tile", tile), ("overlap", overlap), ("batch_size", batch_size))
        if v is not None
    }
    if changes:
        scene_model = dataclasses.replace(scene_model, **changes)
    band_names = tuple(b.strip() for b in bands.split(",") if b.strip()) if bands else None
    if bands is not None and not band_names:
        raise UserInputError("--bands needs comma-separated band names, e.g. --bands VV,VH")
    if task == "flood" and image is not None:
        raise UserInputError("--task flood takes --pre, --post (and --pre2), not --image")
    if task != "flood" and (pre is not None or post is not None or pre2 is not None):
        raise UserInputError(f"--task {task} takes --image, not --pre/--post/--pre2")

    echo = _log()  # progress and notes on stderr; nothing under -q

    def show_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
        output.warning(str(message))

    with warnings.catch_warnings():
        warnings.showwarning = show_warning  # type: ignore[assignment]
        if scenes is not None:
            from thinkingearth.infer.batch import InputNames, find_scenes, plan_jobs

            names = InputNames(pre=pre, post=post, pre2=pre2, image=image, bands=band_names)
            jobs = plan_jobs(find_scenes(scenes, task, names, scene_model), out)  # type: ignore[arg-type]
            _run_scene_jobs(
                jobs,
                scene_model,
                out,
                "predicted",
                as_json,
                sar_units=sar_units_option,
                quicklook=quicklook,
                overwrite=overwrite,
                scheduler=scheduler,
                workers=workers,
                log=echo,
                uncertainty=uncertainty_output,
            )
            return
        from thinkingearth.infer.predictor import predict_scene
        from thinkingearth.infer.writers import uncertainty_path

        if task == "flood":
            if pre is None or post is None:
                raise UserInputError("--task flood needs --pre PRE.tif and --post POST.tif")
            named = [("--pre2", pre2), ("--pre", pre), ("--post", post)]
        else:
            if image is None:
                raise UserInputError(f"--task {task} needs --image IMAGE.tif (or --scenes)")
            named = [("--image", image)]
        inputs = [
            Acquisition.from_path(option, Path(path), band_names, days.get(option))
            for option, path in named
            if path is not None
        ]
        result_one = predict_scene(
            scene_model,
            inputs,
            out,
            sar_units=sar_units_option,
            quicklook=quicklook,
            device=torch_device,
            log=echo,
            uncertainty=uncertainty_output,
        )
    fractions = dict(zip(scene_model.classes, result_one.class_fractions, strict=True))
    if as_json:
        output.print_json(
            {
                "path": result_one.path,
                "uncertainty": uncertainty_path(result_one.path),
                "quicklook": result_one.quicklook,
                "shape": result_one.shape,
                "class_fractions": fractions,
                "valid_fraction": result_one.valid_fraction,
                "seconds": round(result_one.seconds, 2),
            }
        )
        return
    shares = ", ".join(f"{name} {share:.1%}" for name, share in fractions.items())
    typer.echo(f"wrote {result_one.path} ({shares}; {result_one.valid_fraction:.0%} valid)")


@app.command()
def zeroshot(
    weights: Annotated[
        Path,
        typer.Option(
            "--weights",
            help="Vision-language model: the folder a VL pretrain run wrote, or its "
            "vl_model.safetensors (with the .json beside it).",
        ),
    ],
    classes: Annotated[
        str,
        typer.Option(
            "--classes", help='Comma-separated class names, e.g. "water,forest,cropland" (2+).'
        ),
    ],
    image: Annotated[
        Path | None,
        typer.Option(
            "--image",
            help="Image to map (GeoTIFF/COG); with --scenes the file name inside each scene "
            "folder.",
        ),
    ] = None,
    scenes: Annotated[
        Path | None,
        typer.Option(
            "--scenes",
            help="Many scenes, as predict --scenes: a folder of scene folders (each holding "
            "--image NAME) or of images, or a JSON of STAC items (asset --image NAME).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Output class map COG (default: IMAGE-STEM_zeroshot.tif here; with --scenes "
            "the output folder, one SCENE.tif per scene); beside it go NAME_uncertainty.tif, "
            "QGIS styles, class names and a PNG quicklook.",
        ),
    ] = None,
    templates: Annotated[
        list[str] | None,
        typer.Option(
            "--templates",
            metavar="TEMPLATE",
            help="A prompt template with {} for the class name, e.g. 'a satellite image of "
            "{}.' (repeatable; default: the shipped prompt ensemble).",
        ),
    ] = None,
    bands: Annotated[
        str | None,
        typer.Option(
            "--bands",
            help="Comma-separated registry names of every band of the file, in file order "
            "(default: the file's band descriptions; they must agree).",
        ),
    ] = None,
    sensor: Annotated[
        str | None,
        typer.Option(
            "--sensor",
            help="Registry sensor of the image (default: from its band names, preferring the "
            "sensors the model was aligned on).",
        ),
    ] = None,
    sar_units: Annotated[
        str,
        typer.Option(
            "--sar-units",
            help="Units of SAR inputs: auto (decided from the values), linear (sigma0) or db; "
            "case-insensitive. Stated units the values contradict are an error.",
        ),
    ] = "auto",
    date: Annotated[
        str | None,
        typer.Option(
            "--date",
            help="Acquisition date (YYYY-MM-DD, UTC); default: the file's TIFFTAG_DATETIME, "
            "else a date in its name.",
        ),
    ] = None,
    tile: Annotated[
        int | None,
        typer.Option("--tile", help="Tile side in pixels (default: the encoder's image size)."),
    ] = None,
    overlap: Annotated[
        int | None,
        typer.Option("--overlap", help="Tile overlap in pixels (default: a quarter tile)."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Tiles per forward pass.")] = 8,
    quicklook: Annotated[
        bool, typer.Option("--quicklook/--no-quicklook", help="Write a PNG quicklook.")
    ] = True,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace an existing --out and its files (with --scenes: redo scenes whose "
            "output exists).",
        ),
    ] = False,
    scheduler: Annotated[
        str | None,
        typer.Option("--scheduler", help="Dask scheduler address (default: a LocalCluster)."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Local Dask workers (default: one per core).")
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="cpu, cuda or auto (cuda when PyTorch sees a GPU).")
    ] = "auto",
    as_json: Json = False,
) -> None:
    """Map a scene (or many) with class names: zero-shot classes from a vision-language model."""
    import warnings

    from thinkingearth.data.scene import Acquisition, parse_date, parse_sar_units
    from thinkingearth.infer.predictor import (
        check_new_outputs,
        check_output_path,
        predict_scene,
        resolve_device,
    )
    from thinkingearth.infer.writers import uncertainty_path
    from thinkingearth.vl.zeroshot import (
        check_templates,
        image_sensor_bands,
        parse_classnames,
        zeroshot_scene_model,
    )

    names = parse_classnames(classes)
    from thinkingearth.vl.prompts import DEFAULT_TEMPLATES

    prompts = check_templates(templates) if templates else DEFAULT_TEMPLATES
    if scenes is not None:
        _zeroshot_scenes(
            weights, names, prompts, scenes, image, out, bands=bands, sensor=sensor,
            sar_units=sar_units, date=date, tile=tile, overlap=overlap, batch_size=batch_size,
            quicklook=quicklook, overwrite=overwrite, scheduler=scheduler, workers=workers,
            device=device, as_json=as_json,
        )  # fmt: skip
        return
    if image is None:
        raise UserInputError("zeroshot needs --image IMAGE.tif (or --scenes FOLDER)")
    if out is None:
        out = Path(f"{image.stem}_zeroshot.tif")
    # Outputs are checked before the model is loaded or a pixel read.
    check_output_path(out, [image])
    check_new_outputs(out, quicklook=quicklook, overwrite=overwrite)  # sidecars too
    units = parse_sar_units(sar_units)
    torch_device = resolve_device(device)
    day = parse_date(date, "--date") if date is not None else None
    band_names = tuple(b.strip() for b in bands.split(",") if b.strip()) if bands else None
    if bands is not None and not band_names:
        raise UserInputError("--bands needs comma-separated band names, e.g. --bands B02,B03,B04")
    if not image.is_file():
        raise UserInputError(f"--image {image} does not exist")
    from thinkingearth.vl.model import load_vl_model

    model = load_vl_model(weights)
    image_sensor, image_bands = image_sensor_bands(
        image, bands=band_names, sensor=sensor, prefer=tuple(model.sensors)
    )
    echo = _log()

    def show_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
        output.warning(str(message))

    with warnings.catch_warnings():
        warnings.showwarning = show_warning  # type: ignore[assignment]
        scene_model = zeroshot_scene_model(
            model,
            names,
            image_sensor,
            image_bands,
            templates=prompts,
            tile=tile,
            overlap=overlap,
            batch_size=batch_size,
            name=weights.stem if weights.is_file() else weights.name,
            tags={"WEIGHTS": str(weights), "WEIGHTS_SHA256": model.sha256 or "unknown"},
        )
        if echo is not None:
            echo(
                f"zero-shot: {len(names)} classes × {len(prompts)} prompt templates; "
                f"{image_sensor} bands {','.join(image_bands)}"
            )
        result = predict_scene(
            scene_model,
            [Acquisition.from_path("--image", image, band_names, day)],
            out,
            sar_units=units,
            quicklook=quicklook,
            device=torch_device,
            log=echo,
        )
    fractions = dict(zip(scene_model.classes, result.class_fractions, strict=True))
    if as_json:
        output.print_json(
            {
                "path": result.path,
                "uncertainty": uncertainty_path(result.path),
                "quicklook": result.quicklook,
                "shape": result.shape,
                "sensor": image_sensor,
                "bands": list(image_bands),
                "class_fractions": fractions,
                "valid_fraction": result.valid_fraction,
                "seconds": round(result.seconds, 2),
            }
        )
        return
    shares = ", ".join(f"{name} {share:.1%}" for name, share in fractions.items())
    typer.echo(f"wrote {result.path} ({shares}; {result.valid_fraction:.0%} valid)")


def _zeroshot_scenes(
    weights: Path,
    names: tuple[str, ...],
    prompts: tuple[str, ...],
    scenes: Path,
    image: Path | None,
    out: Path | None,
    *,
    bands: str | None,
    sensor: str | None,
    sar_units: str,
    date: str | None,
    tile: int | None,
    overlap: int | None,
    batch_size: int,
    quicklook: bool,
    overwrite: bool,
    scheduler: str | None,
    workers: int | None,
    device: str,
    as_json: bool,
) -> None:
    """``zeroshot --scenes``: predict --scenes' fan-out, the model built once per worker."""
    import functools
    import warnings

    from thinkingearth.data.scene import parse_sar_units
    from thinkingearth.fileio import check_writable_parent
    from thinkingearth.infer.batch import plan_jobs
    from thinkingearth.vl.zeroshot import (
        load_zeroshot_scene_model,
        zeroshot_scene_model,
        zeroshot_scenes,
    )

    # Everything is checked before the model is loaded or a pixel read; nothing is written.
    if out is None:
        raise UserInputError("--scenes needs --out OUTDIR, the folder of the scenes' maps")
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} is a file; with --scenes it is the output folder")
    if out.resolve() == scenes.resolve():
        raise UserInputError(f"--out {out} is the --scenes folder; give another output folder")
    check_writable_parent(out / "scene.tif")
    if date is not None:
        raise UserInputError(
            "--date dates one image, not --scenes; each scene's date comes from its file "
            "(TIFFTAG_DATETIME or a YYYY-MM-DD in the file name)"
        )
    if device.strip().lower() == "cuda":
        raise UserInputError(
            "--scenes runs on CPU Dask workers; --device cuda maps one --image at a time: use "
            "--device cpu or auto with --scenes"
        )
    units = parse_sar_units(sar_units)
    band_names = tuple(b.strip() for b in bands.split(",") if b.strip()) if bands else None
    if bands is not None and not band_names:
        raise UserInputError("--bands needs comma-separated band names, e.g. --bands B02,B03,B04")
    from thinkingearth.vl.model import load_vl_model

    model = load_vl_model(weights)
    found, image_sensor, image_bands = zeroshot_scenes(
        scenes, image, bands=band_names, sensor=sensor, prefer=tuple(model.sensors), ignore=out
    )
    jobs = plan_jobs(found, out)
    options: dict[str, Any] = {
        "templates": prompts,
        "tile": tile,
        "overlap": overlap,
        "batch_size": batch_size,
        "name": weights.stem if weights.is_file() else weights.name,
        "tags": {"WEIGHTS": str(weights), "WEIGHTS_SHA256": model.sha256 or "unknown"},
    }
    echo = _log()

    def show_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
        output.warning(str(message))

    with warnings.catch_warnings():
        warnings.showwarning = show_warning  # type: ignore[assignment]
        scene_model = zeroshot_scene_model(model, names, image_sensor, image_bands, **options)
        if echo is not None:
            echo(
                f"zero-shot: {len(names)} classes × {len(prompts)} prompt templates; "
                f"{image_sensor} bands {','.join(image_bands)}; {len(jobs)} scene(s)"
            )
        # Workers rebuild the model from its weights (each once) instead of unpickling it per
        # scene: the recipe is a path and a few names.
        build = functools.partial(
            load_zeroshot_scene_model, weights, names, image_sensor, image_bands, **options
        )
        _run_scene_jobs(
            jobs,
            scene_model,
            out,
            "mapped",
            as_json,
            {"sensor": image_sensor, "bands": list(image_bands)},
            sar_units=units,
            quicklook=quicklook,
            overwrite=overwrite,
            scheduler=scheduler,
            workers=workers,
            log=echo,
            build=build,
        )


def _run_scene_jobs(
    jobs: Any,
    scene_model: Any,
    out: Path,
    verb: str,
    as_json: bool,
    facts: dict[str, Any] | None = None,
    **options: Any,
) -> None:
    """Run many scenes (``predict_many``), sweep temporaries if stopped, report, fail if any did.

    Args:
        jobs: The planned scenes.
        scene_model: The model (workers may rebuild it: ``options["build"]``).
        out: The output folder, as reported.
        verb: What was done to a scene, for the summary line (``predicted``, ``mapped``).
        as_json: Print the summary as JSON.
        facts: More keys of the JSON summary.
        **options: The keyword arguments of ``predict_many``.

    Raises:
        UserInputError: When some scenes failed (they are retried by running again).
    """
    from thinkingearth.fileio import remove_temporaries
    from thinkingearth.infer.batch import predict_many
    from thinkingearth.stopping import Terminated

    try:
        result = predict_many(jobs, scene_model, **options)
    except (KeyboardInterrupt, Terminated):
        # Workers stopped mid-scene leave their temporary files: sweep them here.
        for folder in {job.out.parent for job in jobs}:
            remove_temporaries(folder, [job.out.stem for job in jobs])
        raise
    if as_json:
        output.print_json(
            {
                "out": out,
                **(facts or {}),
                "done": result.done,
                "skipped": result.skipped,
                "failed": result.failed,
                "seconds": round(result.seconds, 2),
            }
        )
    else:
        typer.echo(
            f"{len(result.done)} scene(s) {verb}, {len(result.skipped)} skipped (output "
            f"exists), {len(result.failed)} failed, in {result.seconds:.1f} s: {out}"
        )
    if result.failed:
        raise UserInputError(
            f"{len(result.failed)} of {len(jobs)} scene(s) failed (see above); run again to "
            "retry them"
        )


@app.command()
def embed(
    weights: Annotated[
        Path,
        typer.Option(
            "--weights",
            help="Vision-language model: the folder a VL pretrain run wrote, or its "
            "vl_model.safetensors.",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Index folder; an existing index (same model) gets the new rows only."
        ),
    ],
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Root of a data set read by --reader (default: none)."),
    ] = None,
    reader: Annotated[
        str | None,
        typer.Option(
            "--reader",
            help="Reader of --data: bigearthnet, kurosiwo, sen1floods11, eurosat (eurosat-ms), "
            "copernicus-bench, ... (default: none).",
        ),
    ] = None,
    splits: Annotated[
        str, typer.Option("--splits", help="Comma-separated splits of --reader to embed.")
    ] = "train,val,test",
    scenes: Annotated[
        Path | None,
        typer.Option(
            "--scenes",
            help="A folder of GeoTIFFs instead: every file whose band descriptions name a "
            "sensor's bands, tiled.",
        ),
    ] = None,
    sensors: Annotated[
        str | None,
        typer.Option(
            "--sensors",
            help="With --scenes: only files of these comma-separated sensors (default: any).",
        ),
    ] = None,
    tile: Annotated[
        int | None,
        typer.Option("--tile", help="With --scenes: tile side in pixels (default: the model's)."),
    ] = None,
    overlap: Annotated[
        int, typer.Option("--overlap", help="With --scenes: tile overlap in pixels.")
    ] = 0,
    sar_units: Annotated[
        str,
        typer.Option(
            "--sar-units",
            help="With --scenes: units of SAR files: auto (decided per file), linear or db; "
            "case-insensitive. Stated units the values contradict are an error.",
        ),
    ] = "auto",
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Samples or tiles per forward pass.")
    ] = 32,
    scheduler: Annotated[
        str | None,
        typer.Option("--scheduler", help="Dask scheduler address (default: a LocalCluster)."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Local Dask workers (default: one per core).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Build a new index even where one exists.")
    ] = False,
    as_json: Json = False,
) -> None:
    """Embed a data set or a folder of scenes into a searchable index (GeoParquet + ANN)."""
    import warnings

    from thinkingearth.vl.embed import embed as run_embed

    split_names = [s.strip() for s in splits.split(",") if s.strip()]
    if not split_names:
        raise UserInputError(f"--splits needs comma-separated split names, got {splits!r}")
    sensor_names = None
    if sensors is not None:
        sensor_names = [s.strip() for s in sensors.split(",") if s.strip()]
        if not sensor_names:
            raise UserInputError(f"--sensors needs comma-separated sensor names, got {sensors!r}")

    def show_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
        output.warning(str(message))

    with warnings.catch_warnings():
        warnings.showwarning = show_warning  # type: ignore[assignment]
        result = run_embed(
            weights,
            out,
            data=data,
            reader=reader,
            splits=split_names,
            scenes=scenes,
            sensors=sensor_names,
            tile=tile,
            overlap=overlap,
            sar_units=sar_units,
            batch_size=batch_size,
            overwrite=overwrite,
            scheduler=scheduler,
            workers=workers,
            log=_log(),
        )
    if as_json:
        output.print_json(
            {
                "index": result.index,
                "created": result.created,
                "added": result.added,
                "rows": result.rows,
                "skipped": result.skipped,
                "passed_over": result.passed_over,
                "seconds": round(result.seconds, 2),
            }
        )
        return
    verb = "created" if result.created else "updated"
    typer.echo(
        f"{verb} {result.index}: {result.added} row(s) added, {result.skipped} already there, "
        f"{result.rows} in all ({result.seconds:.1f} s)"
    )


@app.command()
def search(
    text: Annotated[str, typer.Argument(help="What to look for, in words.")],
    index: Annotated[Path, typer.Option("--index", help="Index folder written by embed.")],
    k: Annotated[int, typer.Option("--k", help="Number of hits.")] = 20,
    bbox: Annotated[
        str | None,
        typer.Option(
            "--bbox", help="Only footprints meeting W,S,E,N (degrees, WGS84) (default: anywhere)."
        ),
    ] = None,
    after: Annotated[
        str | None,
        typer.Option("--after", help="Only acquired on or after YYYY-MM-DD (default: any time)."),
    ] = None,
    before: Annotated[
        str | None,
        typer.Option("--before", help="Only acquired on or before YYYY-MM-DD (default: any time)."),
    ] = None,
    sensor: Annotated[
        str | None,
        typer.Option("--sensor", help="Only this sensor, e.g. sentinel-1-grd (default: any)."),
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(
            "--weights",
            help="The model (default: the one the index records; another model is refused).",
        ),
    ] = None,
    html: Annotated[
        Path,
        typer.Option(
            "--html", help="Self-contained HTML page of the hits on a map, with thumbnails."
        ),
    ] = Path("search-results.html"),
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --html page.")
    ] = False,
    as_json: Json = False,
) -> None:
    """Search an embedding index in words: ranked hits, and an HTML page with a map."""
    from thinkingearth.vl.search import run_search

    result = run_search(
        text,
        index,
        k=k,
        bbox=bbox,
        after=after,
        before=before,
        sensor=sensor,
        weights=weights,
        html=html,
        overwrite=overwrite,
    )
    if as_json:
        output.print_json([hit.to_dict() for hit in result.hits])
    else:
        rows = [("RANK", "SCORE", "ID", "SENSOR", "TIME", "CENTRE")]
        for hit in result.hits:
            rows.append(
                (
                    str(hit.rank),
                    f"{hit.score:.4f}",
                    hit.id,
                    hit.sensor,
                    hit.time or "-",
                    hit.centre_text(),
                )
            )
        for line in output.table(rows):
            typer.echo(line)
    if _log() is not None:
        output.info(f"{len(result.hits)} hit(s) in {result.seconds * 1000:.0f} ms; page: {html}")


@app.command()
def patch(
    config: Annotated[
        str,
        typer.Option(
            "--config",
            help="A shipped patching config name (e.g. synthetic-landcover) or a YAML file.",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Output folder: patching.json, patching.md, config.yaml (+ vl_model.*)."
        ),
    ],
    weights: Annotated[
        Path | None,
        typer.Option(
            "--weights",
            help="The VL model to patch: the folder a VL pretrain run wrote, or its "
            "vl_model.safetensors (default: the config's weights).",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the report and model already in OUT.")
    ] = False,
    sets: Sets = None,
    print_config: PrintConfig = False,
    as_json: Json = False,
) -> None:
    """Patch a VL model on a task (Mind the Modality Gap, stage a) and score every α."""
    from thinkingearth.configfile import merge
    from thinkingearth.vl.modality_gap import load_patching_config, run_patching

    overrides = dotted_overrides(sets)  # --set first; --weights wins over it
    if weights is not None:
        overrides = merge(overrides, {"weights": str(weights)})
    settings = load_patching_config(config, overrides)
    if print_config:
        import yaml

        from thinkingearth.configfile import plain

        typer.echo(yaml.safe_dump(plain(dataclasses.asdict(settings)), sort_keys=False).rstrip())
        return
    start = time.perf_counter()
    result = run_patching(settings, out, overwrite=overwrite, log=_log())
    seconds = time.perf_counter() - start
    model = out / "vl_model.safetensors" if settings.save_alpha is not None else None
    if as_json:
        output.print_json(
            {
                "report": out / "patching.json",
                "table": out / "patching.md",
                "model": model,
                "save_alpha": settings.save_alpha,
                "out": out,
                "task": result.task,
                "control": list(result.control),
                "alphas": list(result.alphas),
                "accuracy": result.accuracy,
                "chance": result.chance,
                "seconds": round(seconds, 2),
            }
        )
        return
    names = [result.task, *result.control]
    kinds = {n: "TASK" if n == result.task else "CONTROL" for n in names}
    rows = [("ALPHA", *(f"{n.upper()} ({kinds[n]})" for n in names))]
    for i, alpha in enumerate(result.alphas):
        rows.append((f"{alpha:g}", *(f"{result.accuracy[n][i]:.3f}" for n in names)))
    rows.append(("chance", *(f"{result.chance[n]:.3f}" for n in names)))
    for line in output.table(rows):
        typer.echo(line)
    saved = f"; model at α = {settings.save_alpha:g}: {model}" if model is not None else ""
    typer.echo(f"report: {out / 'patching.md'} ({seconds:.1f} s){saved}")


#: Suite fields that say what a suite is, not how it runs: ``--set`` leaves them alone.
_SUITE_IDENTITY = ("name", "description", "tasks", "hidden")


def _suite_value(value: Any, hint: Any, key: str) -> Any:
    """``value`` checked against the Suite field annotation ``hint`` (lists become tuples)."""
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                try:
                    return _suite_value(value, arg, key)
                except UserInputError:
                    pass
        names = " or ".join(
            "null" if a is type(None) else getattr(a, "__name__", str(a)) for a in args
        )
        raise UserInputError(f"{key} is {value!r}; expected {names}")
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise UserInputError(f"{key} is {value!r}; expected a list, e.g. [1, 2]")
        return tuple(_suite_value(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if origin is Mapping:
        if not isinstance(value, Mapping):
            raise UserInputError(f"{key} is {value!r}; expected a mapping")
        return {str(k): _suite_value(v, args[1], f"{key}.{k}") for k, v in value.items()}
    checks: dict[Any, tuple[Callable[[Any], bool], str]] = {
        bool: (lambda v: isinstance(v, bool), "true or false"),
        int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
        float: (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
        str: (lambda v: isinstance(v, str), "a string"),
    }
    check, expected = checks[hint]
    if not check(value):
        raise UserInputError(f"{key} is {value!r}; expected {expected}")
    return float(value) if hint is float else value


def _suite_overrides(suite: Any, nested: Mapping[str, Any]) -> dict[str, Any]:
    """``--set`` overrides of a Suite's fields, checked; a mapping field changes key by key.

    Raises:
        UserInputError: An unknown or fixed field, an unknown key of a mapping field, a value of
            the wrong type.
    """
    import typing

    from thinkingearth.bench.suites import Suite

    hints = typing.get_type_hints(Suite)
    settable = [f.name for f in dataclasses.fields(Suite) if f.name not in _SUITE_IDENTITY]
    changes: dict[str, Any] = {}
    for key, value in nested.items():
        if key not in settable:
            raise UserInputError(
                f"unknown suite setting {key!r} (--set); expected one of: {', '.join(settable)}"
            )
        if typing.get_origin(hints[key]) is Mapping and isinstance(value, Mapping):
            current = dict(getattr(suite, key))
            unknown = sorted(set(value) - set(current))
            if unknown:
                raise UserInputError(
                    f"unknown key {key}.{unknown[0]} (--set); expected one of: "
                    + ", ".join(f"{key}.{k}" for k in current)
                )
            value = {**current, **value}
        changes[key] = _suite_value(value, hints[key], key)
    return changes


def _print_suite(spec: Any, **flags: Any) -> None:
    """``bench --print-config``: the suite's settings as YAML, its tasks by name."""
    import yaml

    from thinkingearth.configfile import plain

    changes = {key: value for key, value in flags.items() if value is not None}
    if changes:
        spec = dataclasses.replace(spec, **changes)
    settings: dict[str, Any] = {"name": spec.name, "tasks": [t.name for t in spec.tasks]}
    for field in dataclasses.fields(spec):
        if field.name not in _SUITE_IDENTITY:
            settings[field.name] = getattr(spec, field.name)
    typer.echo(yaml.safe_dump(plain(settings), sort_keys=False).rstrip())


@app.command()
def bench(
    suite: Annotated[
        str,
        typer.Option(
            "--suite",
            help="synthetic-lite, synthetic, noisy-labels, kurosiwo, copernicus-bench, "
            "vl-synthetic or domain-shift.",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Output folder; finished runs in it are not run again (required unless "
            "--print-config).",
        ),
    ] = None,
    models: Annotated[
        str | None,
        typer.Option(
            "--models",
            help="Comma-separated: baselines (wrn-eca, resnet18, resnet50, unet, siamese-diff, "
            "siamese-concat, vit-scratch), encoder names (random init), checkpoint paths, "
            "random:PATH, vision-language models (a VL pretrain folder or vl_model.safetensors; "
            "a VL pretrain config name: trained per seed under OUT/models) or chance "
            "(default: the suite's).",
        ),
    ] = None,
    data_root: Annotated[
        Path | None,
        typer.Option("--data-root", help="Root of the real data (kurosiwo, copernicus-bench)."),
    ] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Number of seeds (0, 1, ...).")] = 3,
    protocols: Annotated[
        str | None,
        typer.Option(
            "--protocols",
            help="Encoder protocols for every task: linear-probe, frozen-upernet, finetune, "
            "zero-shot (vision-language models, no training) (default: the suite's per task "
            "kind).",
        ),
    ] = None,
    fractions: Annotated[
        str | None,
        typer.Option(
            "--fractions", help="Label fractions, e.g. 0.01,0.1,1 (default: the suite's)."
        ),
    ] = None,
    uncertainty: Annotated[
        str | None,
        typer.Option(
            "--uncertainty",
            help="Uncertainty heads, comma-separated: none (deterministic), heteroscedastic, "
            "mc_dropout, ensemble (default: the suite's).",
        ),
    ] = None,
    noise: Annotated[
        str | None,
        typer.Option(
            "--noise",
            help="Label-noise rates in [0, 1) applied to the training split, e.g. 0,0.2,0.4 "
            "(default: the suite's).",
        ),
    ] = None,
    adapt: Annotated[
        str | None,
        typer.Option(
            "--adapt",
            help="Domain adaptation of the tasks with a split, comma-separated: none (source "
            "only), dann, deep_coral, mmd, adabn, self_training, tent, oracle (trained on target "
            "labels), generalise (band/spectral/metadata augmentation, no target data) "
            "(default: the suite's).",
        ),
    ] = None,
    max_steps: Annotated[
        int | None,
        typer.Option("--max-steps", help="Training steps per run (default: the suite's)."),
    ] = None,
    accelerator: Annotated[str, typer.Option("--accelerator", help="cpu, gpu or auto.")] = "cpu",
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads", help="PyTorch CPU threads (default: the suite's, else PyTorch's)."
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Start again: drop the rows in OUT/results.csv."),
    ] = False,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Change one suite setting, e.g. --set batch_size=8 --set lr.finetune=3e-4 "
            "(repeatable; the value is read as YAML).",
        ),
    ] = None,
    print_config: Annotated[
        bool,
        typer.Option(
            "--print-config",
            help="Print the resolved suite settings (YAML, after --set, --max-steps and "
            "--threads) and exit.",
        ),
    ] = False,
    as_json: Json = False,
) -> None:
    """Benchmark encoders and baselines: every task x model x protocol x label fraction x seed."""
    from thinkingearth.bench import get_suite, run_bench

    def split(text: str | None) -> list[str] | None:
        if text is None:
            return None
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise UserInputError(f"expected a comma-separated list, got {text!r}")
        return items

    fraction_values: list[float] | None = None
    if fractions is not None:
        try:
            fraction_values = [float(f) for f in split(fractions) or []]
        except ValueError:
            raise UserInputError(
                f"--fractions must be numbers in (0, 1], e.g. 0.01,0.1,1; got {fractions!r}"
            ) from None
    noise_values: list[float] | None = None
    if noise is not None:
        try:
            noise_values = [float(r) for r in split(noise) or []]
        except ValueError:
            raise UserInputError(
                f"--noise must be numbers in [0, 1), e.g. 0,0.2,0.4; got {noise!r}"
            ) from None
    parts = ["thinkingearth bench", f"--suite {suite}"]
    if models:
        parts.append(f"--models {models}")
    if data_root is not None:
        parts.append(f"--data-root {data_root}")
    parts.append(f"--seeds {seeds}")
    for flag, value in (
        ("--protocols", protocols),
        ("--fractions", fractions),
        ("--uncertainty", uncertainty),
        ("--noise", noise),
        ("--adapt", adapt),
        ("--max-steps", max_steps),
        ("--threads", threads),
    ):
        if value is not None:
            parts.append(f"{flag} {value}")
    if accelerator != "cpu":
        parts.append(f"--accelerator {accelerator}")
    parts.extend(f"--set {pair}" for pair in sets or ())
    parts.append(f"--out {out}")
    spec: Any = suite
    if sets:
        base = get_suite(suite, data_root)
        spec = get_suite(suite, data_root, **_suite_overrides(base, dotted_overrides(sets)))
    if print_config:
        resolved = spec if not isinstance(spec, str) else get_suite(suite, data_root)
        _print_suite(resolved, max_steps=max_steps, threads=threads)
        return
    if out is None:  # only --print-config runs without it
        raise UserInputError("bench needs --out FOLDER, where results.csv and report.md go")
    result = run_bench(
        spec,
        models,
        out,
        seeds=seeds,
        data_root=data_root,
        protocols=split(protocols),
        fractions=fraction_values,
        uncertainty=split(uncertainty),
        noise=noise_values,
        adapt=split(adapt),
        max_steps=max_steps,
        accelerator=accelerator,  # type: ignore[arg-type]
        threads=threads,
        command=" ".join(parts),
        overwrite=overwrite,
        log=output.info,
    )
    if as_json:
        output.print_json(
            {
                "out": result.out,
                "report": result.report,
                "results": result.out / "results.csv",
                "ran": result.ran,
                "reused": result.reused,
                "failed": result.failed,
                "seconds": round(result.seconds, 2),
            }
        )
    else:
        typer.echo(
            f"{result.ran} run(s) done, {result.reused} kept from earlier, "
            f"{len(result.failed)} failed, in {result.seconds:.1f} s: {result.report}"
        )
    if result.failed:
        typer.echo(
            f"thinkingearth: {len(result.failed)} run(s) failed (see {result.out / 'results.csv'});"
            " run the same command again to retry them",
            err=True,
        )
        raise typer.Exit(1)


Listable = Literal["models", "sensors", "configs", "suites", "weights"]


def _models_listing() -> tuple[list[dict[str, Any]], list[tuple[str, ...]]]:
    from thinkingearth.models import list_models
    from thinkingearth.models.published import WEIGHTS
    from thinkingearth.models.weights import CONFIGS

    records, rows = [], [("NAME", "DIM", "DEPTH", "HEADS", "PATCH", "IMAGE", "PUBLISHED WEIGHTS")]
    for name in list_models():
        config = CONFIGS[name]
        weights = sorted(w.name for w in WEIGHTS.values() if w.architecture == name)
        records.append({**dataclasses.asdict(config), "weights": weights})
        rows.append(
            (
                name,
                str(config.embed_dim),
                str(config.depth),
                str(config.num_heads),
                str(config.patch_size),
                str(config.img_size),
                ", ".join(weights) or "-",
            )
        )
    return records, rows


def _sensors_listing() -> tuple[list[dict[str, Any]], list[tuple[str, ...]]]:
    from thinkingearth.sensors import SENSORS

    records, rows = [], [("NAME", "KIND", "BANDS", "BAND NAMES", "ALIASES")]
    for sensor in SENSORS.values():
        records.append(
            {
                "name": sensor.name,
                "kind": sensor.kind,
                "aliases": sensor.aliases,
                "band_count": len(sensor.bands),
                "bands": [
                    {
                        "name": b.name,
                        "wavelength_nm": b.wavelength_nm,
                        "bandwidth_nm": b.bandwidth_nm,
                        "gsd_m": b.gsd_m,
                        "units": b.units,
                    }
                    for b in sensor.bands
                ],
                "description": sensor.description,
            }
        )
        rows.append(
            (
                sensor.name,
                sensor.kind,
                str(len(sensor.bands)),
                ",".join(b.name for b in sensor.bands),
                ", ".join(sensor.aliases) or "-",
            )
        )
    return records, rows


def _configs_listing() -> tuple[list[dict[str, Any]], list[tuple[str, ...]]]:
    from thinkingearth.pretrain.config import list_configs, load_config
    from thinkingearth.tasks.finetune_config import list_finetune_configs, load_finetune_config

    records, rows = [], [("COMMAND", "NAME", "WHAT")]
    for name in list_configs():
        pre = load_config(name)
        encoder = pre.encoder.name or f"from {pre.encoder.init}"  # init: its own architecture
        what = f"{pre.recipe} on {', '.join(pre.sensors)}, {encoder}"
        records.append({"command": "pretrain", "name": name, "what": what})
        rows.append(("pretrain", name, what))
    for name in list_finetune_configs():
        fine = load_finetune_config(name)
        what = (
            f"{fine.task.kind} ({fine.task.name}) on {fine.data.reader} data, {fine.protocol}"
            + (" (needs --data-root)" if fine.data.reader != "synthetic" else "")
        )
        records.append({"command": "finetune", "name": name, "what": what})
        rows.append(("finetune", name, what))
    from thinkingearth.vl.modality_gap import list_patching_configs, load_patching_config

    for name in list_patching_configs():
        patching = load_patching_config(name)
        what = (
            f"patch a VL model on synthetic {patching.task} ({patching.sensor}), controls "
            f"{', '.join(patching.controls) or '-'}; weights {patching.weights}"
        )
        records.append({"command": "patch", "name": name, "what": what})
        rows.append(("patch", name, what))
    return records, rows


def _suites_listing() -> tuple[list[dict[str, Any]], list[tuple[str, ...]]]:
    from thinkingearth.bench.suites import get_suite, list_suites

    records, rows = [], [("NAME", "DATA", "TASKS", "DESCRIPTION")]
    for name in list_suites():
        try:
            suite, data = get_suite(name), "synthetic (built in)"
        except UserInputError:  # a suite of real data: its settings, whatever the root
            suite, data = get_suite(name, Path.cwd()), "--data-root"
        records.append(
            {
                "name": name,
                "description": suite.description,
                "data": data,
                "tasks": [
                    {"name": t.name, "kind": t.kind, "primary": t.primary} for t in suite.tasks
                ],
                "models": suite.models,
                "protocols": suite.protocols,
                "fractions": suite.fractions,
                "max_steps": suite.max_steps,
            }
        )
        names = [t.name for t in suite.tasks]
        shown = ",".join(names) if len(names) <= 5 else ",".join(names[:4]) + f",… ({len(names)})"
        rows.append((name, data, shown, suite.description))
    return records, rows


@app.command("list")
def list_things(
    what: Annotated[Listable, typer.Argument(help="What to list.")],
    as_json: Json = False,
) -> None:
    """List encoder configs, sensors, shipped configs, benchmark suites or published weights."""
    if what == "weights":
        from thinkingearth.weights_cli import show_weights

        show_weights(as_json)
        return
    listing = {
        "models": _models_listing,
        "sensors": _sensors_listing,
        "configs": _configs_listing,
        "suites": _suites_listing,
    }[what]
    records, rows = listing()
    if as_json:
        output.print_json({what: records})
        return
    for line in output.table(rows):
        typer.echo(line)


# `thinkingearth weights list|fetch`: published weights by name (its own light module).
from thinkingearth.weights_cli import app as _weights_app  # noqa: E402

app.add_typer(_weights_app, name="weights", cls=_Group)
# Every command, those added later included, gets the shared conventions (-q/-v, -h, flags).
for _info in (*app.registered_commands, *_weights_app.registered_commands):
    if _info.cls in (None, TyperCommand):
        _info.cls = _Command


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (the console script passes it to ``sys.exit``).

    Typer reports usage errors itself (exit 2); a :class:`UserInputError` from a command becomes
    one line on stderr and exit 2. SIGTERM stops a command as Ctrl-C does (temporary outputs
    removed; training first saves a checkpoint of its current step) and exits 143
    (:mod:`thinkingearth.stopping`).
    """
    from thinkingearth.stopping import EXIT_TERMINATED, Terminated, sigterm_raises

    try:
        with sigterm_raises():
            app(args=argv, prog_name="thinkingearth", standalone_mode=True)
    except Terminated as exc:
        typer.echo(f"thinkingearth: {exc}", err=True)
        return EXIT_TERMINATED
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except UserInputError as exc:
        typer.echo(f"thinkingearth: error: {exc}", err=True)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
