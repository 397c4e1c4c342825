"""Labels turned into sentences: captions for image-text training from labelled data sets.

Vision-language recipes need a sentence per image. Where a data set ships text (the synthetic
world's scene captions, BigEarthNet.txt, GAIA) that text is used; where it ships labels, this
module writes the sentence from them:

* **BigEarthNet** (v1 43-class CORINE names, v2/reBEN 19-class nomenclature), multi-label:
  ``"A satellite image of arable land, pastures and inland waters."``
  (:func:`bigearthnet_caption`);
* **Kuro Siwo** flood masks (0 no water, 1 permanent water, 2 flood; 3 and anything else ignored):
  the shares of flood and permanent water in words,
  ``"A Sentinel-1 radar image of land with extensive flooding: 31% flooded and 4% permanent
  water."`` (:func:`flood_caption`);
* **Copernicus-Bench** classification, multi-label and segmentation tasks: the class name(s), or
  the class shares of a mask (:func:`class_caption`, :func:`mask_caption`);
* **EuroSAT-MS**: the class name;
* the **synthetic world** already writes a caption per scene: it is reused.

:func:`caption_for` picks the rule from the Sample itself, or from a ``reader`` hint (the reader
names of :mod:`thinkingearth.data.readers`), so recipes and benchmarks call one function.

Captions are deterministic. ``seed=None`` gives the canonical sentence (first template, classes
in their nomenclature order); an integer seed varies the template and the order of the class
names per sample — a stable function of the seed and the sample's id (``name``, ``tile``,
``id``), never of Python's randomised ``hash`` — so the same seed always gives the same text.
"""

from __future__ import annotations

import math
import random
import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from torch import Tensor

__all__ = [
    "CaptionRule",
    "bigearthnet_caption",
    "caption_for",
    "class_caption",
    "flood_caption",
    "join_names",
    "mask_caption",
    "sensor_phrase",
]

#: The rules :func:`caption_for` knows; ``None`` from it means no rule applies.
CaptionRule = Literal[
    "caption", "bigearthnet", "kurosiwo", "copernicus-bench", "eurosat-ms", "synthetic"
]

# Templates of a scene description; {sensor} is "satellite" or e.g. "Sentinel-2".
_SCENE_TEMPLATES: tuple[str, ...] = (
    "A satellite image of {names}.",
    "A {sensor} image showing {names}.",
    "An overhead {sensor} view of {names}.",
    "Remote sensing image with {names}.",
)
# Words for flood extent (share of valid pixels that is flood): exclusive upper bounds.
_FLOOD_WORDS: tuple[tuple[float, str], ...] = (
    (0.05, "little flooding"),
    (0.25, "some flooding"),
    (math.inf, "extensive flooding"),
)
_SENSOR_PHRASES: Mapping[str, str] = {
    "sentinel-1": "Sentinel-1 radar",
    "sentinel-2": "Sentinel-2",
    "sentinel-3": "Sentinel-3",
    "sentinel-5p": "Sentinel-5P",
    "copernicus-dem": "elevation",
    "landsat": "Landsat",
}
# Class names whose plain lower-casing reads badly.
_PHRASES: Mapping[str, str] = {
    "SeaLake": "sea or lake",
    "AnnualCrop": "annual crops",
    "PermanentCrop": "permanent crops",
    "HerbaceousVegetation": "herbaceous vegetation",
}
_KUROSIWO_CLASSES = ("no water", "permanent water", "flood")


def sensor_phrase(sensor: str | None) -> str:
    """A short human name of a registry sensor (``"sentinel-2-l2a"`` -> ``"Sentinel-2"``).

    Unknown or missing sensors read as ``"satellite"``.
    """
    if not sensor:
        return "satellite"
    key = str(sensor).lower()
    for prefix, phrase in _SENSOR_PHRASES.items():
        if key.startswith(prefix):
            return phrase
    return "satellite"


def _phrase(name: str) -> str:
    """A class name as it reads inside a sentence (lower case, CamelCase split)."""
    if name in _PHRASES:
        return _PHRASES[name]
    if " " not in name and re.search(r"[a-z][A-Z]", name):
        name = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)
    words = name.split(" ")
    # keep acronyms (e.g. "LCZ") as written; lower the first letter of ordinary words
    words = [w if w.isupper() and len(w) > 1 else w[:1].lower() + w[1:] for w in words]
    return " ".join(words)


