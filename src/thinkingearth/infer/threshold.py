"""Models that need no training: Otsu thresholds on Sentinel-1 VV backscatter (``--model threshold``).

* ``water`` (one date): water where speckle-filtered VV (dB) is below an Otsu threshold.
* ``flood`` (pre-event [+ second pre-event] and post-event): **flood** where the post-event VV
  is below the water threshold, the pixel was not water before the event, and its VV dropped
  significantly (the log-ratio ``10 log10(post / pre)`` is below a change threshold, ``pre`` the
  linear mean of the pre-event images); **permanent water** where the VV is below the water
  threshold in *every* image, before and after. A drop alone is not flood (a field going from
  −8 to −12 dB after harvest is still land), water before the event in only one of two pre-event
  images is not permanent, and water before but not after is no water.

Thresholds are scene-wide: the predictor first reads the scene at reduced resolution (a
:class:`~thinkingearth.infer.model.ScenePreview`), and :func:`split_otsu` picks them there. Otsu
on the whole histogram fails when water covers a few percent of a scene (it then splits two kinds
of land), so the threshold is Otsu's on the pooled pixels of *bimodal tiles* (the split-based
approach of Martinis et al. 2009): tiles of the preview whose own Otsu split has two populations
each ≥ 10 % of the tile, separated by Ashman's D ≥ 2, with the darker one below a physical prior
(−15 dB mean for open water in VV, a −3 dB mean drop for floods). When no tile is bimodal the
scene shows no dark population at all (no water, or no flood): Otsu on every pixel would then
split two kinds of land, so the physical defaults (−15 dB, −3 dB) are used instead, and a scene
without water maps (almost) no water. On the Sen1Floods11 hand-labelled chip this gives the
README's water F1 of about 0.72.

For floods each image gets its own water threshold. The post-event one decides what is water
after the event; each pre-event image's is capped at the post-event one, so the pre-event water
test is never more lenient than the post-event one: a pre-event image holds little water, its
bimodal tiles are then mostly dark land (smooth bare or wet fields), and its own Otsu cut sits
higher and would call the dark fields that later flood "permanent water". A pre-event image
with no bimodal tile uses the post-event threshold. The change threshold is Otsu's on the
log-ratio's bimodal tiles but never above −3 dB: the drop only guards against dark land that
flickers across the water threshold, so it must not come from harvested fields alone (their
tiles pass the test too, and Otsu then cuts at about −2 dB).

VV is speckle-filtered with a ``speckle_filter`` × ``speckle_filter`` boxcar in linear power
before thresholding (on the preview too, where it is at full resolution).

**Probabilities.** A hard threshold has no uncertainty, so each decision is made soft with a
logistic of the distance to its threshold: ``p = 1 / (1 + exp(-(t - x) / s))`` with
``s = softness_db`` (1 dB by default): a pixel 1 dB below the threshold is water with p ≈ 0.73,
3 dB below with p ≈ 0.95. For floods, ``p_post`` is water after the event, ``p_pre`` the product
of each pre-event image's water probability (water in all of them), ``p_drop`` the drop, and the
class probabilities are ``[1 - perm - flood, perm, flood]`` with ``perm = p_post p_pre`` and
``flood = p_post (1 - p_pre) p_drop`` (no water, permanent water, flood): a pixel is flood when
it is water after the event, was not water in every pre-event image, and darkened. The predictor's
entropy of these is the uncertainty band: highest near the thresholds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thinkingearth.errors import UserInputError
from thinkingearth.infer.model import TASK_CLASSES, SceneModel, ScenePreview

__all__ = [
    "ThresholdFlood",
    "ThresholdWater",
    "otsu_threshold",
    "split_otsu",
    "threshold_model",
]

#: Prior for bimodal-tile selection: mean VV (dB) of the darker population must be below this.
WATER_PRIOR_DB = -15.0
#: Prior for the log-ratio: mean change (dB) of the darker population must be below this.
DROP_PRIOR_DB = -3.0
#: Thresholds used when a scene has too few valid pixels to estimate its own.
DEFAULT_WATER_DB = -15.0
DEFAULT_DROP_DB = -3.0
_MIN_VALUES = 256


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a sample: the cut maximising the between-class variance.

    The histogram spans the 0.5-99.5 percentiles, so a few extreme values do not squeeze it.

    Raises:
        ValueError: for an empty sample.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError("Otsu's threshold needs at least one finite value")
    lo, hi = np.percentile(v, [0.5, 99.5])
    if not hi > lo:
        return float(lo)
    hist, edges = np.histogram(np.clip(v, lo, hi), bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist, dtype=np.float64)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centres)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    # The cut lies between bin k and k + 1: report the upper edge of bin k.
    return float(edges[int(np.argmax(between)) + 1])


def split_otsu(
    image: np.ndarray,
    valid: np.ndarray,
    *,
    tile: int = 32,
    min_share: float = 0.1,
    min_separation: float = 2.0,
    dark_below: float | None = None,
) -> tuple[float, int]:
    """Otsu's threshold on the pooled pixels of bimodal tiles (split-based thresholding).

    Args:
        image: ``[H, W]`` values (e.g. VV dB).
        valid: ``[H, W]`` bool mask of usable pixels.
        tile: tile side in pixels.
        min_share: each population of a tile's Otsu split must hold this share of its pixels.
        min_separation: Ashman's D of the two populations must reach this.
        dark_below: if given, the darker population's mean must be below it.

    Returns:
        ``(threshold, n_tiles)``; ``n_tiles`` = 0 means no tile was bimodal and the threshold is
        Otsu's on every valid pixel.
    """
    height, width = image.shape
    pooled: list[np.ndarray] = []
    for r in range(0, max(1, height - tile + 1), tile):
        for c in range(0, max(1, width - tile + 1), tile):
            ok = valid[r : r + tile, c : c + tile]
            values = image[r : r + tile, c : c + tile][ok]
            if values.size < 0.5 * ok.size or values.size < 16:
                continue
            cut = otsu_threshold(values)
            dark, bright = values[values < cut], values[values >= cut]
            if min(dark.size, bright.size) < min_share * values.size:
                continue
            spread = math.sqrt(float(dark.var()) + float(bright.var())) + 1e-12
            if math.sqrt(2.0) * abs(float(bright.mean()) - float(dark.mean())) / spread < (
                min_separation
            ):
                continue
            if dark_below is not None and float(dark.mean()) >= dark_below:
                continue
            pooled.append(values)
    if not pooled:
        return otsu_threshold(image[valid]), 0
    return otsu_threshold(np.concatenate(pooled)), len(pooled)


def _despeckle_db(x_db: Tensor, size: int) -> Tensor:
    """Boxcar-filter dB values in linear power (``[N, h, w]``); edges average what they have."""
    if size <= 1:
        return x_db
    linear = torch.pow(10.0, x_db / 10.0)
    smooth = F.avg_pool2d(
        linear[:, None], size, stride=1, padding=size // 2, count_include_pad=False
    )[:, 0]
    return 10.0 * torch.log10(smooth.clamp_min(1e-10))


def _despeckle_np(x_db: np.ndarray, size: int) -> np.ndarray:
    return _despeckle_db(torch.from_numpy(np.ascontiguousarray(x_db)), size).numpy()


def _linear_mean_db(x_db: Tensor, dim: int) -> Tensor:
    return 10.0 * torch.log10(torch.pow(10.0, x_db / 10.0).mean(dim).clamp_min(1e-10))


class ThresholdWater(nn.Module):
    """Water from one date: ``p(water) = σ((t - VV_dB) / s)`` on speckle-filtered VV.

    Input ``[B, T, C, h, w]`` in dB with VV as band 0; the last acquisition is used. Returns
    probabilities ``[B, 2, h, w]`` (land, water).
    """

    def __init__(self, water_db: float, *, softness_db: float = 1.0, speckle_filter: int = 3):
        super().__init__()
        self.water_db = float(water_db)
        self.softness_db = float(softness_db)
        self.speckle_filter = int(speckle_filter)

    def forward(self, x: Tensor) -> Tensor:
        vv = _despeckle_db(x[:, -1, 0], self.speckle_filter)
        water = torch.sigmoid((self.water_db - vv) / self.softness_db)
        return torch.stack([1.0 - water, water], dim=1)

    def scene_tags(self) -> dict[str, str]:
        """The scene's thresholds, for the output file's metadata."""
        return {"WATER_THRESHOLD_VV_DB": f"{self.water_db:.3f}"}


class ThresholdFlood(nn.Module):
    """Floods from SAR: water after the event that was not water before, and darkened.

    Input ``[B, T, C, h, w]`` in dB with VV as band 0, ``T`` ≥ 2: pre-event acquisitions first,
    the post-event one last. Returns probabilities ``[B, 3, h, w]`` (no water, permanent water,
    flood); see the module docstring.

    Args:
        water_db: water threshold (VV dB) of the post-event image.
        drop_db: change threshold (dB of ``10 log10(post / pre)``); negative.
        pre_water_db: water threshold of each pre-event image, oldest first (``T - 1`` values);
            default: ``water_db`` for each.
        softness_db: scale of the logistic that turns threshold distances into probabilities.
        speckle_filter: boxcar side in pixels (1 = none).
    """

    def __init__(
        self,
        water_db: float,
        drop_db: float,
        *,
        pre_water_db: Sequence[float] | None = None,
        softness_db: float = 1.0,
        speckle_filter: int = 3,
    ) -> None:
        super().__init__()
        self.water_db = float(water_db)
        self.drop_db = float(drop_db)
        self.pre_water_db = None if pre_water_db is None else tuple(map(float, pre_water_db))
        self.softness_db = float(softness_db)
        self.speckle_filter = int(speckle_filter)

    def forward(self, x: Tensor) -> Tensor:
        b, t, _, h, w = x.shape
        if self.pre_water_db is not None and len(self.pre_water_db) != t - 1:
            raise ValueError(
                f"the flood model was calibrated for {len(self.pre_water_db)} pre-event "
                f"image(s), got {t - 1}"
            )
        vv = _despeckle_db(x[:, :, 0].reshape(b * t, h, w), self.speckle_filter).reshape(b, t, h, w)
        pre_db = self.pre_water_db or (self.water_db,) * (t - 1)
        pre_threshold = torch.tensor(pre_db, dtype=vv.dtype, device=vv.device).view(1, -1, 1, 1)
        wet_post = torch.sigmoid((self.water_db - vv[:, -1]) / self.softness_db)
        wet_pre = torch.sigmoid((pre_threshold - vv[:, :-1]) / self.softness_db).prod(dim=1)
        change = vv[:, -1] - _linear_mean_db(vv[:, :-1], dim=1)
        drop = torch.sigmoid((self.drop_db - change) / self.softness_db)
        # The three products are each ≥ 0 and sum to 1 (no cancellation, no negative rounding).
        no_water = (1.0 - wet_post) + wet_post * (1.0 - wet_pre) * (1.0 - drop)
        permanent = wet_post * wet_pre
        flood = wet_post * (1.0 - wet_pre) * drop
        return torch.stack([no_water, permanent, flood], dim=1)

    def scene_tags(self) -> dict[str, str]:
        """The scene's thresholds, for the output file's metadata."""
        tags = {
            "WATER_THRESHOLD_VV_DB": f"{self.water_db:.3f}",
            "CHANGE_THRESHOLD_VV_DB": f"{self.drop_db:.3f}",
        }
        if self.pre_water_db is not None:
            tags["PRE_WATER_THRESHOLD_VV_DB"] = ",".join(f"{v:.3f}" for v in self.pre_water_db)
        return tags


def _bimodal_or(
    default: float, image: np.ndarray, valid: np.ndarray, *, dark_below: float
) -> float:
    """Split-based Otsu threshold, or ``default`` where no tile shows two populations."""
    threshold, n_tiles = split_otsu(image, valid, dark_below=dark_below)
    return threshold if n_tiles else default


@dataclass(frozen=True)
class _Calibrator:
    """Picks one scene's thresholds from its preview (picklable, for Dask workers)."""

    task: Literal["flood", "water"]
    softness_db: float
    speckle_filter: int

    def __call__(self, preview: ScenePreview) -> nn.Module:
        size = self.speckle_filter if preview.factor < self.speckle_filter else 1
        vv = _despeckle_np(preview.x[:, 0], size)  # [T, h, w] dB
        valid = preview.valid
        if int(valid.sum()) < _MIN_VALUES:
            warnings.warn(
                f"too few valid pixels ({int(valid.sum())}) to pick thresholds; using "
                f"{DEFAULT_WATER_DB} dB for water and {DEFAULT_DROP_DB} dB for change",
                UserWarning,
                stacklevel=2,
            )
            if self.task == "water":
                return ThresholdWater(
                    DEFAULT_WATER_DB,
                    softness_db=self.softness_db,
                    speckle_filter=self.speckle_filter,
                )
            return ThresholdFlood(
                DEFAULT_WATER_DB,
                DEFAULT_DROP_DB,
                softness_db=self.softness_db,
                speckle_filter=self.speckle_filter,
            )
        if self.task == "water":
            water_db = _bimodal_or(DEFAULT_WATER_DB, vv[-1], valid, dark_below=WATER_PRIOR_DB)
            return ThresholdWater(
                water_db, softness_db=self.softness_db, speckle_filter=self.speckle_filter
            )
        return _flood_model(vv, valid, self.softness_db, self.speckle_filter)


