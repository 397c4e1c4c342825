"""``thinkingearth embed``: samples of a reader, or tiles of GeoTIFF scenes, into an embedding index.

Two sources (:func:`embed`):

* **a reader** (``--data ROOT --reader NAME``): every sample of the reader's splits (default
  ``train``, ``val`` and ``test``), any name :func:`thinkingearth.data.readers.open_split` knows
  (``eurosat`` is taken for ``eurosat-ms``). A row's ``id`` is the reader's own sample id
  (``id``, else ``name`` — the BigEarthNet patch, the EuroSAT file —, ``chip`` for
  Sen1Floods11, ``tile`` for Kuro Siwo), else ``<split>-<number>``. A time series (Kuro Siwo's
  pre- and post-event images) is embedded by its newest acquisition, with that date.
* **scenes** (``--scenes FOLDER``): every ``*.tif``/``*.tiff`` under the folder whose band
  descriptions name the bands of one registry sensor (so label rasters, which have none, are
  passed over, as are files of sensors left out with ``sensors``), read window by window
  (:class:`~thinkingearth.data.scene.SceneStack`: SAR units decided per file, no data masked),
  tiled without overlap at the model's image size by default. Tiles with less than half their
  pixels valid are skipped. A row's ``id`` is ``<file relative to FOLDER>@<col>,<row>,<w>x<h>``.
  Files fan out over Dask as ``predict --scenes`` does: a ``LocalCluster`` of one single-threaded
  worker process per core by default, or a running scheduler by address; each worker loads the
  model once from ``--weights`` and checks its SHA-256.

Each row gets a small PNG thumbnail (:func:`thinkingearth.viz.backdrop_rgb`: Sentinel-2 true
colour, Sentinel-1 false colour, else the first band in grey), its footprint in WGS84 (from the
sample's CRS and transform; a sample with only ``lon``/``lat``/``gsd`` gets the square of its
size around that point), sensor and time.

Incremental: an index that exists is added to. Reader samples whose key (reader, root, split,
id) and scene files whose path are in it already are skipped; the rest are embedded and the index
is rewritten as a new generation (:mod:`thinkingearth.vl.index`). The index must have been built
with the same model (same SHA-256), else the run is refused before any work. ``overwrite`` builds
a new index instead.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from thinkingearth.errors import UserInputError
from thinkingearth.vl.index import (
    MANIFEST_NAME,
    THUMBNAILS,
    IndexRows,
    Manifest,
    check_model,
    footprint_lonlat,
    is_index,
    read_rows,
    write_index,
)

if TYPE_CHECKING:
    from thinkingearth.data.scene import SceneStack

__all__ = ["READER_ALIASES", "EmbedResult", "embed", "find_scene_files", "resolve_reader"]

#: Other names users give readers.
READER_ALIASES: Mapping[str, str] = {"eurosat": "eurosat-ms"}
_TIF = (".tif", ".tiff")
#: Thumbnails are at most this many pixels a side.
THUMBNAIL_PX = 64
#: A scene tile is embedded when at least this share of its pixels is valid.
MIN_VALID = 0.5


@dataclass
class EmbedResult:
    """What :func:`embed` did.

    Attributes:
        index: the index folder.
        added: rows added by this run.
        rows: rows in the index now.
        skipped: samples or files already in the index.
        passed_over: files not embedded and why (``{path: reason}``).
        failed: files that failed (``{path: one-line error}``).
        created: whether this run created the index.
        seconds: wall time.
    """

    index: Path
    added: int = 0
    rows: int = 0
    skipped: int = 0
    passed_over: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    created: bool = False
    seconds: float = 0.0


def resolve_reader(name: str) -> str:
    """A reader name :func:`~thinkingearth.data.readers.open_split` knows (aliases resolved).

    Raises:
        UserInputError: an unknown name, listing the readers.
    """
    from thinkingearth.data.readers import READERS

    key = name.strip().lower()
    key = READER_ALIASES.get(key, key)
    if key not in READERS:
        raise UserInputError(
            f"unknown --reader {name!r}; expected one of: {', '.join([*READERS, *READER_ALIASES])}"
        )
    return key


# --- one sample -> one row -----------------------------------------------------------------------


def _scalar(value: Any) -> float:
    """A metadata value (float, tensor, array; a time series' newest) as a float, NaN if none."""
    if value is None:
        return math.nan
    array = np.asarray(
        value.detach().cpu() if hasattr(value, "detach") else value, dtype=np.float64
    )
    if array.size == 0:
        return math.nan
    return float(array.reshape(-1)[-1])


def sample_id(sample: Mapping[str, Any], fallback: str) -> str:
    """The reader's own id of a sample (module docs), else ``fallback``."""
    for key in ("id", "name", "chip", "tile", "patch"):
        value = sample.get(key)
        if isinstance(value, str) and value:
            return value
    return fallback


def _single_image(sample: Mapping[str, Any]) -> dict[str, Any]:
    """The sample with one image ``[C, H, W]``: a time series' newest acquisition."""
    image = sample["image"]
    if getattr(image, "ndim", 3) == 4:
        sample = {**sample, "image": image[-1], "time": _scalar(sample.get("time"))}
    return dict(sample)


def _square_footprint(lon: float, lat: float, size_m: float) -> list[tuple[float, float]] | None:
    if not (math.isfinite(lon) and math.isfinite(lat) and math.isfinite(size_m) and size_m > 0):
        return None
    half_lat = size_m / 2 / 111_320.0
    half_lon = half_lat / max(math.cos(math.radians(lat)), 1e-6)
    ring = [
        (lon - half_lon, lat - half_lat),
        (lon + half_lon, lat - half_lat),
        (lon + half_lon, lat + half_lat),
        (lon - half_lon, lat + half_lat),
    ]
    return [*ring, ring[0]]


def sample_footprint(sample: Mapping[str, Any]) -> list[tuple[float, float]] | None:
    """The WGS84 outline of a sample: from ``crs`` + ``transform``, else ``lon``/``lat``/``gsd``."""
    image = sample["image"]
    height, width = int(image.shape[-2]), int(image.shape[-1])
    crs, transform = sample.get("crs"), sample.get("transform")
    if crs and transform is not None:
        ring = footprint_lonlat(crs, transform, height, width)
        if ring is not None:
            return ring
    gsd = _scalar(sample.get("gsd"))
    return _square_footprint(
        _scalar(sample.get("lon")), _scalar(sample.get("lat")), gsd * max(height, width)
    )


def write_thumbnail(
    sample: Mapping[str, Any], path: Path, size: int = THUMBNAIL_PX, valid: np.ndarray | None = None
) -> None:
    """A PNG of the sample, at most ``size`` px a side (:func:`~thinkingearth.viz.backdrop_rgb`)."""
    from PIL import Image

    from thinkingearth.sensors import get_sensor
    from thinkingearth.viz import backdrop_rgb

    image = sample["image"]
    array = np.asarray(
        image.detach().cpu() if hasattr(image, "detach") else image, dtype=np.float32
    )
    spec = get_sensor(str(sample["sensor"]))
    bands = [spec.band(b).name for b in sample["bands"]]
    ok = np.isfinite(array).all(axis=0) if valid is None else valid
    sar_units = None
    if spec.kind == "sar":
        sar_units = str(sample.get("units") or "linear").lower()
    rgb, _ = backdrop_rgb(np.nan_to_num(array), bands, ok, sar_units=sar_units)  # type: ignore[arg-type]
    picture = Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8))
    scale = size / max(picture.size)
    if scale < 1:
        shape = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        picture = picture.resize(shape, Image.Resampling.BILINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, format="PNG")