def join_names(names: Sequence[str]) -> str:
    """Join phrases as English does: ``a``, ``a and b``, ``a, b and c``.

    Names that contain a comma themselves (some CORINE classes) are joined with semicolons, so
    the list stays readable.
    """
    names = [n for n in names if n]
    if not names:
        return ""
    if len(names) == 1:
        return names[0]
    separator = "; " if any("," in n for n in names) else ", "
    return separator.join(names[:-1]) + " and " + names[-1]


def _sample_key(sample: Mapping[str, Any]) -> str:
    for key in ("name", "tile", "id", "patch_id"):
        value = sample.get(key)
        if value is not None and not isinstance(value, Tensor | np.ndarray):
            return f"{key}={value}"
    for key in ("lon", "lat", "time"):
        value = sample.get(key)
        if isinstance(value, int | float) and math.isfinite(float(value)):
            return f"{key}={float(value):.6f}"
    return ""


def _rng(seed: int | None, sample: Mapping[str, Any] | None) -> random.Random | None:
    if seed is None:
        return None
    key = _sample_key(sample or {})
    return random.Random(zlib.crc32(f"{int(seed)}|{key}".encode()))


def _scene_sentence(
    names: Sequence[str], sensor: str | None, rng: random.Random | None
) -> str | None:
    phrases = [_phrase(n) for n in names]
    if not phrases:
        return None
    template = _SCENE_TEMPLATES[0]
    if rng is not None:
        rng.shuffle(phrases)
        template = _SCENE_TEMPLATES[rng.randrange(len(_SCENE_TEMPLATES))]
    return template.format(names=join_names(phrases), sensor=sensor_phrase(sensor))


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def class_caption(
    label: Any,
    classes: Sequence[str],
    *,
    sensor: str | None = None,
    seed: int | None = None,
    sample: Mapping[str, Any] | None = None,
) -> str | None:
    """A caption naming the classes of a label.

    Args:
        label: a class index (int or 0-d tensor) or a multi-hot vector of ``len(classes)``.
        classes: the class names, in label order.
        sensor: registry sensor name, used by some templates.
        seed: ``None`` for the canonical sentence; an integer varies template and name order.
        sample: the Sample, whose id makes the variation differ between samples.

    Returns:
        The sentence, or ``None`` for a multi-hot label with no class set.

    Raises:
        ValueError: for a label that does not fit ``classes``.
    """
    array = _as_array(label)
    if array.ndim == 0:
        index = int(array)
        if not 0 <= index < len(classes):
            raise ValueError(f"class index {index} outside the {len(classes)} classes")
        names = [classes[index]]
    else:
        flat = array.reshape(-1)
        if flat.size != len(classes):
            raise ValueError(
                f"multi-hot label of length {flat.size} does not fit {len(classes)} classes"
            )
        names = [classes[i] for i in np.flatnonzero(flat > 0)]
    return _scene_sentence(names, sensor, _rng(seed, sample))


def bigearthnet_caption(
    label: Any,
    *,
    sensor: str | None = None,
    seed: int | None = None,
    sample: Mapping[str, Any] | None = None,
) -> str | None:
    """A caption from a BigEarthNet multi-hot label: 19 classes (v2, or v1 mapped) or 43 (v1).

    ``"A satellite image of arable land, pastures and inland waters."`` The nomenclature is
    chosen from the label's length. A label with no class set (v1 patches whose labels the
    19-class nomenclature drops) gives ``None``.

    Raises:
        ValueError: for a label that is neither 19 nor 43 long.
    """
    from thinkingearth.data.formats.bigearthnet import CLASSES_19, CLASSES_43

    flat = _as_array(label).reshape(-1)
    if flat.size not in (19, 43):
        raise ValueError(
            f"a BigEarthNet label has 19 or 43 classes, got a vector of length {flat.size}"
        )
    classes = CLASSES_19 if flat.size == 19 else CLASSES_43
    return class_caption(flat, classes, sensor=sensor, seed=seed, sample=sample)