def _flood_model(
    vv: np.ndarray, valid: np.ndarray, softness_db: float, speckle_filter: int
) -> ThresholdFlood:
    """The flood model's thresholds from speckle-filtered VV dB ``[T, h, w]`` (post last)."""
    found = [split_otsu(image, valid, dark_below=WATER_PRIOR_DB) for image in vv]
    own = [threshold if n_tiles else None for threshold, n_tiles in found]
    post_db = own[-1]
    if post_db is None:  # no bimodal tile after the event: the pre-event images' water decides
        post_db = min((t for t in own[:-1] if t is not None), default=DEFAULT_WATER_DB)
    pre_db = [post_db if t is None else min(t, post_db) for t in own[:-1]]
    pre = 10.0 * np.log10(np.maximum((10.0 ** (vv[:-1] / 10.0)).mean(axis=0), 1e-10))
    drop_db = min(
        _bimodal_or(DEFAULT_DROP_DB, vv[-1] - pre, valid, dark_below=DROP_PRIOR_DB),
        DROP_PRIOR_DB,
    )
    return ThresholdFlood(
        post_db,
        drop_db,
        pre_water_db=pre_db,
        softness_db=softness_db,
        speckle_filter=speckle_filter,
    )


def _placeholder(x: Tensor) -> Tensor:
    raise RuntimeError("the threshold model must be calibrated on a scene before use")


