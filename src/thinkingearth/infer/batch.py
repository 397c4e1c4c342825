"""Many scenes: find them in a folder or a STAC item list, predict each on a Dask cluster.

A run writes one class map ``<scene>.tif`` per scene into an output folder, with the files
beside it (``<scene>_uncertainty.tif``, the styles, ``<scene>.png``;
:mod:`~thinkingearth.infer.writers`), and skips scenes whose class map already exists, so a
killed run restarts where it stopped: the class map is renamed into place last, when every file
beside it is complete (:func:`~thinkingearth.infer.predictor.predict_scene`).

Where scenes come from (:func:`find_scenes`):

* **a folder of scene folders** (e.g. ``thinkingearth synth --format native``): every subfolder
  that holds the named inputs is a scene named after the subfolder; inputs are file names inside
  it (flood: ``pre``, ``post`` and optionally ``pre2``; water and land cover: ``image``);
* **a folder of images** (water and land cover, no ``image`` name): every ``*.tif``/``*.tiff``
  in it is a scene named after the file;
* **STAC items**: a ``.json``/``.geojson`` file holding an ItemCollection / FeatureCollection, a
  list of items or one item; each item is a scene named by its ``id``. Inputs are assets: flood
  takes the assets named ``pre``, ``post`` (and ``pre2``) — or the names given; water and land
  cover take the asset named ``image`` (or the name given), else one asset per band the model
  needs, matched by asset key or ``eo:bands`` name (as Sentinel-1 RTC and Sentinel-2 collections
  publish ``vv``, ``vh`` or ``B02``, ``B03`` … as separate COGs). Hrefs are local paths, relative
  to the item file; remote hrefs are not read.

Fan-out (:func:`predict_many`) uses Dask's distributed scheduler: a :class:`LocalCluster` by
default (one single-threaded worker process per core, torch threads split between them), or a
running cluster by address (its workers must see the same files). The scene model goes to the
workers with each scene, or, given a ``build`` (:class:`WorkerModel`), is built on each worker
once: a model that is costly to pickle (a vision-language model with its text encoder, for
``zeroshot --scenes``) then travels as its recipe, e.g. its weights path and class names.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thinkingearth.data.scene import Acquisition, SarUnitsOption, SourceFile
from thinkingearth.errors import UserInputError
from thinkingearth.infer.model import SceneModel, Task
from thinkingearth.sensors import get_sensor

if TYPE_CHECKING:
    from thinkingearth.infer.predictor import UncertaintyOutput

__all__ = [
    "BatchResult",
    "SceneJob",
    "WorkerModel",
    "find_scenes",
    "plan_jobs",
    "predict_many",
]

_TIF = (".tif", ".tiff")
_STAC = (".json", ".geojson")


@dataclass(frozen=True)
class SceneJob:
    """One scene to predict: a name, its acquisitions (oldest first) and its output file."""

    name: str
    inputs: tuple[Acquisition, ...]
    out: Path


@dataclass
class BatchResult:
    """What :func:`predict_many` did: scene names done, skipped (output existed) and failed."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class InputNames:
    """Names of a scene's inputs: file names in a scene folder, or STAC asset keys."""

    pre: str | None = None
    post: str | None = None
    pre2: str | None = None
    image: str | None = None
    bands: tuple[str, ...] | None = None


_WORKER_MODELS: dict[str, SceneModel] = {}
_WORKER_MODELS_LOCK = threading.Lock()


@dataclass(frozen=True)
class WorkerModel:
    """A scene model built where it runs, once per worker process (or per client process for
    threaded workers), instead of being pickled with every scene.

    Attributes:
        build: A picklable callable returning the model (e.g. a :func:`functools.partial` of a
            module-level function); it must build the model the client checked.
        key: Names one build: a worker holds the model of the latest key only, so a long-lived
            cluster does not pile up models of earlier runs.
    """

    build: Callable[[], SceneModel]
    key: str

    def get(self) -> SceneModel:
        """The model, built on first use in this process."""
        with _WORKER_MODELS_LOCK:
            model = _WORKER_MODELS.get(self.key)
            if model is None:
                _WORKER_MODELS.clear()
                model = _WORKER_MODELS[self.key] = self.build()
            return model


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned or "scene"


