"""Label noise you can dial: a Dataset wrapper that keeps the clean truth beside the noisy label.

:class:`NoisyLabels` wraps any Dataset of Samples. Item ``i`` is the Sample with its label
(``label`` / ``mask`` / ``target``) replaced by a noisy copy and the clean one kept under
``label_clean`` / ``mask_clean`` / ``target_clean``, so training sees the noise and evaluation
can score against the truth. The noise is drawn from a :class:`torch.Generator` seeded from
``(seed, index)`` only: an item gets the same noise in every epoch, in every worker process and
in every run.

Every model takes a ``rate`` in ``[0, 1)`` that :func:`measured_rate` measures back. Labels that
hold the ignore index are never changed and it is never introduced; NaN regression targets stay
NaN. The models, per task kind (:data:`NOISE_MODELS`; the first one is the default):

* **symmetric** (classification, segmentation, change): each label (each pixel) is flipped with
  probability ``rate`` to a class drawn uniformly from the OTHER classes (the ignore index is
  not a class). Rate: the expected share of labels (pixels) changed.
* **class-dependent** (classification): pair flipping (Han et al. 2018, Co-teaching), one fixed
  confusion: with probability ``rate`` class ``k`` becomes its neighbour, the next class id
  ``k + 1``, the last class becoming the first, skipping the ignore index
  (:func:`class_neighbours`). Rate: the expected share of labels changed.
* **drop-add** (multi-label, multi-hot ``[K]``): every (item, label) entry is flipped
  independently with probability ``rate``: a present label is dropped, an absent one added.
  Rate: the expected share of (item, label) entries changed (entries equal to the ignore index
  excluded), the same for present and absent labels.
* **boundary-shift** (segmentation, change): the mask is resampled (nearest neighbour) through a
  displacement field: a translation in a random direction plus a smooth random field of 30 %
  of its length, so edges move by a few pixels the way a misregistered or coarsely drawn map's
  do. The translation length is searched (doubling, then bisection) for the changed share
  closest to ``rate``. Rate: the share of valid pixels changed; met to within a few tenths of a
  percent where the mask has enough edges. A mask with few edges saturates below ``rate`` (a
  one-class mask has no edge to move and stays clean).
* **erode-dilate** (segmentation, change): a random half of the classes present (at least one,
  never all) grow into their neighbours (dilation) and so the others' blobs shrink (erosion):
  the pixels of the shrinking classes nearest (Euclidean distance transform) to a growing class
  take that class, nearest first, ties in random order, until ``rate`` of the valid pixels have
  changed (the count rounded at random, so the expectation is exact). Where the shrinking
  classes hold fewer pixels than that, the two sides swap (the larger side shrinks). Rate: the
  share of valid pixels changed, exact up to that rounding; it saturates where even the larger
  side is too small (it can always reach half of the valid pixels; a one-class mask stays
  clean).
* **missed-flood** (change; Kuro Siwo classes 0 no water, 1 permanent water, 2 flood,
  3 ignored): flood patches are relabelled as no water until ``rate`` of the flood pixels are
  missed. A patch is a connected piece (8-connected) of the flood class within one cell of a
  seeded random partition of the image into 16 Voronoi cells, so one large flood plain gives
  several patches (a mapper misses a stretch, not always the whole event). Patches are taken in
  random order while they fit; the patch that would overshoot is taken with the probability
  that makes the expected missed count exactly ``rate`` × the flood pixels. Rate: the share of
  the clean FLOOD pixels changed (``measured_rate(..., of_class=2)``); per item it is off by
  at most one patch, over many items it converges to ``rate``.
* **input-dependent** (classification, multi-label, segmentation, change): flips (as in
  symmetric; drop-add for multi-label) whose probability grows with how hard the input is.
  Hardness is read from the image, since Samples carry no cloud mask: for optical sensors the
  brightness (mean of the visible bands, 400–700 nm, or of all spectral bands if none is
  visible), because clouds (and snow) are the brightest surfaces; for SAR the local
  coefficient of variation (std / mean of linear sigma0 in a 5 × 5 window, dB converted from
  the Sample's ``units``, averaged over polarisations), high where speckle is strong or the
  scene heterogeneous. Time series use the last acquisition (the one a flood label describes).
  Per pixel for dense labels, the image mean per item otherwise. The hardness ``h`` becomes a
  rank ``u`` in ``[0, 1]`` against reference values from ``calibration_items`` evenly spaced
  items of the dataset (computed once, when the wrapper is built), and the flip probability
  is ``rate · (1 + a (2u − 1))`` with ``a = min(1, (1 − rate) / rate)``: from 0 on the easiest
  inputs to ``2 · rate`` on the hardest for ``rate ≤ 0.5``, never above 1. Its mean over the
  dataset is ``rate`` exactly when the references are the whole dataset (``calibration_items``
  at least its length); with fewer, up to the references' sampling error, a standard error of
  ``a · rate / sqrt(3 · calibration_items)`` (0.07 · rate for the default 64). Ranks make
  optical hardness independent of the image's scale (digital numbers or reflectance alike).
  Rate: the expected share of labels (pixels, entries) changed.
* **gaussian** (regression, ``[H, W]`` or ``[1, H, W]``, NaN unknown): each finite target
  value is perturbed with probability ``rate`` by ``N(0, σ²)``, σ the standard deviation of the
  Sample's finite targets (10 % of their absolute value where they are constant; an all-zero
  target has no scale and stays clean). Values are not clipped (a biomass may turn negative:
  that is the noise). Rate: the expected share of finite values changed.

Wrap the reader itself, before normalisation: ``input-dependent`` reads SAR as sigma0 in the
units the Sample states (``units``: linear, or dB converted); the other models never look at
the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor
from torch.utils.data import Dataset

from thinkingearth.errors import UserInputError
from thinkingearth.models.baselines import TaskKind
from thinkingearth.sensors import get_sensor

__all__ = [
    "DEFAULT_NOISE",
    "LABEL_KEYS",
    "NOISE_MODELS",
    "LabelNoise",
    "NoiseModel",
    "NoisyLabels",
    "check_noise_rate",
    "class_neighbours",
    "input_hardness",
    "measured_rate",
]

NoiseModel = Literal[
    "symmetric",
    "class-dependent",
    "drop-add",
    "boundary-shift",
    "erode-dilate",
    "missed-flood",
    "input-dependent",
    "gaussian",
]

#: Which noise models apply to which task kind; the first one is the kind's default.
NOISE_MODELS: dict[TaskKind, tuple[NoiseModel, ...]] = {
    "classification": ("symmetric", "class-dependent", "input-dependent"),
    "multilabel": ("drop-add", "input-dependent"),
    "segmentation": ("boundary-shift", "symmetric", "erode-dilate", "input-dependent"),
    "change": ("missed-flood", "boundary-shift", "erode-dilate", "symmetric", "input-dependent"),
    "regression": ("gaussian",),
}

#: The default noise model of each task kind.
DEFAULT_NOISE: dict[TaskKind, NoiseModel] = {kind: m[0] for kind, m in NOISE_MODELS.items()}

#: The Sample key that holds each task kind's label.
LABEL_KEYS: dict[TaskKind, str] = {
    "classification": "label",
    "multilabel": "label",
    "segmentation": "mask",
    "change": "mask",
    "regression": "target",
}

#: Kuro Siwo's flood and no-water classes: what ``missed-flood`` relabels, and to what.
FLOOD_CLASS = 2
NO_WATER_CLASS = 0

_DENSE_KINDS = ("segmentation", "change")
_VORONOI_CELLS = 16  # missed-flood: cells of the random partition that cut flood plains
_JITTER = 0.3  # boundary-shift: smooth displacement field, relative to the translation
_CV_WINDOW = 5  # input-dependent SAR: window of the local coefficient of variation
_REFERENCE_VALUES = 16384  # input-dependent: most reference hardness values kept


def check_noise_rate(rate: object) -> float:
    """``rate`` as a float if it is a noise rate: a number in ``[0, 1)`` (NaN is not).

    Raises:
        UserInputError: ``noise rate must be in [0, 1); got 1.2``.
    """
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate < 1.0:
        raise UserInputError(f"noise rate must be in [0, 1); got {rate}")
    return float(rate)


@dataclass(frozen=True)
class LabelNoise:
    """A noise model and its rate.

    Args:
        model: The noise model (see the module docstring and :data:`NOISE_MODELS`).
        rate: The share of labels to change, in ``[0, 1)``; what it is a share of depends on the
            model (module docstring); :func:`measured_rate` measures it back.
        seed: Seed of the noise; item ``i`` draws from a generator seeded by ``(seed, i)``.

    Raises:
        UserInputError: For an unknown model, a rate outside ``[0, 1)`` or a negative seed.
    """

    model: NoiseModel
    rate: float
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model not in get_args(NoiseModel):
            raise UserInputError(
                f"unknown noise model {self.model!r}; expected one of: "
                + ", ".join(get_args(NoiseModel))
            )
        object.__setattr__(self, "rate", check_noise_rate(self.rate))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UserInputError(f"noise seed must be a non-negative integer; got {self.seed}")


def class_neighbours(num_classes: int, ignore_index: int | None = None) -> dict[int, int]:
    """The fixed confusion of ``class-dependent`` noise: each class -> the class it flips to.

    Pair flipping: class ``k`` flips to the next class id, the last one to the first, skipping
    the ignore index (it is not a class). ``class_neighbours(4) == {0: 1, 1: 2, 2: 3, 3: 0}``.
    """
    classes = _valid_classes(num_classes, ignore_index)
    return {int(c): int(classes[(i + 1) % len(classes)]) for i, c in enumerate(classes)}


def _valid_classes(num_classes: int, ignore_index: int | None) -> Tensor:
    return torch.tensor([c for c in range(num_classes) if c != ignore_index], dtype=torch.int64)


def _generator(seed: int, index: int) -> torch.Generator:
    """A generator that depends on ``(seed, index)`` only (same item, same noise everywhere)."""
    s0, s1 = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(s0) << 31) ^ int(s1))


class NoisyLabels(Dataset[dict[str, Any]]):
    """A Dataset of Samples whose labels carry dialled noise, the clean ones kept beside them.

    Item ``i`` is ``dataset[i]`` (a shallow copy: the wrapped Samples are never modified) with
    the label key of ``kind`` (:data:`LABEL_KEYS`) replaced by the noisy label and the clean one
    under ``<key>_clean``. Rate 0 returns labels equal to the clean ones.

    Args:
        dataset: Samples in the Sample contract with the label of ``kind``.
        noise: The model, rate and seed.
        kind: The task kind (``classification``, ``multilabel``, ``segmentation``, ``change``,
            ``regression``).
        num_classes: Classes (labels for multi-label; unused for regression).
        ignore_index: Label value that is never changed nor introduced.
        flood_class: ``missed-flood``: the class that is missed (Kuro Siwo: 2, flood).
        no_water_class: ``missed-flood``: what a missed flood pixel becomes (Kuro Siwo: 0).
        calibration_items: ``input-dependent``: items whose hardness sets the ranks (evenly
            spaced over the dataset; all of them if the dataset is smaller).

    Raises:
        UserInputError: For a model that does not apply to ``kind`` (the message names those
            that do), an unknown kind, too few classes, or a label outside the classes.
    """

    def __init__(
        self,
        dataset: Dataset[dict[str, Any]],
        noise: LabelNoise,
        kind: TaskKind,
        num_classes: int,
        ignore_index: int | None = None,
        *,
        flood_class: int = FLOOD_CLASS,
        no_water_class: int = NO_WATER_CLASS,
        calibration_items: int = 64,
    ) -> None:
        if kind not in NOISE_MODELS:
            raise UserInputError(
                f"unknown task kind {kind!r} for label noise; expected one of: "
                + ", ".join(NOISE_MODELS)
            )
        allowed = NOISE_MODELS[kind]
        if noise.model not in allowed:
            raise UserInputError(
                f"noise model {noise.model!r} does not apply to {kind} labels; "
                f"expected one of: {', '.join(allowed)}"
            )
        self.dataset = dataset
        self.noise = noise
        self.kind: TaskKind = kind
        self.key = LABEL_KEYS[kind]
        self.num_classes = int(num_classes)
        self.ignore_index = None if kind == "regression" else ignore_index
        if kind in ("classification", "segmentation", "change"):
            if len(_valid_classes(self.num_classes, self.ignore_index)) < 2:
                raise UserInputError(
                    f"{kind} label noise needs at least 2 classes besides the ignore index; "
                    f"got num_classes={num_classes}"
                )
        elif kind == "multilabel" and self.num_classes < 1:
            raise UserInputError(f"multilabel noise needs at least 1 label; got {num_classes}")
        if noise.model == "missed-flood":
            for name, value in (("flood_class", flood_class), ("no_water_class", no_water_class)):
                if not 0 <= value < self.num_classes or value == self.ignore_index:
                    raise UserInputError(
                        f"missed-flood {name} must be a class in 0..{self.num_classes - 1} "
                        f"other than the ignore index; got {value}"
                    )
            if flood_class == no_water_class:
                raise UserInputError("missed-flood needs flood_class != no_water_class")
        self.flood_class = int(flood_class)
        self.no_water_class = int(no_water_class)
        self._classes = _valid_classes(self.num_classes, self.ignore_index)
        # position of each class id in self._classes (ignore index: -1, never looked up)
        self._position = torch.full((max(self.num_classes, 1),), -1, dtype=torch.int64)
        self._position[self._classes] = torch.arange(len(self._classes))
        self._reference: np.ndarray | None = None
        if noise.model == "input-dependent" and noise.rate > 0:
            if calibration_items < 1:
                raise UserInputError(
                    f"calibration_items must be at least 1; got {calibration_items}"
                )
            self._reference = self._calibrate(calibration_items)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:  # the noise follows the item, however it is addressed
            index += len(self)
        sample = dict(self.dataset[index])
        if self.key not in sample:
            raise UserInputError(
                f"{self.kind} label noise needs Samples with {self.key!r}; item {index} has "
                + ", ".join(sorted(sample))
            )
        clean = sample[self.key]
        clean_tensor = torch.as_tensor(clean)
        if self.noise.rate == 0:
            noisy_tensor = clean_tensor.clone()
        else:
            noisy_tensor = self._noisy(sample, clean_tensor, _generator(self.noise.seed, index))
        noisy: Any = noisy_tensor
        if not isinstance(clean, Tensor):  # keep the reader's type (a Python int label)
            noisy = noisy_tensor.item() if noisy_tensor.ndim == 0 else noisy_tensor.numpy()
        sample[self.key] = noisy
        sample[f"{self.key}_clean"] = clean
        return sample

    # ------------------------------------------------------------------------------------------

    def _noisy(self, sample: dict[str, Any], clean: Tensor, g: torch.Generator) -> Tensor:
        model, rate = self.noise.model, self.noise.rate
        if self.kind == "regression":
            return _gaussian(clean, rate, g)
        valid = clean != self.ignore_index if self.ignore_index is not None else None
        valid = torch.ones_like(clean, dtype=torch.bool) if valid is None else valid
        if self.kind != "multilabel":
            self._check_classes(clean, valid)
        elif not bool(((clean[valid] == 0) | (clean[valid] == 1)).all()):
            raise UserInputError(
                "multilabel noise needs multi-hot labels of 0 and 1 (besides the ignore index)"
            )
        if self.kind == "multilabel":
            p: Tensor | float = rate
            if model == "input-dependent":
                p = self._flip_probability(self._hardness(sample, dense=False))
            return _drop_add(clean, p, valid, g)
        if self.kind in _DENSE_KINDS and clean.ndim != 2:
            raise UserInputError(
                f"{self.kind} label noise needs an [H, W] mask; got shape {tuple(clean.shape)}"
            )
        if model == "symmetric":
            return self._flip(clean, rate, valid, g)
        if model == "class-dependent":
            return self._flip(clean, rate, valid, g, pair=True)
        if model == "input-dependent":
            hardness = self._hardness(sample, dense=self.kind in _DENSE_KINDS)
            if hardness.ndim == 2 and hardness.shape != clean.shape:
                hardness = F.interpolate(
                    hardness[None, None], size=tuple(clean.shape), mode="bilinear"
                )[0, 0]
            return self._flip(clean, self._flip_probability(hardness), valid, g)
        if model == "boundary-shift":
            return _boundary_shift(clean, rate, valid, self.ignore_index, g)
        if model == "erode-dilate":
            return _erode_dilate(clean, rate, valid, g)
        if model == "missed-flood":
            return _missed_flood(clean, rate, self.flood_class, self.no_water_class, g)
        raise AssertionError(f"unhandled noise model {model}")  # guarded in __init__

    def _check_classes(self, clean: Tensor, valid: Tensor) -> None:
        values = clean[valid]
        if values.numel() and (values.min() < 0 or values.max() >= self.num_classes):
            bad = values[(values < 0) | (values >= self.num_classes)][0]
            raise UserInputError(
                f"{self.kind} label {int(bad)} is outside the classes 0..{self.num_classes - 1}"
                + (
                    f" and is not the ignore index {self.ignore_index}"
                    if self.ignore_index is not None
                    else ""
                )
            )

    def _flip(
        self,
        clean: Tensor,
        p: Tensor | float,
        valid: Tensor,
        g: torch.Generator,
        pair: bool = False,
    ) -> Tensor:
        """Flip each label with probability ``p`` to another class (uniform, or the neighbour)."""
        m = len(self._classes)
        flip = (torch.rand(clean.shape, generator=g) < p) & valid
        offset = torch.randint(1, m, clean.shape, generator=g) if m > 2 and not pair else 1
        position = self._position[clean.clamp(0, self.num_classes - 1)]
        new = self._classes[(position + offset) % m]
        return torch.where(flip, new.to(clean.dtype), clean)

    # --- input-dependent ------------------------------------------------------------------------

    def _hardness(self, sample: dict[str, Any], *, dense: bool) -> Tensor:
        hardness = input_hardness(sample)
        hardness = torch.nan_to_num(hardness, nan=0.0)  # no data counts as easy
        return hardness if dense else hardness.mean()

    def _calibrate(self, items: int) -> np.ndarray:
        """Reference hardness values (sorted) from evenly spaced items of the dataset."""
        n = len(self)
        if n == 0:
            raise UserInputError("input-dependent noise needs a non-empty dataset")
        chosen = sorted({int(i) for i in np.linspace(0, n - 1, min(items, n)).round()})
        dense = self.kind in _DENSE_KINDS
        values = [self._hardness(self.dataset[i], dense=dense).reshape(-1) for i in chosen]
        reference = torch.cat(values).float()
        if reference.numel() > _REFERENCE_VALUES:  # an even subsample keeps the distribution
            step = reference.numel() / _REFERENCE_VALUES
            reference = reference[(torch.arange(_REFERENCE_VALUES) * step).long()]
        return np.sort(reference.numpy())

    def _flip_probability(self, hardness: Tensor) -> Tensor:
        """``rate · (1 + a (2u − 1))``, ``u`` the rank of the hardness among the references."""
        assert self._reference is not None
        reference, rate = self._reference, self.noise.rate
        h = hardness.float().numpy()
        below = np.searchsorted(reference, h, side="left")
        below_or_equal = np.searchsorted(reference, h, side="right")
        u = torch.from_numpy(np.asarray((below + below_or_equal) / (2.0 * reference.size)))
        a = min(1.0, (1.0 - rate) / rate)
        return (rate * (1.0 + a * (2.0 * u.float() - 1.0))).clamp(0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Hardness of an input
# --------------------------------------------------------------------------------------------


def input_hardness(sample: dict[str, Any]) -> Tensor:
    """How hard each pixel of a Sample's image is to label, ``[H, W]`` float32 (larger: harder).

    Optical sensors: brightness, the mean of the visible bands (400–700 nm; all spectral bands
    if none is visible): clouds and snow are the brightest surfaces. SAR: the local coefficient
    of variation (std / mean in a 5 × 5 window) of linear sigma0 (decibels converted, from the
    Sample's ``units``), averaged over the intensity channels: strong speckle and heterogeneous
    scenes. A time series ``[T, C, H, W]`` uses its last acquisition. Values are meaningful
    only as ranks within one sensor (the scale is the data's).

    Raises:
        UserInputError: For a Sample without ``image`` and ``sensor``, or a sensor that is
            neither optical nor SAR.
    """
    if "image" not in sample or "sensor" not in sample:
        raise UserInputError("input-dependent noise needs Samples with 'image' and 'sensor'")
    sensor = get_sensor(sample["sensor"])
    image = torch.as_tensor(sample["image"]).float()
    if image.ndim == 4:
        image = image[-1]
    if image.ndim != 3:
        raise UserInputError(
            f"input-dependent noise needs an image [C, H, W] or [T, C, H, W]; "
            f"got shape {tuple(image.shape)}"
        )
    names = tuple(sample.get("bands") or ())
    bands = sensor.select(names) if len(names) == image.shape[0] else None
    if sensor.kind == "optical":
        channels = list(range(image.shape[0]))
        if bands is not None:
            spectral = [i for i, b in enumerate(bands) if b.is_spectral]
            visible = [i for i in spectral if 400.0 <= (bands[i].wavelength_nm or 0.0) <= 700.0]
            channels = visible or spectral or channels
        return image[channels].mean(dim=0)
    if sensor.kind == "sar":
        channels = list(range(image.shape[0]))
        if bands is not None:
            intensity = [
                i for i, b in enumerate(bands) if b.is_sar and b.component in (None, "intensity")
            ]
            channels = intensity or channels
        # numpy on purpose: tiny per-item filters, no thread pool to wait for in data workers
        x = image[channels].double().numpy()
        if str(sample.get("units", "linear")).lower() == "db":
            x = np.power(10.0, x / 10.0)
        x = np.nan_to_num(np.clip(x, 0.0, None))
        window = (1, _CV_WINDOW, _CV_WINDOW)
        mean = ndimage.uniform_filter(x, size=window, mode="reflect")
        var = np.clip(ndimage.uniform_filter(x * x, size=window, mode="reflect") - mean**2, 0, None)
        cv = np.where(mean > 0, np.sqrt(var) / np.maximum(mean, 1e-12), 0.0)
        return torch.from_numpy(cv.mean(axis=0).astype(np.float32))
    raise UserInputError(
        f"input-dependent noise needs an optical or SAR image; got {sensor.name} ({sensor.kind})"
    )


# --------------------------------------------------------------------------------------------
# The noise models
# --------------------------------------------------------------------------------------------


def _drop_add(clean: Tensor, p: Tensor | float, valid: Tensor, g: torch.Generator) -> Tensor:
    """Flip each multi-hot entry (drop a present label, add an absent one) with probability p."""
    flip = (torch.rand(clean.shape, generator=g) < p) & valid
    return torch.where(flip, (1 - clean).to(clean.dtype), clean)


def _gaussian(clean: Tensor, rate: float, g: torch.Generator) -> Tensor:
    """Perturb a share ``rate`` of the finite targets by N(0, σ²), σ their std."""
    target = clean if clean.is_floating_point() else clean.float()
    finite = torch.isfinite(target)
    perturb = (torch.rand(target.shape, generator=g) < rate) & finite
    noise = torch.randn(target.shape, generator=g, dtype=target.dtype)
    values = target[finite].double()
    if values.numel() == 0:
        return target.clone()
    sigma = float(values.std(unbiased=False)) if values.numel() > 1 else 0.0
    if sigma == 0.0:
        sigma = 0.1 * abs(float(values.mean()))  # a constant target: 10 % of its value
    return torch.where(perturb, target + sigma * noise, target)


def _boundary_shift(
    clean: Tensor, rate: float, valid: Tensor, ignore_index: int | None, g: torch.Generator
) -> Tensor:
    """Resample the mask through a displacement field whose length is searched to meet ``rate``."""
    h, w = clean.shape
    angle = float(torch.rand((), generator=g)) * 2.0 * math.pi
    jitter = F.interpolate(
        torch.randn(1, 2, 3, 3, generator=g), size=(h, w), mode="bilinear", align_corners=True
    )[0]
    dy = math.sin(angle) + _JITTER * jitter[0]
    dx = math.cos(angle) + _JITTER * jitter[1]
    yy = torch.arange(h, dtype=torch.float32)[:, None]
    xx = torch.arange(w, dtype=torch.float32)[None, :]
    n_valid = int(valid.sum())
    if n_valid == 0:
        return clean.clone()

    def shifted(length: float) -> tuple[Tensor, float]:
        sy = (yy - length * dy).round().clamp(0, h - 1).long()
        sx = (xx - length * dx).round().clamp(0, w - 1).long()
        out = clean[sy, sx]
        keep = ~valid if ignore_index is None else ~valid | (out == ignore_index)
        out = torch.where(keep, clean, out)
        return out, float((out != clean).sum()) / n_valid

    best, best_gap = clean.clone(), rate
    lo, hi, limit = 0.0, 1.0, float(max(h, w))
    while True:  # double the length until the share reaches the rate (or the mask saturates)
        out, share = shifted(hi)
        if abs(share - rate) < best_gap:
            best, best_gap = out, abs(share - rate)
        if share >= rate or hi >= limit:
            break
        lo, hi = hi, hi * 2.0
    if share >= rate:
        for _ in range(12):  # bisect between the last two lengths for the share closest to rate
            mid = 0.5 * (lo + hi)
            out, share = shifted(mid)
            if abs(share - rate) < best_gap:
                best, best_gap = out, abs(share - rate)
            lo, hi = (mid, hi) if share < rate else (lo, mid)
    return best


def _erode_dilate(clean: Tensor, rate: float, valid: Tensor, g: torch.Generator) -> Tensor:
    """Grow a random half of the classes into the others, nearest pixels first, ``rate`` of them."""
    present = torch.unique(clean[valid])
    n_valid = int(valid.sum())
    # draw everything up front so the stream does not depend on what the mask holds
    grow_draw = torch.rand(max(len(present), 1), generator=g)
    forced = int(torch.randint(0, max(len(present), 1), (), generator=g))
    rounding = float(torch.rand((), generator=g))
    tie_break = torch.rand(clean.shape, generator=g)
    if len(present) < 2:
        return clean.clone()  # one class: no edge to move
    grow = grow_draw < 0.5
    if bool(grow.all()) or not bool(grow.any()):
        grow = torch.zeros_like(grow)
        grow[forced] = True
    growing = torch.isin(clean, present[grow]) & valid
    wanted = math.floor(rate * n_valid + rounding)
    if int((valid & ~growing).sum()) < wanted and int(growing.sum()) > int(
        (valid & ~growing).sum()
    ):
        growing = valid & ~growing  # too little to erode: the other side grows instead
    candidates = valid & ~growing
    distance, (iy, ix) = ndimage.distance_transform_edt(
        ~growing.numpy(), return_distances=True, return_indices=True
    )
    nearest = clean[torch.from_numpy(iy), torch.from_numpy(ix)]
    count = min(wanted, int(candidates.sum()))
    flat = torch.nonzero(candidates.reshape(-1)).squeeze(1)
    dist = torch.from_numpy(distance).reshape(-1)[flat]
    ties = tie_break.reshape(-1)[flat]
    order = torch.sort(ties, stable=True).indices  # random order first, then stably by distance
    order = order[torch.sort(dist[order], stable=True).indices]
    chosen = flat[order[:count]]
    out = clean.clone().reshape(-1)
    out[chosen] = nearest.reshape(-1)[chosen]
    return out.reshape(clean.shape)


def _missed_flood(
    clean: Tensor, rate: float, flood_class: int, no_water_class: int, g: torch.Generator
) -> Tensor:
    """Relabel random flood patches as no water until ``rate`` of the flood pixels are missed."""
    h, w = clean.shape
    seeds = (torch.rand(_VORONOI_CELLS, 2, generator=g) * torch.tensor([h, w])).double().numpy()
    flood_t = clean == flood_class
    total = int(flood_t.sum())
    if total == 0:
        return clean.clone()
    flood = flood_t.numpy()
    yy, xx = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    d2 = (yy[None] - seeds[:, 0, None, None]) ** 2 + (xx[None] - seeds[:, 1, None, None]) ** 2
    cell = d2.argmin(axis=0)
    # one layer per cell, 8-connected within a layer only: the connected pieces of each cell
    layers = flood[None] & (cell[None] == np.arange(_VORONOI_CELLS)[:, None, None])
    within = np.zeros((3, 3, 3), dtype=bool)
    within[1] = True
    labelled, _ = ndimage.label(layers, structure=within)
    patches = torch.from_numpy(labelled.max(axis=0).astype(np.int64))
    ids, sizes = torch.unique(patches[flood_t], return_counts=True)
    order = torch.randperm(len(ids), generator=g)
    coin = float(torch.rand((), generator=g))
    target = rate * total
    missed, take = 0, []
    for i in order.tolist():
        size = int(sizes[i])
        if missed + size <= target:
            take.append(int(ids[i]))
            missed += size
            continue
        # the patch that overshoots: taken with the probability that makes E[missed] = target
        if coin < (target - missed) / size:
            take.append(int(ids[i]))
        break
    out = clean.clone()
    out[torch.isin(patches, torch.tensor(take, dtype=patches.dtype)) & flood_t] = no_water_class
    return out


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def measured_rate(
    clean: Tensor | Sequence[Any],
    noisy: Tensor | Sequence[Any],
    kind: TaskKind,
    *,
    ignore_index: int | None = None,
    of_class: int | None = None,
) -> float:
    """The share of labels (pixels, multi-label entries, finite targets) that the noise changed.

    Args:
        clean: Clean labels: a tensor (a batch) or a sequence of per-item labels (any shapes).
        noisy: The noisy labels, the same shapes.
        kind: The task kind: entries equal to ``ignore_index`` (classification, multi-label,
            segmentation, change) or NaN in ``clean`` (regression) are left out.
        ignore_index: The ignore index.
        of_class: Count only entries whose clean label is this class (``missed-flood``: the
            share of the flood pixels missed is ``of_class=2``).

    Returns:
        Changed entries / counted entries (NaN when nothing is counted).

    Raises:
        UserInputError: For an unknown kind or labels of different shapes.
    """
    if kind not in NOISE_MODELS:
        raise UserInputError(
            f"unknown task kind {kind!r}; expected one of: " + ", ".join(NOISE_MODELS)
        )
    a, b = _flatten(clean), _flatten(noisy)
    if a.shape != b.shape:
        raise UserInputError(
            f"clean and noisy labels differ in size: {a.numel()} and {b.numel()} entries"
        )
    if kind == "regression":
        counted = torch.isfinite(a.double())
    else:
        counted = torch.ones_like(a, dtype=torch.bool)
        if ignore_index is not None:
            counted &= a != ignore_index
    if of_class is not None:
        counted &= a == of_class
    n = int(counted.sum())
    if n == 0:
        return math.nan
    return float((a[counted] != b[counted]).sum()) / n


def _flatten(labels: Tensor | Sequence[Any]) -> Tensor:
    if isinstance(labels, Tensor):
        return labels.reshape(-1)
    if isinstance(labels, np.ndarray):
        return torch.from_numpy(labels).reshape(-1)
    parts = [torch.as_tensor(x).reshape(-1) for x in labels]
    return torch.cat(parts) if parts else torch.empty(0)