def _thumbnail_name(key: str) -> str:
    return f"{THUMBNAILS}/{hashlib.sha1(key.encode('utf-8')).hexdigest()[:20]}.png"


def rows_of_samples(
    model: Any,
    samples: Sequence[Mapping[str, Any]],
    ids: Sequence[str],
    keys: Sequence[str],
    source: str,
    folder: Path,
    valids: Sequence[np.ndarray | None] | None = None,
    thumbnail_px: int = THUMBNAIL_PX,
) -> IndexRows:
    """Embed samples (:meth:`VLModel.encode_samples`) and write their thumbnails into ``folder``."""
    rows = IndexRows()
    if not samples:
        return rows
    embeddings = model.encode_samples(list(samples)).detach().cpu().numpy().astype(np.float32)
    for i, sample in enumerate(samples):
        thumb = _thumbnail_name(keys[i])
        write_thumbnail(sample, folder / thumb, thumbnail_px, None if valids is None else valids[i])
        rows.ids.append(ids[i])
        rows.keys.append(keys[i])
        rows.sources.append(source)
        rows.sensors.append(str(sample["sensor"]))
        rows.times.append(_scalar(sample.get("time")))
        rows.footprints.append(sample_footprint(sample))
        rows.thumbnails.append(thumb)
        rows.embeddings.append(embeddings[i])
    return rows


