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


@app.command()
def pretrain(
    config: Annotated[
        str,
        typer.Option(
            "--config", help="A shipped config name (e.g. tiny-synthetic) or a YAML file."
        ),
    ],
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Override trainer.max_steps.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output folder (default: runs/pretrain/<config name>)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the latest checkpoint in OUT.")
    ] = False,
) -> None:
    """Pretrain an encoder (MAE, SoftCon, SupCon, SimCLR, cross-sensor, distillation)."""
    from thinkingearth.pretrain import load_config, run_pretrain

    settings = load_config(config)
    folder = out if out is not None else Path("runs") / "pretrain" / settings.name
    result = run_pretrain(
        settings,
        folder,
        max_steps=max_steps,
        resume=resume,
        log=lambda m: typer.echo(m, err=True),
    )
    if result.encoder is not None:
        typer.echo(f"encoder: {result.encoder} ({result.steps} steps, {result.seconds:.1f} s)")


@app.command()
def finetune(
    config: Annotated[
        str,
        typer.Option(
            "--config",
            help="A shipped config (synthetic-flood, synthetic-landcover, kurosiwo-flood, "
            "sen1floods11-water, bigearthnet-landcover, eurosat-ms) or a YAML file.",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output folder (default: runs/finetune/<config name>)."),
    ] = None,
    data_root: Annotated[
        Path | None, typer.Option("--data-root", help="Root of the data set (data.root).")
    ] = None,
    encoder: Annotated[
        str | None,
        typer.Option(
            "--encoder",
            help="Encoder: registry config (random init), published weights name or checkpoint.",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="A supervised baseline instead (unet, siamese-diff, ...)."),
    ] = None,
    protocol: Annotated[
        str | None,
        typer.Option("--protocol", help="linear-probe, frozen-upernet or finetune."),
    ] = None,
    fraction: Annotated[
        float | None, typer.Option("--fraction", help="Share of training labels, in (0, 1].")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Override trainer.max_steps.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the latest checkpoint in OUT.")
    ] = False,
    accelerator: Annotated[
        str | None, typer.Option("--accelerator", help="cpu, gpu or auto.")
    ] = None,
    devices: Annotated[
        int | None, typer.Option("--devices", help="Devices (processes); >1 trains with DDP.")
    ] = None,
    print_config: Annotated[
        bool,
        typer.Option("--print-config", help="Print the resolved config (YAML) and exit."),
    ] = False,
) -> None:
    """Fine-tune a model on labelled data; save it for predict --weights OUT/model."""
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
    )
    settings = resolve_config(config, **overrides)  # type: ignore[arg-type]
    if print_config:
        import yaml

        typer.echo(yaml.safe_dump(settings.to_dict(), sort_keys=False).rstrip())
        return
    folder = out if out is not None else Path("runs") / "finetune" / settings.name
    result = run_finetune(settings, folder, resume=resume, log=lambda m: typer.echo(m, err=True))
    metric = settings.task.primary_metric[0]
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
            "--out", help="Output COG (a folder with --scenes); a PNG quicklook goes beside it."
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
        typer.Option("--model", help="threshold: Otsu on Sentinel-1 VV, needs no training."),
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
            "--bands", help="Comma-separated registry names of the input bands, in file order."
        ),
    ] = None,
    sar_units: Annotated[
        str, typer.Option("--sar-units", help="Units of SAR inputs: linear (sigma0) or db.")
    ] = "linear",
    tile: Annotated[int | None, typer.Option("--tile", help="Tile side in pixels.")] = None,
    overlap: Annotated[
        int | None, typer.Option("--overlap", help="Tile overlap in pixels.")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Tiles per forward pass.")
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
        bool, typer.Option("--overwrite", help="With --scenes: redo scenes whose output exists.")
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
) -> None:
    """Map a whole scene (or many) to a georeferenced COG with classes and uncertainty."""
    import dataclasses
    import warnings

    from thinkingearth.data.scene import SAR_UNITS, Acquisition, parse_date
    from thinkingearth.infer.model import TASKS

    if task not in TASKS:
        raise UserInputError(f"unknown task {task!r}; expected one of: {', '.join(TASKS)}")
    if sar_units not in SAR_UNITS:
        raise UserInputError(
            f"unknown --sar-units {sar_units!r}; expected one of: {', '.join(SAR_UNITS)}"
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
        from thinkingearth.infer.task_model import load_task

        scene_model = load_task(weights)
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
        from thinkingearth.infer.threshold import threshold_model

        scene_model = threshold_model(task)  # type: ignore[arg-type]
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

    def echo(message: str) -> None:
        typer.echo(message, err=True)

    def show_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
        typer.echo(f"thinkingearth: warning: {message}", err=True)

    with warnings.catch_warnings():
        warnings.showwarning = show_warning  # type: ignore[assignment]
        if scenes is not None:
            from thinkingearth.infer.batch import InputNames, find_scenes, plan_jobs, predict_many

            names = InputNames(pre=pre, post=post, pre2=pre2, image=image, bands=band_names)
            jobs = plan_jobs(find_scenes(scenes, task, names, scene_model), out)  # type: ignore[arg-type]
            result = predict_many(
                jobs,
                scene_model,
                sar_units=sar_units,  # type: ignore[arg-type]
                quicklook=quicklook,
                overwrite=overwrite,
                scheduler=scheduler,
                workers=workers,
                log=echo,
            )
            typer.echo(
                f"{len(result.done)} scene(s) predicted, {len(result.skipped)} skipped "
                f"(output exists), {len(result.failed)} failed, in {result.seconds:.1f} s: {out}"
            )
            if result.failed:
                raise UserInputError(
                    f"{len(result.failed)} of {len(jobs)} scene(s) failed (see above); "
                    "run again to retry them"
                )
            return
        from thinkingearth.infer.predictor import predict_scene

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
            sar_units=sar_units,  # type: ignore[arg-type]
            quicklook=quicklook,
            log=echo,
        )
    shares = ", ".join(
        f"{name} {share:.1%}"
        for name, share in zip(scene_model.classes, result_one.class_fractions, strict=True)
    )
    typer.echo(f"wrote {result_one.path} ({shares}; {result_one.valid_fraction:.0%} valid)")