def _roles(task: Task, names: InputNames) -> list[tuple[str, str, bool]]:
    """``(option, name, required)`` of each acquisition of a task, oldest first."""
    if task == "flood":
        roles = [("--pre", names.pre or "pre", True), ("--post", names.post or "post", True)]
        if names.pre2 is not None:
            roles.insert(0, ("--pre2", names.pre2, True))
        return roles
    return [("--image", names.image or "image", True)]


def _from_folder(
    folder: Path, task: Task, names: InputNames
) -> list[tuple[str, list[Acquisition]]]:
    scenes: list[tuple[str, list[Acquisition]]] = []
    single = task != "flood" and names.image is None
    if single:
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in _TIF):
            scenes.append((path.stem, [Acquisition.from_path("--image", path, names.bands)]))
        if scenes:
            return scenes
    roles = _roles(task, names)
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = [(option, sub / name) for option, name, _ in roles]
        if all(path.is_file() for _, path in files):
            scenes.append((sub.name, [Acquisition.from_path(o, p, names.bands) for o, p in files]))
    if not scenes:
        wanted = ", ".join(f"{o} {n}" for o, n, _ in roles)
        extra = " or .tif images" if single else ""
        raise UserInputError(
            f"no scenes found in {folder}: expected subfolders holding {wanted}{extra}"
        )
    return scenes