# --- readers ---------------------------------------------------------------------------------


def _reader_rows(
    model: Any,
    reader: str,
    root: Path,
    splits: Sequence[str],
    options: Mapping[str, Any] | None,
    existing: set[str],
    folder: Path,
    batch_size: int,
    result: EmbedResult,
    say: Callable[[str], None],
) -> IndexRows:
    from thinkingearth.data.readers import open_split

    rows = IndexRows()
    base = f"{reader}:{root.resolve()}"
    seen = set(existing)
    for split in splits:
        dataset = open_split(reader, root, split, options)
        source = f"{base}:{split}"
        total = len(dataset)  # type: ignore[arg-type]
        say(f"{reader} {split}: {total} sample(s)")
        batch: list[dict[str, Any]] = []
        ids: list[str] = []
        keys: list[str] = []
        for n in range(total):
            sample = dataset[n]
            sid = sample_id(sample, f"{split}-{n:06d}")
            key = f"{source}:{sid}"
            if key in seen:
                result.skipped += 1
                continue
            seen.add(key)
            batch.append(_single_image(sample))
            ids.append(sid)
            keys.append(key)
            if len(batch) >= batch_size or n == total - 1:
                rows.extend(rows_of_samples(model, batch, ids, keys, source, folder))
                batch, ids, keys = [], [], []
        if batch:
            rows.extend(rows_of_samples(model, batch, ids, keys, source, folder))
    return rows


# --- scenes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneFile:
    """One GeoTIFF to embed: where, its sensor and bands (from its descriptions), its id prefix."""

    path: Path
    name: str
    sensor: str
    bands: tuple[str, ...]


def _file_sensor(path: Path, preferred: Sequence[str]) -> tuple[str, tuple[str, ...]] | str:
    """``(sensor, bands)`` from a file's band descriptions, or the reason it has none."""
    import rasterio
    from rasterio.errors import RasterioError

    from thinkingearth.sensors import sensors_with

    try:
        with rasterio.open(path) as dataset:
            descriptions = tuple(dataset.descriptions)
    except (RasterioError, OSError) as exc:
        return f"not a readable raster ({' '.join(str(exc).split())[:120]})"
    if not descriptions or any(not d for d in descriptions):
        return "no band descriptions (not named bands of a sensor, e.g. a label raster)"
    candidates = sensors_with(list(descriptions))
    if not candidates:
        return f"its bands ({', '.join(descriptions)}) are not all bands of one registry sensor"

    def rank(sensor: Any) -> tuple[int, int]:
        # The sensors asked for (or trained on) first, then the one whose bands the file has
        # exactly (12 Sentinel-2 bands without B10: L2A, not L1C), then registry order.
        exact = {sensor.band(d).name for d in descriptions} == set(sensor.band_names)
        return (0 if sensor.name in preferred else 1, 0 if exact else 1)

    chosen = min(candidates, key=rank)
    return chosen.name, tuple(chosen.band(d).name for d in descriptions)