def _percent(share: float) -> str:
    value = 100.0 * share
    if 0.0 < value < 1.0:
        return "less than 1%"
    return f"{round(value):d}%"


def flood_caption(
    mask: Any,
    *,
    sensor: str | None = "sentinel-1-grd",
    seed: int | None = None,
    sample: Mapping[str, Any] | None = None,
) -> str | None:
    """A caption from a Kuro Siwo flood mask: the shares of flood and permanent water in words.

    Values 0 (no water), 1 (permanent water) and 2 (flood) count; 3 (Kuro Siwo's invalid
    pixels) and any other value are ignored. Shares are of the valid pixels, rounded to whole
    percent (a non-zero share under 1% reads "less than 1%"). The extent word is "no flooding"
    (0%), "little flooding" (< 5%), "some flooding" (< 25%) or "extensive flooding".

    Returns:
        The sentence, or ``None`` when the mask has no valid pixel.
    """
    values = _as_array(mask).reshape(-1)
    valid = values[(values >= 0) & (values <= 2)]
    if valid.size == 0:
        return None
    flood = float(np.count_nonzero(valid == 2)) / valid.size
    water = float(np.count_nonzero(valid == 1)) / valid.size
    if flood == 0:
        extent = "no flooding"
    else:
        extent = next(word for bound, word in _FLOOD_WORDS if flood < bound)
    parts = []
    if flood > 0:
        parts.append(f"{_percent(flood)} flooded")
    if water > 0:
        parts.append(f"{_percent(water)} permanent water")
    details = ": " + " and ".join(parts) if parts else ""
    rng = _rng(seed, sample)
    what = sensor_phrase(sensor)
    # "of land" only where there is land: a window of permanent water alone is not.
    scene = "land" if water < 1.0 else "permanent water"
    templates = (
        "A {what} image of {scene} with {extent}{details}.",
        "{What} image showing {extent}{details}.",
        "Flood map scene from a {what} image with {extent}{details}.",
    )
    template = templates[0] if rng is None else templates[rng.randrange(len(templates))]
    return template.format(
        what=what, What=what[:1].upper() + what[1:], extent=extent, details=details, scene=scene
    )


def mask_caption(
    mask: Any,
    classes: Sequence[str],
    *,
    ignore_index: int | None = None,
    sensor: str | None = None,
    max_classes: int = 3,
    seed: int | None = None,
    sample: Mapping[str, Any] | None = None,
) -> str | None:
    """A caption from a segmentation mask: the largest classes with their shares.

    ``"A satellite image of 62% croplands, 30% forest and 8% water."`` Shares are of the valid
    pixels (class ids ``0 … len(classes)-1``, not ``ignore_index``); at most ``max_classes`` are
    named, largest first (ties in class order).

    Returns:
        The sentence, or ``None`` when the mask has no valid pixel.
    """
    values = _as_array(mask).reshape(-1).astype(np.int64, copy=False)
    keep = (values >= 0) & (values < len(classes))
    if ignore_index is not None:
        keep &= values != ignore_index
    valid = values[keep]
    if valid.size == 0:
        return None
    counts = np.bincount(valid, minlength=len(classes))
    order = sorted(np.flatnonzero(counts), key=lambda i: (-counts[i], i))[:max_classes]
    names = [f"{_percent(counts[i] / valid.size)} {_phrase(classes[i])}" for i in order]
    rng = _rng(seed, sample)
    template = _SCENE_TEMPLATES[0]
    if rng is not None:  # the shares keep their largest-first order; only the wording varies
        template = _SCENE_TEMPLATES[rng.randrange(len(_SCENE_TEMPLATES))]
    return template.format(names=join_names(names), sensor=sensor_phrase(sensor))


def _detect(sample: Mapping[str, Any]) -> str | None:
    """The caption rule a Sample's own keys point to (see :func:`caption_for`)."""
    caption = sample.get("caption")
    if isinstance(caption, str) and caption.strip():
        return "caption"
    if "actid" in sample and "mask" in sample:  # Kuro Siwo tiles carry their activation id
        return "kurosiwo"
    task = sample.get("task")
    if isinstance(task, str):
        from thinkingearth.data.formats.copernicusbench import TASKS

        if task in TASKS:
            return "copernicus-bench"
    label = sample.get("label")
    sensor = str(sample.get("sensor") or "")
    if (
        label is not None
        and "name" in sample
        and sensor in ("sentinel-2-l2a", "sentinel-1-grd")
        and _as_array(label).ndim == 1
        and _as_array(label).size in (19, 43)
    ):
        return "bigearthnet"
    return None


