"""The streaming scene predictor: a whole GeoTIFF/COG scene in, a georeferenced COG map out.

:func:`predict_scene` runs a :class:`~thinkingearth.infer.model.SceneModel` over scenes of any
size with memory that does not grow with the scene's height and grows only by a strip buffer with
its width:

1. check that the inputs are the acquisitions the model takes (:func:`check_acquisitions`),
   then open them as a :class:`~thinkingearth.data.scene.SceneStack` on the grid of the
   post-event (or only) image, reprojecting other grids on read; take the model's bands from
   each file by name, check overlap, decide (``auto``) or check each file's SAR units and say
   them once, and warn about Sentinel-2 values 10^4 off the model's scale;
2. if the model calibrates on the scene (Otsu thresholds), read the scene once at reduced
   resolution and let it pick its parameters;
3. read tiles of ``model.tile`` px overlapping by ``model.overlap`` px in row-major order (a
   background thread reads, fills no-data and normalises the next batches while the model runs),
   batch them through the network (with each tile's location, ground sample distance and the
   acquisition dates when the model takes metadata, :func:`tile_metadata`; said once in the log,
   missing dates included), and blend overlapping probabilities with separable raised-cosine
   weights (:func:`blend_weights`, never zero, so edge pixels still count). Only a strip of rows
   (one tile high, the scene wide) is held: rows that no later tile touches are finished, turned
   into class ids (argmax) and predictive entropy (with ``uncertainty="split"`` also its
   aleatoric and epistemic parts, below), and written out; the rows finished so far
   are the progress shown (:class:`~thinkingearth.count_progress.CountProgress`: a bar on a
   terminal, a line every ten seconds otherwise);
4. copy the streamed files to Cloud-Optimised GeoTIFFs, write the class names for GDAL and the
   QGIS styles, draw a PNG quicklook over the input, and rename everything into place, the
   class map last. Everything is written to temporary siblings first, so a failure or a kill
   leaves no partial output; GDAL's block cache is bounded throughout.

The outputs (:mod:`~thinkingearth.infer.writers`) keep the reference input's CRS and transform:
``OUT`` holds the class ids (``uint8`` with a colour table, 255 = no data: pixels without data in
any input), ``OUT_uncertainty.tif`` the predictive entropy in nats (``float32``, NaN = no data).

**Aleatoric and epistemic** (``uncertainty="split"``, ``predict --uncertainty split``; models
with trained weights, :attr:`~thinkingearth.infer.model.SceneModel.splits_uncertainty`). The
network is run per tile through the module's weight samples ``s = 1..S`` (MC dropout passes,
ensemble members); beside the mean class probabilities ``p̄ = mean_s p_s`` it blends the expected
entropy ``mean_s H[p_s]`` as one more channel, with the same weights. After blending, per pixel:
``entropy = H[p̄]`` (the total, as with ``total``), ``aleatoric`` = the blended expected entropy
(at most the total: rounding), ``epistemic = entropy − aleatoric`` (the mutual information between
the prediction and the weights, ``>= 0`` since ``H`` is concave), so the three bands sum exactly
before the writer's rounding (:func:`~thinkingearth.infer.writers.quantize`, 0.1 %). Blending
averages overlapping tiles like more weight samples, so where tiles overlap their disagreement
counts as epistemic too. With one weight sample (``S = 1``: plain or heteroscedastic heads)
``aleatoric`` is the entropy and ``epistemic`` 0 everywhere, and the tags say that the epistemic
part is not modelled.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import shlex
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from rasterio.windows import Window
from torch import Tensor

from thinkingearth import __version__
from thinkingearth.count_progress import CountProgress
from thinkingearth.data.scene import (
    Acquisition,
    AcquisitionTime,
    Grid,
    SarUnitsOption,
    SceneStack,
    iter_windows,
)
from thinkingearth.errors import UserInputError
from thinkingearth.fileio import atomic_file, check_new_file
from thinkingearth.infer.model import SceneModel, ScenePreview
from thinkingearth.infer.writers import (
    NODATA,
    SPLIT_UNCERTAINTY_BANDS,
    UNCERTAINTY_BANDS,
    RowWriter,
    categories_path,
    category_names_xml,
    class_style_qml,
    gdal_env,
    output_paths,
    style_path,
    uncertainty_path,
    uncertainty_style_qml,
    write_cog,
    write_quicklook,
)
from thinkingearth.viz import backdrop_rgb

__all__ = [
    "DEVICES",
    "UNCERTAINTY_OUTPUTS",
    "Device",
    "PredictionResult",
    "UncertaintyOutput",
    "blend_weights",
    "check_acquisitions",
    "check_new_outputs",
    "check_output_path",
    "check_uncertainty",
    "parse_uncertainty",
    "predict_scene",
    "quicklook_path",
    "resolve_device",
    "tile_metadata",
]

Device = Literal["cpu", "cuda", "auto"]
DEVICES: tuple[str, ...] = get_args(Device)
#: What the uncertainty file holds: ``total`` (the predictive entropy) or ``split`` (the
#: entropy, then its aleatoric and epistemic parts).
UncertaintyOutput = Literal["total", "split"]
UNCERTAINTY_OUTPUTS: tuple[str, ...] = get_args(UncertaintyOutput)

_FLUSH_ROWS = 32  # rows finished at a time: bounds the temporaries of argmax and entropy
_QUICKLOOK_SIDE = 1024  # the quicklook's longest side read from the outputs and the input, px


@dataclass(frozen=True)
class PredictionResult:
    """What :func:`predict_scene` did.

    Attributes:
        path: the COG written.
        quicklook: the PNG written, if any.
        shape: ``(height, width)`` of the output grid.
        tiles: tiles run through the network.
        seconds: wall time of the whole call.
        forward_seconds: time spent inside the network.
        valid_fraction: share of pixels with data in every input.
        class_fractions: share of valid pixels in each class.
        tags: metadata written into the file (model, classes, thresholds).
        timings: seconds spent in each step: ``calibrate``, ``wait_read`` (waiting for the reader
            thread), ``forward``, ``blend_write`` (blending, argmax, entropy, streaming out),
            ``cog`` and ``quicklook``.
        times: the date of each acquisition and where it came from.
        missing_dates: acquisitions whose date the model needed but got as unknown.
        uncertainty_bands: the bands of the uncertainty file, in order (their descriptions).
    """

    path: Path
    quicklook: Path | None
    shape: tuple[int, int]
    tiles: int
    seconds: float
    forward_seconds: float
    valid_fraction: float
    class_fractions: tuple[float, ...]
    tags: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    times: tuple[AcquisitionTime, ...] = ()
    missing_dates: tuple[str, ...] = ()
    uncertainty_bands: tuple[str, ...] = UNCERTAINTY_BANDS


def resolve_device(device: str, *, precision: str = "fp32") -> torch.device:
    """The torch device to predict on: ``cpu``, ``cuda`` or ``auto``.

    ``auto`` takes the GPU when PyTorch sees one, except for ``int8`` precision, whose quantised
    graph runs on the CPU with ONNX Runtime.

    Raises:
        UserInputError: An unknown device, ``cuda`` where PyTorch sees no CUDA device, or
            ``cuda`` with ``int8`` precision (one line each).
    """
    name = str(device).strip().lower()
    if name not in DEVICES:
        raise UserInputError(f"unknown device {device!r}; expected one of: {', '.join(DEVICES)}")
    if name == "auto":
        name = "cuda" if precision != "int8" and torch.cuda.is_available() else "cpu"
    elif name == "cuda":
        if precision == "int8":
            raise UserInputError(
                "int8 precision runs the quantised encoder on the CPU (ONNX Runtime); "
                "use --device cpu with --precision int8, or --precision fp32 on cuda"
            )
        if not torch.cuda.is_available():
            raise UserInputError(
                "--device cuda, but PyTorch sees no CUDA device here "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); "
                "use --device cpu or --device auto"
            )
    return torch.device(name)


def parse_uncertainty(value: str, flag: str = "--uncertainty") -> UncertaintyOutput:
    """``total`` or ``split``, any case; anything else is a one-line error naming the choices."""
    name = str(value).strip().lower()
    if name not in UNCERTAINTY_OUTPUTS:
        raise UserInputError(
            f"unknown {flag} {value!r}; expected one of: {', '.join(UNCERTAINTY_OUTPUTS)}"
        )
    return name  # type: ignore[return-value]


def check_uncertainty(model: SceneModel, uncertainty: UncertaintyOutput) -> None:
    """Raise a one-line error if the model cannot give the uncertainty asked for."""
    if uncertainty == "split" and not model.splits_uncertainty:
        raise UserInputError(
            f"--uncertainty split separates aleatoric from epistemic uncertainty over a trained "
            f"model's weight samples; the {model.name} model has none: give trained --weights, "
            "or use --uncertainty total"
        )


def blend_weights(size: int, overlap: int) -> np.ndarray:
    """1-D blending weights of a tile: a raised-cosine ramp over ``overlap`` px at both ends.

    ``w[i] = 0.5 - 0.5 cos(π (i + 0.5) / overlap)`` rises from near 0 to 1 over the overlap and
    mirrors at the far end; it is never 0, so a pixel covered by a tile's edge alone (the scene's
    border) still gets a weight. Tiles use the outer product of two of these.
    """
    weights = np.ones(size, dtype=np.float64)
    n = min(overlap, size // 2)
    if n > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
        weights[:n] = ramp
        weights[size - n :] = np.minimum(weights[size - n :], ramp[::-1])
    return weights.astype(np.float32)


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_output_path(out: Path, inputs: Sequence[Path]) -> None:
    """Raise a one-line error if ``out`` is an input or a folder (inputs stay untouched)."""
    for path in inputs:
        if _same_file(out, path):
            raise UserInputError(f"output {out} is also an input; choose another output path")
    if out.is_dir():
        raise UserInputError(f"output {out} is a folder; expected a .tif file path")


def check_new_outputs(out: Path, *, quicklook: bool, overwrite: bool) -> None:
    """Check, before any work, every file a prediction writes (one overwrite policy).

    The class map, its uncertainty COG, the QGIS styles and GDAL's class-names sidecar, and the
    quicklook: an existing one is refused unless ``overwrite`` (a style someone edited by hand is
    not replaced silently), naming ``--overwrite``; so is a map name not ending in ``.tif``.

    Raises:
        UserInputError: One line naming the first file that may not be written.
    """
    out = Path(out)
    check_new_file(out, overwrite=overwrite, suffixes=(".tif", ".tiff"), what="GeoTIFF map")
    unc = uncertainty_path(out)
    sidecars = {
        unc: "uncertainty GeoTIFF",
        style_path(out): "QGIS style",
        style_path(unc): "QGIS style",
        categories_path(out): "class-names sidecar",
    }
    if quicklook:
        sidecars[quicklook_path(out)] = "PNG quicklook"
    for path, what in sidecars.items():
        check_new_file(path, overwrite=overwrite, what=what)


def check_acquisitions(model: SceneModel, inputs: Sequence[Acquisition]) -> None:
    """Raise a one-line error unless ``inputs`` are as many acquisitions as the model takes.

    A model trained on three acquisitions (``--pre2``, ``--pre``, ``--post``) refuses two, and a
    model trained on two refuses three: its features were learnt from that many.
    """
    if len(inputs) in model.steps:
        return
    got = ", ".join(acq.name for acq in inputs) or "none"
    expected = " or ".join(str(s) for s in model.steps)
    raise UserInputError(
        f"the {model.task} model {model.name} takes {expected} input image(s) "
        f"({model.inputs_needed}); got {len(inputs)} ({got})"
    )


def tile_metadata(
    grid: Grid, windows: Sequence[Window], times: Sequence[float]
) -> dict[str, np.ndarray]:
    """Per-tile metadata of windows of a grid, as a network with metadata receives it.

    Args:
        grid: the output grid (the reference input's).
        windows: the tiles.
        times: the date of each acquisition, days since 1970-01-01 (NaN: unknown).

    Returns:
        float64 arrays: ``lon``, ``lat`` (WGS84 degrees of each window's centre) and ``gsd``
        (metres, :meth:`~thinkingearth.data.scene.Grid.gsd_metres` at the centre's latitude)
        ``[N]``, and ``time`` ``[N, T]``.
    """
    cols = np.array([w.col_off + w.width / 2.0 for w in windows], dtype=np.float64)
    rows = np.array([w.row_off + w.height / 2.0 for w in windows], dtype=np.float64)
    lon, lat = grid.lonlat(cols, rows)
    gsd = grid.gsd_metres(lat)
    time_row = np.asarray(list(times), dtype=np.float64).reshape(1, -1)
    return {
        "lon": lon,
        "lat": lat,
        "gsd": gsd,
        "time": np.repeat(time_row, len(windows), axis=0),
    }


def _describe_metadata(
    meta: dict[str, np.ndarray], inputs: Sequence[Acquisition], times: Sequence[AcquisitionTime]
) -> list[str]:
    """The log lines that say once what metadata the model gets, and what is missing."""
    gsd = meta["gsd"][np.isfinite(meta["gsd"])]
    if gsd.size == 0:
        where = "gsd unknown"
    elif float(gsd.max() - gsd.min()) < 0.005:
        where = f"gsd {float(gsd.mean()):.2f} m"
    else:
        where = f"gsd {float(gsd.min()):.2f}–{float(gsd.max()):.2f} m"
    dates = ", ".join(
        f"{acq.name} {t.iso()} ({t.source})" if t.known else f"{acq.name} unknown"
        for acq, t in zip(inputs, times, strict=True)
    )
    lines = [f"model metadata: tile centres' lon/lat, {where}; dates {dates}"]
    if not np.isfinite(meta["lon"]).all() or not np.isfinite(meta["lat"]).all():
        lines.append(
            "cannot place the output grid on the globe (CRS not transformable to WGS84): "
            "the model gets the location as unknown"
        )
    if gsd.size < meta["gsd"].size:
        lines.append(
            "the output grid's CRS has no known unit: the model gets the ground sample "
            "distance as unknown"
        )
    missing = [
        f"{acq.name} ({', '.join(p.name for p in acq.paths)})"
        for acq, t in zip(inputs, times, strict=True)
        if not t.known
    ]
    if missing:
        lines.append(
            f"no acquisition date for {', '.join(missing)}: no date given, no TIFFTAG_DATETIME "
            "tag and no YYYY-MM-DD or YYYYMMDD in the file name; the model gets it as unknown"
        )
    return lines


def _method_tags(model: SceneModel) -> dict[str, str]:
    """The uncertainty file's tags saying how the model's weights estimate uncertainty."""
    s = model.weight_samples
    samples = f"{s} weight samples per prediction" if s > 1 else "one weight sample"
    return {"UNCERTAINTY_METHOD": f"{model.uncertainty_method} ({samples})"}


def _split_tags(weight_samples: int) -> dict[str, str]:
    """The tags describing the bands of a split uncertainty file (nats, NaN = no data)."""
    if weight_samples > 1:
        aleatoric = (
            "aleatoric: expected entropy over the model's weight samples, mean_s H[p_s], "
            "blended over tiles, nats (NaN = no data)"
        )
        epistemic = (
            "epistemic: mutual information between the prediction and the weights, "
            "entropy - aleatoric (>= 0), nats; overlapping tiles' disagreement counts too "
            "(NaN = no data)"
        )
    else:
        note = "one weight sample: epistemic uncertainty not modelled"
        aleatoric = f"aleatoric: equal to the entropy ({note}), nats (NaN = no data)"
        epistemic = f"epistemic: 0 everywhere ({note}), nats (NaN = no data)"
    return {
        "BAND_2": aleatoric,
        "BAND_3": epistemic,
        "UNCERTAINTY_SPLIT": "entropy = aleatoric + epistemic (up to 0.1 % rounding)",
    }


def quicklook_path(out: Path) -> Path:
    """The PNG quicklook beside an output: ``flood.tif`` -> ``flood.png``."""
    return out.with_suffix(".png")


class _Strip:
    """Accumulates blended probabilities for one strip of rows (a tile high, the scene wide).

    ``split``: write the entropy's aleatoric and epistemic parts after it; ``expected``: the
    network's outputs carry the expected entropy over weight samples as channel ``K``, blended
    beside the probabilities (without it, one weight sample: aleatoric = entropy).
    """

    def __init__(
        self,
        classes: int,
        height: int,
        width: int,
        writer: RowWriter,
        *,
        split: bool = False,
        expected: bool = False,
    ) -> None:
        self.k = classes
        self.rows = height
        self.width = width
        self.top = 0
        self.split = split
        channels = classes + 1 if expected else classes
        self.acc = np.zeros((channels, height, width), dtype=np.float32)
        self.weight = np.zeros((height, width), dtype=np.float32)
        self.valid = np.zeros((height, width), dtype=bool)
        self.writer = writer
        self.counts = np.zeros(classes, dtype=np.int64)
        self.n_valid = 0

    def add(self, window: Window, probs: np.ndarray, valid: np.ndarray, w2d: np.ndarray) -> None:
        row, col = int(window.row_off), int(window.col_off)
        h, w = valid.shape
        if row > self.top:
            self.flush(row - self.top)
        r = row - self.top
        self.acc[:, r : r + h, col : col + w] += probs * w2d
        self.weight[r : r + h, col : col + w] += w2d
        self.valid[r : r + h, col : col + w] = valid

    def flush(self, n: int) -> None:
        """Finish the top ``n`` rows: write them and shift the strip up."""
        n = min(n, self.rows)
        for r0 in range(0, n, _FLUSH_ROWS):
            r1 = min(n, r0 + _FLUSH_ROWS)
            weight = np.maximum(self.weight[r0:r1], 1e-12)
            probs = self.acc[: self.k, r0:r1] / weight
            classes = probs.argmax(axis=0).astype(np.uint8)
            probs = np.clip(probs, 1e-12, 1.0)
            entropy = -(probs * np.log(probs)).sum(axis=0, dtype=np.float32)
            valid = self.valid[r0:r1]
            classes[~valid] = NODATA
            entropy[~valid] = np.nan
            self.counts += np.bincount(classes[valid].astype(np.int64), minlength=self.k)[: self.k]
            self.n_valid += int(valid.sum())
            if self.split:
                if self.acc.shape[0] > self.k:  # the blended expected entropy over weight samples
                    # At most the total (H is concave; only rounding breaks it): the parts sum.
                    aleatoric = np.minimum(self.acc[self.k, r0:r1] / weight, entropy)
                else:  # one weight sample: all of the entropy is aleatoric
                    aleatoric = entropy.copy()
                epistemic = entropy - aleatoric  # NaN where there is no data, as entropy
                aleatoric[~valid] = np.nan
                self.writer.write(self.top + r0, classes, np.stack([entropy, aleatoric, epistemic]))
            else:
                self.writer.write(self.top + r0, classes, entropy)
        keep = self.rows - n
        if keep > 0:
            self.acc[:, :keep] = self.acc[:, n:].copy()
            self.weight[:keep] = self.weight[n:].copy()
            self.valid[:keep] = self.valid[n:].copy()
        self.acc[:, keep:] = 0.0
        self.weight[keep:] = 0.0
        self.valid[keep:] = False
        self.top += n


def _prepare(
    x: np.ndarray, valid: np.ndarray, model: SceneModel, tile: tuple[int, int]
) -> np.ndarray:
    """Fill no-data, normalise and pad one tile ``[T, C, h, w]`` to the model's tile size."""
    fill = np.asarray(model.fill_values, dtype=np.float32)[None, :, None]
    x[:, :, ~valid] = fill
    if model.mean is not None and model.std is not None:
        mean = np.asarray(model.mean, dtype=np.float32)[None, :, None, None]
        std = np.asarray(model.std, dtype=np.float32)[None, :, None, None]
        x -= mean
        x /= std
    h, w = valid.shape
    th, tw = tile
    if (h, w) != (th, tw):
        pad = ((0, 0), (0, 0), (0, th - h), (0, tw - w))
        mode = "reflect" if min(h, w) > 1 else "edge"
        x = np.pad(x, pad, mode=mode)
    return x


#: Tiles ``[B, T, C, h, w]``, each tile's window and validity, and the index of the first tile.
_Batch = tuple[np.ndarray, list[tuple[Window, np.ndarray]], int]


def _batches(stack: SceneStack, model: SceneModel, windows: Sequence[Window]) -> Iterator[_Batch]:
    tile = (model.tile, model.tile)
    items: list[np.ndarray] = []
    meta: list[tuple[Window, np.ndarray]] = []
    first = 0
    for n, window in enumerate(windows):
        x, valid = stack.read(window)
        items.append(_prepare(x, valid, model, tile))
        meta.append((window, valid))
        if len(items) == model.batch_size:
            yield np.stack(items), meta, first
            items, meta, first = [], [], n + 1
    if items:
        yield np.stack(items), meta, first


class _Prefetch:
    """Run a batch iterator in a background thread, ``depth`` items ahead.

    A context manager: leaving it (normally or by an exception) stops the thread and waits for
    it, so the files it reads are never closed under it. Errors of the reader re-raise in the
    caller's thread.
    """

    def __init__(self, iterator: Iterator[_Batch], depth: int) -> None:
        self._iterator = iterator
        self._depth = depth
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _work(self) -> None:
        try:
            for item in self._iterator:
                if not self._put(("item", item)):
                    return
            self._put(("end", None))
        except BaseException as exc:
            self._put(("error", exc))

    def _put(self, entry: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __enter__(self) -> Iterator[_Batch]:
        if self._depth <= 0:
            return self._iterator
        self._thread = threading.Thread(target=self._work, name="thinkingearth-reader", daemon=True)
        self._thread.start()
        return self._items()

    def _items(self) -> Iterator[_Batch]:
        while True:
            kind, value = self._queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def _to_probabilities(out: Tensor, model: SceneModel, k: int, expected: bool = False) -> Tensor:
    """Class probabilities ``[B, K, h, w]``; ``expected``: ``[B, K + 1, h, w]`` as they come
    from :attr:`~thinkingearth.infer.model.SceneModel.split_network` (probabilities, then the
    expected entropy)."""
    channels = k + 1 if expected else k
    if out.ndim != 4 or out.shape[1] != channels:
        raise ValueError(
            f"model {model.name!r} returned shape {tuple(out.shape)}; "
            f"expected [B, {channels}, h, w]"
        )
    if expected or model.outputs == "probabilities":
        return out.float()
    return torch.softmax(out.float(), dim=1)


def predict_scene(
    model: SceneModel,
    inputs: Sequence[Acquisition],
    out: str | Path,
    *,
    sar_units: SarUnitsOption = "auto",
    quicklook: bool = True,
    device: str | torch.device = "cpu",
    cache_mb: int = 64,
    prefetch: int = 2,
    log: Callable[[str], None] | None = None,
    progress_every_s: float | None = None,
    command: str | None = None,
    uncertainty: UncertaintyOutput = "total",
) -> PredictionResult:
    """Predict a whole scene: a class COG, an uncertainty COG, their styles and a quicklook.

    Args:
        model: the scene model.
        inputs: acquisitions oldest first; the last one defines the output grid (flood:
            ``[pre2,] pre, post``; water and land cover: ``[image]``).
        out: the class map to write (replaced if it exists); beside it go the uncertainty
            (:func:`~thinkingearth.infer.writers.uncertainty_path`), the class names for GDAL
            (``.tif.aux.xml``), QGIS styles (``.qml``) and the quicklook (``.png``); see
            :mod:`~thinkingearth.infer.writers`.
        sar_units: units of SAR input files: ``auto`` (decided per file from its values),
            ``linear`` sigma0 or ``db``; stated units the values contradict are an error.
        quicklook: also write the PNG quicklook.
        device: torch device for the network; ``cpu``, ``cuda`` and ``auto`` go through
            :func:`resolve_device` (``auto``: the GPU when PyTorch sees one).
        cache_mb: GDAL block cache bound, megabytes.
        prefetch: batches read ahead in a background thread (0: read in the calling thread).
        log: where progress lines go (``None``: nowhere, and no progress bar either).
        progress_every_s: seconds between plain progress lines of finished rows (default:
            :data:`~thinkingearth.count_progress.LINE_EVERY_S`); on a terminal (standard error) a
            bar shows instead.
        command: the command line recorded in the outputs' tags (default: this process's
            ``sys.argv``; a Dask worker is given its client's).
        uncertainty: ``total``: the uncertainty file holds one band, ``entropy``; ``split``
            (models with trained weights): three, ``entropy``, ``aleatoric`` and ``epistemic``
            (see the module docstring). Any case.

    Returns:
        A :class:`PredictionResult`.

    Raises:
        UserInputError: bad inputs (see :class:`~thinkingearth.data.scene.SceneStack`), a wrong
            number of acquisitions (:func:`check_acquisitions`), an output path that is an
            input or a folder, a device PyTorch does not see, or ``split`` for a model without
            trained weights. Nothing is written then, and nothing partial is left behind on
            any failure.
    """
    start = time.perf_counter()
    out = Path(out)
    inputs = list(inputs)
    say = log or (lambda _m: None)
    if isinstance(device, str) and device.strip().lower() in DEVICES:
        device = resolve_device(device)
    uncertainty = parse_uncertainty(uncertainty, "uncertainty")
    check_uncertainty(model, uncertainty)
    check_acquisitions(model, inputs)
    split = uncertainty == "split"
    # Blend the expected entropy over weight samples only where there are several samples.
    expected = split and model.weight_samples > 1
    png = quicklook_path(out) if quicklook else None
    for path in (*output_paths(out), *([png] if png is not None else [])):
        check_output_path(path, [p for acq in inputs for p in acq.paths])
    unc_out = uncertainty_path(out)
    k = len(model.classes)
    with (
        gdal_env(cache_mb),
        SceneStack(
            inputs,
            sensor=model.sensor,
            bands=model.bands,
            units=sar_units,
            to_units=model.sar_units,
        ) as stack,
    ):
        grid = stack.grid
        for line in stack.notes:
            say(line)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            stack.check_scale(model.mean)
        network: Callable[..., Tensor] = model.network
        if expected:
            assert model.split_network is not None  # SceneModel checks it
            network = model.split_network
        timings = dict.fromkeys(
            ("calibrate", "wait_read", "forward", "blend_write", "cog", "quicklook"), 0.0
        )
        tick = time.perf_counter()
        preview: tuple[np.ndarray, np.ndarray] | None = None  # the reference image, decimated
        if model.calibrate is not None:
            x, valid = stack.read_decimated(model.calibration_side)
            factor = max(1, math.ceil(max(grid.shape) / model.calibration_side))
            network = model.calibrate(ScenePreview(x, valid, factor))
            if png is not None:  # the quicklook's backdrop, without a second read
                preview = (x[-1].copy(), valid.copy())
            del x, valid
        timings["calibrate"] = time.perf_counter() - tick
        if isinstance(network, torch.nn.Module):
            network = network.to(device).eval()
        tags = {
            "TASK": model.task,
            "MODEL": model.name,
            "CLASSES": ";".join(f"{i}={c}" for i, c in enumerate(model.classes)),
            "BAND_1": "class id (255 = no data)",
            "UNCERTAINTY": unc_out.name,
            "INPUTS": ";".join(str(p.name) for acq in inputs for p in acq.paths),
            **dict(model.tags),
            "COMMAND": command if command is not None else shlex.join(sys.argv),
            "TIFFTAG_SOFTWARE": f"thinkingearth {__version__}",
        }
        scene_tags = getattr(network, "scene_tags", None)
        if callable(scene_tags):
            tags.update(scene_tags())
        windows = list(iter_windows(grid.shape, model.tile, model.overlap))
        tile_meta: dict[str, Tensor] | None = None
        missing_dates: tuple[str, ...] = ()
        if model.metadata:
            arrays = tile_metadata(grid, windows, [t.days for t in stack.times])
            for line in _describe_metadata(arrays, inputs, stack.times):
                say(line)
            tile_meta = {k: torch.from_numpy(v) for k, v in arrays.items()}
            missing_dates = tuple(
                a.name for a, t in zip(inputs, stack.times, strict=True) if not t.known
            )
            tags["ACQUISITION_DATES"] = ";".join(
                f"{a.name}={t.iso()}" for a, t in zip(inputs, stack.times, strict=True)
            )
        th, tw = min(model.tile, grid.height), min(model.tile, grid.width)
        w2d = np.outer(blend_weights(th, model.overlap), blend_weights(tw, model.overlap))
        int8 = ", int8 encoder" if str(model.tags.get("PRECISION", "")).startswith("int8") else ""
        say(
            f"predicting {grid.width}×{grid.height} px in {len(windows)} tiles of "
            f"{model.tile} px ({model.name} {model.task}, on {device}{int8})"
        )
        unc_tags = {
            **{key: value for key, value in tags.items() if key != "UNCERTAINTY"},
            "BAND_1": f"{UNCERTAINTY_BANDS[0]}: predictive entropy of the blended class "
            f"probabilities, nats; 0 = certain, ln {k} = uniform over the classes (NaN = no data)",
            "CLASS_MAP": out.name,
        }
        if model.uncertainty_method is not None:
            unc_tags.update(_method_tags(model))
        unc_bands = UNCERTAINTY_BANDS
        if split:
            unc_bands = SPLIT_UNCERTAINTY_BANDS
            unc_tags.update(_split_tags(model.weight_samples))
        with contextlib.ExitStack() as outputs:
            # Temporary siblings, renamed in the reverse order of entering: the class map last,
            # so a class map that exists comes with every file beside it.
            tmp = {p: outputs.enter_context(atomic_file(p)) for p in reversed(output_paths(out))}
            tmp_cog, tmp_unc = tmp[out], tmp[unc_out]
            token = uuid.uuid4().hex[:8]
            stream = out.parent / f".{out.name}.stream-{token}.tif"
            stream_unc = out.parent / f".{out.name}.stream-{token}-uncertainty.tif"
            try:
                with (
                    RowWriter(
                        stream,
                        stream_unc,
                        grid,
                        colours=model.colours,
                        tags=tags,
                        uncertainty_tags=unc_tags,
                        uncertainty_bands=unc_bands,
                    ) as writer,
                    CountProgress(
                        grid.height,
                        unit="rows",
                        log=log,
                        prefix="[predict]",
                        every_s=progress_every_s,
                    ) as progress,
                ):
                    strip = _Strip(k, th, grid.width, writer, split=split, expected=expected)
                    with (
                        torch.inference_mode(),
                        _Prefetch(_batches(stack, model, windows), prefetch) as batches,
                    ):
                        while True:
                            tick = time.perf_counter()
                            item = next(batches, None)
                            timings["wait_read"] += time.perf_counter() - tick
                            if item is None:
                                break
                            batch, meta, first = item
                            tick = time.perf_counter()
                            x = torch.from_numpy(batch).to(device)
                            if tile_meta is not None:
                                rows = slice(first, first + len(meta))
                                result = network(x, {k: v[rows] for k, v in tile_meta.items()})
                            else:
                                result = network(x)
                            probs = _to_probabilities(result, model, k, expected).cpu().numpy()
                            timings["forward"] += time.perf_counter() - tick
                            tick = time.perf_counter()
                            for i, (window, valid) in enumerate(meta):
                                h, w = valid.shape
                                strip.add(window, probs[i, :, :h, :w], valid, w2d)
                            timings["blend_write"] += time.perf_counter() - tick
                            progress.update(strip.top)  # rows written so far
                    tick = time.perf_counter()
                    strip.flush(grid.height - strip.top)
                    progress.update(grid.height)
                timings["blend_write"] += time.perf_counter() - tick
                tick = time.perf_counter()
                write_cog(stream, tmp_cog)
                write_cog(stream_unc, tmp_unc)
                timings["cog"] = time.perf_counter() - tick
            finally:
                for path in (stream, stream_unc):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
            tmp[categories_path(out)].write_text(
                category_names_xml(model.classes), encoding="utf-8"
            )
            tmp[style_path(out)].write_text(
                class_style_qml(model.classes, model.colours), encoding="utf-8"
            )
            tmp[style_path(unc_out)].write_text(
                uncertainty_style_qml(math.log(max(2, k))), encoding="utf-8"
            )
            tick = time.perf_counter()
            if png is not None:
                if preview is None:
                    x, valid = stack.read_decimated(_QUICKLOOK_SIDE)
                    preview = (x[-1].copy(), valid)  # the reference (last) acquisition
                    del x
                backdrop, shows = backdrop_rgb(
                    preview[0],
                    model.bands,
                    preview[1],
                    sar_units=model.sar_units if stack.is_sar else None,
                )
                last = inputs[-1].name.lstrip("-")
                tmp_png = outputs.enter_context(atomic_file(png))
                write_quicklook(
                    tmp_cog,
                    tmp_unc,
                    tmp_png,
                    classes=model.classes,
                    colours=model.colours,
                    backdrop=backdrop,
                    backdrop_title=f"input ({last}): {shows}",
                    title=f"{model.task}: {out.name} ({model.name})",
                    max_side=_QUICKLOOK_SIDE,
                )
            timings["quicklook"] = time.perf_counter() - tick
    n_valid = max(1, strip.n_valid)
    result_info = PredictionResult(
        path=out,
        quicklook=png,
        shape=grid.shape,
        tiles=len(windows),
        seconds=time.perf_counter() - start,
        forward_seconds=timings["forward"],
        valid_fraction=strip.n_valid / float(grid.width * grid.height),
        class_fractions=tuple(float(c) / n_valid for c in strip.counts),
        tags=tags,
        timings=timings,
        times=stack.times,
        missing_dates=missing_dates,
        uncertainty_bands=unc_bands,
    )
    say(f"wrote {out} in {result_info.seconds:.1f} s ({result_info.valid_fraction:.0%} valid)")
    return result_info