def find_scene_files(
    folder: Path,
    *,
    preferred: Sequence[str] = (),
    sensors: Sequence[str] | None = None,
    exclude: Path | None = None,
) -> tuple[list[SceneFile], dict[str, str]]:
    """The GeoTIFFs under ``folder`` that name a sensor's bands, and those passed over (and why).

    Args:
        folder: searched recursively (hidden folders and ``exclude`` left out).
        preferred: sensors to pick when a file's bands fit several (the model's trained ones).
        sensors: only files of these sensors (registry names); ``None``: any.
        exclude: a folder not to look into (the index itself, when it lies inside).

    Raises:
        UserInputError: a folder that does not exist.
    """
    if not folder.is_dir():
        raise UserInputError(f"--scenes {folder} is not a folder; expected a folder of GeoTIFFs")
    found: list[SceneFile] = []
    passed: dict[str, str] = {}
    skip = exclude.resolve() if exclude is not None else None
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".") and (skip is None or (here / d).resolve() != skip)
        )
        for name in sorted(files):
            path = here / name
            if path.suffix.lower() not in _TIF or name.startswith("."):
                continue
            what = _file_sensor(path, [*(sensors or ()), *preferred])
            if isinstance(what, str):
                passed[str(path)] = what
                continue
            sensor, bands = what
            if sensors is not None and sensor not in sensors:
                passed[str(path)] = f"{sensor}, not among --sensors {','.join(sensors)}"
                continue
            found.append(SceneFile(path, path.relative_to(folder).as_posix(), sensor, bands))
    return found, passed


#: Models loaded by this process (a Dask worker loads each weights file once).
_MODELS: dict[tuple[str, str], Any] = {}


def _worker_model(weights: str, sha256: str) -> Any:
    from thinkingearth.vl.model import load_vl_model

    key = (weights, sha256)
    if key not in _MODELS:
        model = load_vl_model(weights)
        if model.sha256 != sha256:
            raise UserInputError(
                f"--weights {weights} changed while embedding (SHA-256 {str(model.sha256)[:12]}..., "
                f"expected {sha256[:12]}...)"
            )
        _MODELS[key] = model
    return _MODELS[key]


def _open_scene(scene: SceneFile, sar_units: str) -> SceneStack:
    """The scene file as a one-acquisition :class:`~thinkingearth.data.scene.SceneStack`."""
    from thinkingearth.data.scene import Acquisition, SceneStack

    return SceneStack(
        [Acquisition.from_path("--scenes", scene.path, scene.bands)],
        sensor=scene.sensor,
        bands=scene.bands,
        units=sar_units,
    )


def _tiles(
    scene: SceneFile, tile: int, overlap: int, sar_units: str
) -> Iterator[tuple[str, dict[str, Any], np.ndarray]]:
    """``(id, sample, valid)`` of each tile of a scene file with enough valid pixels."""
    import torch
    from rasterio.windows import transform as window_transform

    from thinkingearth.data.scene import iter_windows

    with _open_scene(scene, sar_units) as stack:
        grid = stack.grid
        when = stack.times[0].days if stack.times[0].known else math.nan
        crs = grid.crs.to_string() if grid.crs is not None else ""
        for window in iter_windows(grid.shape, tile, overlap):
            x, valid = stack.read(window)
            if valid.mean() < MIN_VALID:
                continue
            col, row = int(window.col_off), int(window.row_off)
            h, w = int(window.height), int(window.width)
            lon, lat = grid.lonlat(np.array([col + w / 2]), np.array([row + h / 2]))
            sample: dict[str, Any] = {
                "image": torch.from_numpy(np.ascontiguousarray(x[0])),
                "bands": scene.bands,
                "sensor": scene.sensor,
                "lon": float(lon[0]),
                "lat": float(lat[0]),
                "gsd": float(np.asarray(grid.gsd_metres(float(lat[0]))).reshape(-1)[0]),
                "time": when,
                "crs": crs,
                "transform": tuple(window_transform(window, grid.transform))[:6],
            }
            if stack.is_sar:
                sample["units"] = stack.to_units
            yield f"{scene.name}@{col},{row},{w}x{h}", sample, valid