def threshold_model(
    task: Literal["flood", "water"],
    *,
    tile: int = 512,
    overlap: int = 16,
    softness_db: float = 1.0,
    speckle_filter: int = 3,
    batch_size: int = 4,
) -> SceneModel:
    """The training-free Sentinel-1 model for ``flood`` or ``water`` (see the module docstring).

    Args:
        task: ``flood`` (pre [+ pre2] + post) or ``water`` (one image).
        tile: tile side in pixels.
        overlap: tile overlap in pixels (at least the speckle filter's half width).
        softness_db: scale of the logistic that turns threshold distances into probabilities.
        speckle_filter: boxcar side in pixels (1 = none).
        batch_size: tiles per forward pass.

    Raises:
        UserInputError: a task other than flood or water, or bad sizes.
    """
    if task not in ("flood", "water"):
        raise UserInputError(
            f"the threshold model maps flood or water, not {task!r}; land cover needs a "
            "trained model"
        )
    if not softness_db > 0:
        raise UserInputError(f"softness must be positive dB, got {softness_db}")
    if speckle_filter < 1 or speckle_filter % 2 == 0:
        raise UserInputError(f"the speckle filter needs an odd size ≥ 1, got {speckle_filter}")
    classes, colours = TASK_CLASSES[task]
    return SceneModel(
        network=_placeholder,
        task=task,
        classes=classes,
        colours=colours,
        sensor="sentinel-1-grd",
        bands=("VV",),
        steps=(2, 3) if task == "flood" else (1,),
        tile=tile,
        overlap=max(overlap, speckle_filter // 2),
        sar_units="db",
        outputs="probabilities",
        fill=(-15.0,),
        batch_size=batch_size,
        name="threshold",
        calibrate=_Calibrator(task, softness_db, speckle_filter),
        tags={
            "SPECKLE_FILTER_PX": str(speckle_filter),
            "SOFTNESS_DB": f"{softness_db:g}",
        },
    )