def _load_items(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserInputError(f"cannot read STAC items from {path}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("features"), list):
        items = data["features"]
    elif isinstance(data, list):
        items = data
    elif isinstance(data, dict) and "assets" in data:
        items = [data]
    else:
        raise UserInputError(f"{path} is not a STAC ItemCollection, a list of items or an item")
    if not items or not all(
        isinstance(i, dict) and isinstance(i.get("assets"), dict) for i in items
    ):
        raise UserInputError(f"{path}: expected STAC items, each with an 'assets' object")
    return items


def _href(item_file: Path, asset: dict[str, Any], key: str, item_id: str) -> Path:
    href = str(asset.get("href", ""))
    if not href:
        raise UserInputError(f"STAC item {item_id}: asset {key!r} has no href")
    if href.startswith("file://"):
        href = href[len("file://") :]
    elif "://" in href:
        raise UserInputError(
            f"STAC item {item_id}: asset {key!r} is remote ({href}); expected a local file"
        )
    path = Path(href)
    return path if path.is_absolute() else item_file.parent / path


def _asset_band_names(asset: dict[str, Any]) -> tuple[str, ...] | None:
    bands = asset.get("eo:bands") or asset.get("bands")
    if (
        isinstance(bands, list)
        and bands
        and all(isinstance(b, dict) and b.get("name") for b in bands)
    ):
        return tuple(str(b["name"]) for b in bands)
    return None


def _from_stac(
    path: Path, task: Task, names: InputNames, model: SceneModel | None
) -> list[tuple[str, list[Acquisition]]]:
    scenes: list[tuple[str, list[Acquisition]]] = []
    for n, item in enumerate(_load_items(path)):
        item_id = str(item.get("id") or f"item_{n:05d}")
        assets: dict[str, Any] = item["assets"]
        acquisitions: list[Acquisition] = []
        for option, key, _ in _roles(task, names):
            if key in assets:
                asset = assets[key]
                bands = names.bands or _asset_band_names(asset)
                acquisitions.append(
                    Acquisition(option, (SourceFile(_href(path, asset, key, item_id), bands),))
                )
                continue
            if task == "flood" or model is None:
                raise UserInputError(
                    f"STAC item {item_id} has no asset {key!r} for {option}; it has: "
                    + ", ".join(assets)
                )
            sensor = get_sensor(model.sensor)
            sources: list[SourceFile] = []
            for band in model.bands:
                match = None
                for akey, asset in assets.items():
                    label = (_asset_band_names(asset) or (akey,))[0]
                    for candidate in (akey, label):
                        if sensor.has_band(candidate) and sensor.band(candidate).name == band:
                            match = (akey, asset)
                            break
                    if match:
                        break
                if match is None:
                    raise UserInputError(
                        f"STAC item {item_id} has no asset {key!r} and no asset for band {band}; "
                        "it has: " + ", ".join(assets)
                    )
                sources.append(SourceFile(_href(path, match[1], match[0], item_id), (band,)))
            acquisitions.append(Acquisition(option, tuple(sources)))
        scenes.append((item_id, acquisitions))
    return scenes


def find_scenes(
    source: str | Path, task: Task, names: InputNames, model: SceneModel | None
) -> list[tuple[str, list[Acquisition]]]:
    """The scenes in a folder or a STAC item file, as ``(name, acquisitions)`` (module docs).

    ``model`` matches STAC per-band assets to the bands it needs; ``None`` (the model's bands
    come from the scenes, as for zero-shot maps) takes the named asset only.

    Raises:
        UserInputError: a missing source, no scenes in it, or items lacking the inputs.
    """
    path = Path(source)
    if not path.exists():
        raise UserInputError(f"--scenes {path} does not exist; expected a folder or STAC items")
    if path.is_dir():
        return _from_folder(path, task, names)
    if path.suffix.lower() in _STAC:
        return _from_stac(path, task, names, model)
    raise UserInputError(f"--scenes {path}: expected a folder or a .json/.geojson of STAC items")


def plan_jobs(scenes: Sequence[tuple[str, Sequence[Acquisition]]], out_dir: Path) -> list[SceneJob]:
    """One job per scene, output ``out_dir/<name>.tif``; duplicate names are a user error."""
    jobs: list[SceneJob] = []
    seen: set[str] = set()
    for name, inputs in scenes:
        safe = _safe_name(name)
        if safe in seen:
            raise UserInputError(f"two scenes are both named {safe!r}; scene names must be unique")
        seen.add(safe)
        jobs.append(SceneJob(safe, tuple(inputs), out_dir / f"{safe}.tif"))
    return jobs


def run_job(
    job: SceneJob,
    model: SceneModel | WorkerModel,
    sar_units: SarUnitsOption,
    quicklook: bool,
    overwrite: bool,
    threads: int | None,
    command: str | None = None,
    uncertainty: UncertaintyOutput = "total",
) -> tuple[str, str, str]:
    """Predict one scene (on a Dask worker): ``(status, name, detail)``.

    ``command`` is the client's command line, recorded in the outputs' tags (a worker's own
    ``sys.argv`` is the worker's); ``uncertainty`` is ``predict_scene``'s (``total`` or
    ``split``). A :class:`WorkerModel` is built here (once per process).

    ``status`` is ``done`` (``detail``: the time taken, and the acquisitions whose date a
    metadata model got as unknown), ``skipped`` (the output exists) or ``failed`` (a user error,
    its one-line message in ``detail``).
    """
    from thinkingearth.infer.predictor import predict_scene

    if job.out.exists() and not overwrite:
        return ("skipped", job.name, "")
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        result = predict_scene(
            model.get() if isinstance(model, WorkerModel) else model,
            job.inputs,
            job.out,
            sar_units=sar_units,
            quicklook=quicklook,
            command=command,
            uncertainty=uncertainty,
        )
    except UserInputError as exc:
        return ("failed", job.name, str(exc))
    detail = f"{result.seconds:.1f} s"
    if result.missing_dates:
        detail += (
            f" (no acquisition date for {', '.join(result.missing_dates)}: unknown to the model)"
        )
    return ("done", job.name, detail)


def predict_many(
    jobs: Sequence[SceneJob],
    model: SceneModel,
    *,
    sar_units: SarUnitsOption = "auto",
    quicklook: bool = True,
    overwrite: bool = False,
    scheduler: str | None = None,
    workers: int | None = None,
    processes: bool | None = None,
    connect_timeout: float = 20.0,
    log: Callable[[str], None] | None = None,
    uncertainty: UncertaintyOutput = "total",
    build: Callable[[], SceneModel] | None = None,
) -> BatchResult:
    """Predict every job on a Dask cluster, skipping jobs whose output exists.

    Args:
        jobs: the scenes (:func:`plan_jobs`).
        model: the scene model (sent to the workers).
        sar_units: units of SAR input files (``auto``: decided per file from its values).
        quicklook: also write a PNG per scene.
        overwrite: predict scenes whose output exists too.
        scheduler: address of a running Dask scheduler; ``None`` starts a ``LocalCluster``.
        workers: worker count of the local cluster (default: one per core, at most one per
            scene).
        processes: local workers as processes (``False``: threads in this process; default:
            processes when there is more than one worker).
        connect_timeout: seconds to wait for a running scheduler.
        log: where progress lines go.
        uncertainty: what each scene's uncertainty file holds: ``total`` (the entropy) or
            ``split`` (entropy, aleatoric, epistemic; models with trained weights).
        build: builds ``model`` on each worker, once, instead of sending it with every scene
            (:class:`WorkerModel`; picklable); ``model`` is still what the checks here use.

    Returns:
        A :class:`BatchResult`; a failed scene does not stop the others.

    Raises:
        UserInputError: scenes whose number of acquisitions the model does not take
            (:func:`~thinkingearth.infer.predictor.check_acquisitions`), or ``split`` for a
            model without trained weights, before anything is written; or a cluster that
            cannot be reached.
    """
    from thinkingearth.infer.predictor import (
        check_acquisitions,
        check_uncertainty,
        parse_uncertainty,
    )

    say = log or (lambda _m: None)
    start = time.perf_counter()
    uncertainty = parse_uncertainty(uncertainty, "uncertainty")
    check_uncertainty(model, uncertainty)
    for job in jobs:
        try:
            check_acquisitions(model, job.inputs)
        except UserInputError as exc:
            raise UserInputError(f"scene {job.name}: {exc}") from None
    result = BatchResult()
    todo: list[SceneJob] = []
    for job in jobs:
        if job.out.exists() and not overwrite:
            result.skipped.append(job.name)
        else:
            todo.append(job)
    if result.skipped:
        say(f"skipping {len(result.skipped)} scene(s) whose output exists")
    if todo:
        for parent in {job.out.parent for job in todo}:
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserInputError(
                    f"cannot create output folder {parent}: {exc.strerror}"
                ) from None
        from distributed import Client, LocalCluster, as_completed

        cores = os.cpu_count() or 1
        cluster = None
        if scheduler is None:
            n = max(1, min(workers or cores, len(todo)))
            threads = max(1, cores // n)
            cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=n > 1 if processes is None else processes,
                dashboard_address=None,
            )
            client = Client(cluster)
        else:
            threads = None
            try:
                client = Client(scheduler, timeout=f"{connect_timeout}s")
            except (OSError, TimeoutError) as exc:
                raise UserInputError(
                    f"cannot reach the Dask scheduler at {scheduler}: {exc}"
                ) from None
        try:
            say(
                f"predicting {len(todo)} scene(s) on {client.scheduler_info().get('address', scheduler)}"
            )
            token = uuid.uuid4().hex[:8]
            sent: SceneModel | WorkerModel = (
                model if build is None else WorkerModel(build, f"{model.name}-{token}")
            )
            command = shlex.join(sys.argv)  # this process's: the one the user ran
            futures = [
                client.submit(
                    run_job,
                    job,
                    sent,
                    sar_units,
                    quicklook,
                    overwrite,
                    threads,
                    command,
                    uncertainty,
                    key=f"predict-{job.name}-{token}",
                    pure=False,
                )
                for job in todo
            ]
            for future in as_completed(futures):
                status, name, detail = future.result()
                if status == "done":
                    result.done.append(name)
                    say(f"{name}: done in {detail}")
                elif status == "skipped":
                    result.skipped.append(name)
                    say(f"{name}: skipped, output exists")
                else:
                    result.failed[name] = detail
                    say(f"{name}: failed: {detail}")
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    result.seconds = time.perf_counter() - start
    return result