def embed_scene_file(
    scene: SceneFile,
    weights: str,
    sha256: str,
    folder: str,
    tile: int,
    overlap: int,
    sar_units: str,
    batch_size: int,
    threads: int | None,
    thumbnail_px: int = THUMBNAIL_PX,
) -> tuple[str, str, IndexRows | str]:
    """Embed one scene file (on a Dask worker): ``(status, path, rows or error)``."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    source = str(scene.path.resolve())
    try:
        model = _worker_model(weights, sha256)
        rows = IndexRows()
        batch: list[tuple[str, dict[str, Any], np.ndarray]] = []

        def flush() -> None:
            ids = [b[0] for b in batch]
            keys = [f"{source}@{i.rsplit('@', 1)[1]}" for i in ids]
            rows.extend(
                rows_of_samples(
                    model,
                    [b[1] for b in batch],
                    ids,
                    keys,
                    source,
                    Path(folder),
                    [b[2] for b in batch],
                    thumbnail_px,
                )
            )
            batch.clear()

        for item in _tiles(scene, tile, overlap, sar_units):
            batch.append(item)
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
    except UserInputError as exc:
        return ("failed", str(scene.path), " ".join(str(exc).split()))
    return ("done", str(scene.path), rows)


def _check_scales(scenes: Sequence[SceneFile], sar_units: str) -> None:
    """Warn, here and not on a worker (whose warnings nobody sees), about optical files 10^4 off.

    Reflectance 0-1 where the registry's statistics expect digital numbers (or the reverse)
    would embed every tile as nearly one vector, silently (``SceneStack.check_scale``; a
    window of each optical file is read). A file that cannot be read is left to its worker,
    which reports it as failed.
    """
    from thinkingearth.sensors import get_sensor

    for scene in scenes:
        if get_sensor(scene.sensor).kind == "sar":
            continue
        try:
            with _open_scene(scene, sar_units) as stack:
                stack.check_scale()
        except UserInputError:
            continue


def _scene_rows(
    model: Any,
    weights: Path,
    scenes: Sequence[SceneFile],
    folder: Path,
    tile: int,
    overlap: int,
    sar_units: str,
    batch_size: int,
    scheduler: str | None,
    workers: int | None,
    result: EmbedResult,
    say: Callable[[str], None],
) -> IndexRows:
    from distributed import Client, LocalCluster, as_completed

    _check_scales(scenes, sar_units)
    sha = str(model.sha256)
    weights_key = str(weights)
    _MODELS[(weights_key, sha)] = model  # threads in this process use the model already loaded
    cores = os.cpu_count() or 1
    cluster = None
    if scheduler is None:
        n = max(1, min(workers or cores, len(scenes)))
        threads: int | None = max(1, cores // n)
        cluster = LocalCluster(
            n_workers=n, threads_per_worker=1, processes=n > 1, dashboard_address=None
        )
        client = Client(cluster)
    else:
        threads = None
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise UserInputError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    done: dict[str, IndexRows] = {}
    try:
        say(
            f"embedding {len(scenes)} file(s) on {client.scheduler_info().get('address', scheduler)}"
        )
        futures = [
            client.submit(
                embed_scene_file,
                scene,
                weights_key,
                sha,
                str(folder),
                tile,
                overlap,
                sar_units,
                batch_size,
                threads,
                pure=False,
            )
            for scene in scenes
        ]
        for future in as_completed(futures):
            status, path, payload = future.result()
            if status == "done" and isinstance(payload, IndexRows):
                done[path] = payload
                say(f"{path}: {len(payload)} tile(s)")
            else:
                result.failed[path] = str(payload)
                say(f"{path}: failed: {payload}")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    rows = IndexRows()
    for scene in scenes:  # input order, whatever order the workers finished in
        part = done.get(str(scene.path))
        if part is not None:
            rows.extend(part)
    return rows


# --- the command -------------------------------------------------------------------------------


def embed(
    weights: str | Path,
    out: str | Path,
    *,
    data: str | Path | None = None,
    reader: str | None = None,
    splits: Sequence[str] = ("train", "val", "test"),
    options: Mapping[str, Any] | None = None,
    scenes: str | Path | None = None,
    sensors: Sequence[str] | None = None,
    tile: int | None = None,
    overlap: int = 0,
    sar_units: str = "auto",
    batch_size: int = 32,
    overwrite: bool = False,
    scheduler: str | None = None,
    workers: int | None = None,
    log: Callable[[str], None] | None = None,
) -> EmbedResult:
    """Embed a reader's samples or a folder of scenes into the index ``out`` (module docs).

    Args:
        weights: the vision-language model (:func:`~thinkingearth.vl.model.load_vl_model`).
        out: the index folder; an existing index is added to (same model only).
        data, reader: a data set root and its reader name (with ``splits`` and ``options``).
        scenes: a folder of GeoTIFFs instead.
        sensors: scenes only: embed files of these sensors only (registry names or aliases).
        tile, overlap: scenes only: tile side (default: the model's image size) and overlap.
        sar_units: scenes only: ``auto``, ``linear`` or ``db``.
        batch_size: samples per forward pass.
        overwrite: build a new index even where one exists.
        scheduler, workers: scenes only: Dask scheduler address, or local worker count.
        log: where progress lines go.

    Raises:
        UserInputError: both or neither source, an unknown reader, an output that is not an
            index, an index built with another model, nothing to embed in a new index, or
            (after the index is written with the rest) files that failed.
    """
    from thinkingearth.data.scene import parse_sar_units
    from thinkingearth.fileio import atomic_dir, check_writable_parent
    from thinkingearth.sensors import get_sensor
    from thinkingearth.vl.model import load_vl_model

    say = log or (lambda _m: None)
    start = time.perf_counter()
    folder = Path(out)
    if (data is None) != (reader is None):
        raise UserInputError("--data ROOT and --reader NAME go together")
    if (reader is None) == (scenes is None):
        raise UserInputError("give --data ROOT --reader NAME, or --scenes FOLDER (one of them)")
    reader_name = resolve_reader(reader) if reader is not None else None
    if scenes is None and (sensors is not None or tile is not None):
        raise UserInputError(
            "--sensors and --tile are for --scenes; a reader gives its own samples"
        )
    if batch_size < 1:
        raise UserInputError(f"--batch-size must be at least 1, got {batch_size}")
    units = parse_sar_units(sar_units)
    wanted_sensors = None if sensors is None else [get_sensor(s).name for s in sensors]
    # The output is checked before the model is loaded or any pixel read.
    if folder.exists() and not folder.is_dir():
        raise UserInputError(f"--out {folder} is a file; expected an index folder")
    update = is_index(folder) and not overwrite
    if folder.is_dir() and any(folder.iterdir()) and not update and not overwrite:
        raise UserInputError(
            f"--out {folder} exists and is not an embedding index; pass --overwrite to replace "
            "it, or choose another folder"
        )
    check_writable_parent(folder / MANIFEST_NAME)
    previous: Manifest | None = Manifest.read(folder) if update else None
    model = load_vl_model(weights)
    if previous is not None:
        check_model(previous, model.sha256, f"--weights {weights}", folder)
        if previous.embed_dim != model.embed_dim:
            raise UserInputError(
                f"index {folder} holds {previous.embed_dim}-d embeddings; the model gives "
                f"{model.embed_dim}-d"
            )
    result = EmbedResult(index=folder, created=not update)
    weights_path = Path(weights).resolve()
    model_info = {
        "path": str(weights_path),
        "text": model.describe()["text"],
        "sensors": model.describe()["sensors"],
    }

    def collect(target: Path, existing_keys: set[str], existing_sources: set[str]) -> IndexRows:
        if reader_name is not None:
            return _reader_rows(
                model,
                reader_name,
                Path(data),  # type: ignore[arg-type]
                splits,
                options,
                existing_keys,
                target,
                batch_size,
                result,
                say,
            )
        files, passed = find_scene_files(
            Path(scenes),  # type: ignore[arg-type]
            preferred=list(model.sensors),
            sensors=wanted_sensors,
            exclude=folder,
        )
        result.passed_over.update(passed)
        if passed:
            say(f"passing over {len(passed)} file(s) that are not a sensor's bands (see --json)")
        todo = [f for f in files if str(f.path.resolve()) not in existing_sources]
        result.skipped += len(files) - len(todo)
        if len(files) > len(todo):
            say(f"skipping {len(files) - len(todo)} file(s) already in the index")
        if not todo:
            return IndexRows()
        side = tile if tile is not None else int(model.encoder.config.img_size)
        if side < 1 or overlap < 0 or overlap >= side:
            raise UserInputError(
                f"--tile must be positive and --overlap in [0, tile); got {side} and {overlap}"
            )
        return _scene_rows(
            model,
            weights_path,
            todo,
            target,
            side,
            overlap,
            units,
            batch_size,
            scheduler,
            workers,
            result,
            say,
        )

    if not update:
        with atomic_dir(folder, overwrite=overwrite) as tmp:
            rows = collect(tmp, set(), set())
            if not rows:
                what = f"--scenes {scenes}" if scenes is not None else f"--data {data}"
                detail = "; ".join(f"{p}: {r}" for p, r in list(result.failed.items())[:3]) or (
                    "no GeoTIFF whose band descriptions name a sensor's bands"
                    if scenes is not None
                    else "the reader's splits hold no samples"
                )
                raise UserInputError(f"nothing to embed in {what}: {detail}")
            write_index(
                tmp,
                rows,
                model_sha256=str(model.sha256),
                model_path=str(weights_path),
                dim=model.embed_dim,
                model_info=model_info,
            )
        result.added = result.rows = len(rows)
    else:
        assert previous is not None
        _, old = read_rows(folder)
        new = IndexRows()
        thumbnails = folder / THUMBNAILS
        kept = set(thumbnails.iterdir()) if thumbnails.is_dir() else set()
        try:
            new = collect(folder, set(old.keys), set(old.sources))
            if new:
                old.extend(new)
                write_index(
                    folder,
                    old,
                    model_sha256=str(model.sha256),
                    model_path=str(weights_path),
                    dim=model.embed_dim,
                    model_info=model_info,
                    previous=previous,
                )
        except BaseException:
            for thumb in new.thumbnails:  # this run's thumbnails are not in the index
                (folder / thumb).unlink(missing_ok=True)
            # nor are those workers wrote before a stop (Ctrl-C, SIGTERM) ended the collection
            for path in set(thumbnails.iterdir()) - kept if thumbnails.is_dir() else ():
                path.unlink(missing_ok=True)
            raise
        result.added, result.rows = len(new), len(old)
    result.seconds = time.perf_counter() - start
    if result.failed:
        raise UserInputError(
            f"{len(result.failed)} file(s) failed (first: {next(iter(result.failed.items()))[1]}); "
            f"the index holds the others ({result.rows} rows); run again to retry them"
        )
    return result