def caption_for(
    sample: Mapping[str, Any],
    reader: str | None = None,
    *,
    seed: int | None = None,
    classes: Sequence[str] | None = None,
) -> str | None:
    """The caption of a Sample: its own text, or its labels turned into a sentence.

    The rule is chosen from ``reader`` when given (a reader name of
    :mod:`thinkingearth.data.readers`: ``synthetic``, ``bigearthnet``, ``kurosiwo``,
    ``copernicus-bench``, ``eurosat-ms``; the text readers ``bigearthnet-txt`` and ``gaia``
    carry their own ``caption``), else from the Sample's keys, in this order:

    1. a non-empty ``caption`` string (the synthetic world, BigEarthNet.txt, GAIA) is returned
       as it is;
    2. a Kuro Siwo tile (it carries ``actid``): :func:`flood_caption` of its ``mask``;
    3. a Copernicus-Bench sample (``task`` names a task): the class name(s) of ``label``
       (classification, multi-label) or the class shares of ``mask`` (segmentation; ``flood_s1``
       is worded as a flood map); regression tasks have no caption;
    4. a BigEarthNet patch (``name``, a 19- or 43-long multi-hot ``label``, a Sentinel-1/-2
       sensor): :func:`bigearthnet_caption`.

    Args:
        sample: a Sample from any reader.
        reader: the reader the Sample came from; ``None`` to decide from its keys.
        seed: ``None`` for the canonical sentence; an integer varies wording and order
            deterministically per sample.
        classes: class names overriding the task's (e.g. Copernicus-Bench ``cloud_s3`` in
            ``binary`` mode, whose classes the Sample does not record).

    Returns:
        The caption, or ``None`` when no rule applies (a regression target, an empty label, a
        mask with no valid pixel, an unknown reader's sample without a caption).
    """
    rule = reader if reader is not None else _detect(sample)
    sensor = sample.get("sensor")
    caption = sample.get("caption")
    if isinstance(caption, str) and caption.strip() and rule in ("caption", "synthetic", None):
        return caption
    if rule in ("caption", "synthetic", "bigearthnet-txt", "gaia"):
        return caption if isinstance(caption, str) and caption.strip() else None
    if rule == "kurosiwo":
        return flood_caption(sample["mask"], sensor=sensor, seed=seed, sample=sample)
    if rule == "bigearthnet":
        label = sample.get("label")
        if label is None:
            return None
        return bigearthnet_caption(label, sensor=sensor, seed=seed, sample=sample)
    if rule == "eurosat-ms":
        from thinkingearth.data.formats.eurosat import CLASSES as EUROSAT_CLASSES

        if sample.get("label") is None:
            return None
        names = EUROSAT_CLASSES if classes is None else classes
        return class_caption(sample["label"], names, sensor=sensor, seed=seed, sample=sample)
    if rule == "copernicus-bench":
        return _copernicus_caption(sample, classes, seed)
    return None


def _copernicus_caption(
    sample: Mapping[str, Any], classes: Sequence[str] | None, seed: int | None
) -> str | None:
    from thinkingearth.data.formats.copernicusbench import TASKS

    name = sample.get("task")
    if name not in TASKS:
        return None
    task = TASKS[name]
    names = tuple(task.classes if classes is None else classes)
    sensor = sample.get("sensor") or task.sensor
    if task.kind in ("classification", "multilabel") and sample.get("label") is not None:
        return class_caption(sample["label"], names, sensor=sensor, seed=seed, sample=sample)
    if task.kind == "segmentation" and sample.get("mask") is not None:
        if name == "flood_s1":
            return flood_caption(sample["mask"], sensor=sensor, seed=seed, sample=sample)
        return mask_caption(
            sample["mask"],
            names,
            ignore_index=task.ignore_index,
            sensor=sensor,
            seed=seed,
            sample=sample,
        )
    return None