@app.command()
def bench(
    suite: Annotated[
        str,
        typer.Option("--suite", help="synthetic-lite, synthetic, kurosiwo or copernicus-bench."),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Output folder; finished runs in it are not run again.")
    ],
    models: Annotated[
        str | None,
        typer.Option(
            "--models",
            help="Comma-separated: baselines (wrn-eca, resnet18, resnet50, unet, siamese-diff, "
            "siamese-concat, vit-scratch), encoder names (random init), checkpoint paths or "
            "random:PATH (default: the suite's).",
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
            help="Encoder protocols for every task: linear-probe, frozen-upernet, finetune "
            "(default: the suite's per task kind).",
        ),
    ] = None,
    fractions: Annotated[
        str | None,
        typer.Option(
            "--fractions", help="Label fractions, e.g. 0.01,0.1,1 (default: the suite's)."
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
) -> None:
    """Benchmark encoders and baselines: every task x model x protocol x label fraction x seed."""
    from thinkingearth.bench import run_bench

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
    parts = ["thinkingearth bench", f"--suite {suite}"]
    if models:
        parts.append(f"--models {models}")
    if data_root is not None:
        parts.append(f"--data-root {data_root}")
    parts.append(f"--seeds {seeds}")
    for flag, value in (
        ("--protocols", protocols),
        ("--fractions", fractions),
        ("--max-steps", max_steps),
        ("--threads", threads),
    ):
        if value is not None:
            parts.append(f"{flag} {value}")
    if accelerator != "cpu":
        parts.append(f"--accelerator {accelerator}")
    parts.append(f"--out {out}")
    result = run_bench(
        suite,
        models,
        out,
        seeds=seeds,
        data_root=data_root,
        protocols=split(protocols),
        fractions=fraction_values,
        max_steps=max_steps,
        accelerator=accelerator,  # type: ignore[arg-type]
        threads=threads,
        command=" ".join(parts),
        log=lambda m: typer.echo(m, err=True),
    )
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


# `thinkingearth weights list|fetch`: published weights by name (its own light module).
from thinkingearth.weights_cli import app as _weights_app  # noqa: E402

app.add_typer(_weights_app, name="weights")


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
