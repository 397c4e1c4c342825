"""Zero-shot classification and maps with a vision-language model: classes named in words.

:class:`ZeroShotClassifier` turns class names into a classifier head with no training, as CLIP's
zero-shot heads do (Radford et al. 2021): each class name is put into every prompt template
(``"a satellite image of {}."``, ...), the prompts are embedded by the model's text side, and the
class's weight is the mean of its normalised prompt embeddings, re-normalised (the prompt
ensemble of :func:`thinkingearth.vl.prompts.class_embeddings`). An image's logits are
``scale · cos(image, class)`` with the model's learnt inverse temperature; softmax over the
classes gives single-label probabilities, ``sigmoid(logit + bias)`` (the SigLIP bias, 0 for a
CLIP model) per-label ones. It scores

* a whole image (:meth:`ZeroShotClassifier.forward`): the pooled embedding,
  :meth:`~thinkingearth.vl.model.VLModel.encode_image`;
* every patch (:meth:`ZeroShotClassifier.dense`): the per-patch embeddings
  :meth:`~thinkingearth.vl.model.VLModel.encode_image_dense`, whose logits are upsampled
  bilinearly to the image's pixels.

:func:`zeroshot_scene_model` wraps the dense classifier as a
:class:`~thinkingearth.infer.model.SceneModel` (task ``zeroshot``), so ``thinkingearth zeroshot``
maps a whole scene through the streaming predictor with every guarantee of ``predict`` (COG,
uncertainty file, quicklook, atomic outputs, bands by name, SAR units). The classes come from the
user; the sensor and bands from the image (:func:`image_sensor_bands`: the encoder takes any
bands of any registry sensor); the normalisation is the one the model was trained with (the
toolkit's :class:`~thinkingearth.data.transforms.Normaliser`). When the text alignment never saw
that sensor or some of those bands (:meth:`VLModel.describe` ``["sensors"]``), one warning says so
(:class:`UnalignedInputWarning`): the image features exist, but nothing tied them to words.

Many scenes (``thinkingearth zeroshot --scenes``) go through ``predict --scenes``' fan-out
(:func:`~thinkingearth.infer.batch.predict_many`): :func:`zeroshot_scenes` finds them as
``predict`` does and insists they share one sensor and band set (one class head maps them all);
each Dask worker builds the scene model once from its recipe (:func:`load_zeroshot_scene_model`:
the weights path, class names, sensor and bands) rather than receiving the pickled model with
every scene.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thinkingearth.data.transforms import Normaliser
from thinkingearth.errors import UserInputError
from thinkingearth.sensors import get_sensor
from thinkingearth.vl.prompts import DEFAULT_TEMPLATES, class_embeddings

if TYPE_CHECKING:
    from thinkingearth.data.scene import Acquisition
    from thinkingearth.infer.model import SceneModel
    from thinkingearth.vl.model import VLModel

__all__ = [
    "MAX_LOGIT_SCALE",
    "UnalignedInputWarning",
    "ZeroShotClassifier",
    "ZeroShotNetwork",
    "aligned_inputs",
    "check_classnames",
    "check_templates",
    "image_sensor_bands",
    "load_zeroshot_scene_model",
    "parse_classnames",
    "zeroshot_scene_model",
    "zeroshot_scenes",
]

#: CLIP clamps its learnt inverse temperature at 100; scores use the same bound.
MAX_LOGIT_SCALE = 100.0


class UnalignedInputWarning(UserWarning):
    """The image's sensor or bands were never part of the model's image-text alignment."""


def check_classnames(classnames: Sequence[str]) -> tuple[str, ...]:
    """The class names, stripped; at least two, none empty, none twice.

    Raises:
        UserInputError: One class (nothing to choose between), an empty name or a repeated one.
    """
    names = tuple(str(c).strip() for c in classnames)
    if any(not n for n in names):
        raise UserInputError(f"class names must not be empty; got {list(classnames)!r}")
    if len(names) < 2:
        raise UserInputError(
            f"zero-shot classification needs at least two class names to choose between; got "
            f"{len(names)} ({', '.join(names) or 'none'}), e.g. --classes water,forest,cropland"
        )
    if len(names) > 255:
        raise UserInputError(f"at most 255 class names (uint8 map); got {len(names)}")
    seen: set[str] = set()
    for name in names:
        if name.lower() in seen:
            raise UserInputError(f"class {name!r} is named twice; give each class once")
        seen.add(name.lower())
    return names


def parse_classnames(text: str) -> tuple[str, ...]:
    """``"water, forest,cropland"`` -> ``("water", "forest", "cropland")``, checked."""
    return check_classnames([c for c in str(text).split(",") if c.strip()] or [])


def check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    """Prompt templates, each with exactly one ``{}`` where the class name goes.

    Raises:
        UserInputError: No template, or one without (or with several) ``{}``.
    """
    if isinstance(templates, str):
        templates = (templates,)
    items = tuple(str(t) for t in templates)
    if not items:
        raise UserInputError("give at least one prompt template, e.g. 'a satellite image of {}.'")
    for template in items:
        if template.count("{}") != 1:
            raise UserInputError(
                f"a prompt template needs exactly one {{}} where the class name goes; got "
                f"{template!r}"
            )
    return items


class ZeroShotClassifier(nn.Module):
    """A classifier over named classes from a vision-language model, with no training.

    Args:
        vl_model: The vision-language model (:class:`~thinkingearth.vl.model.VLModel`).
        classnames: At least two class names, e.g. ``("water", "forest", "cropland")``.
        templates: Prompt templates with ``{}`` for the class name; every class is embedded
            through all of them and the embeddings averaged (the prompt ensemble).

    Attributes:
        classnames: The class names, in class-id order.
        templates: The templates used.
        class_weights: ``[K, D]`` L2-normalised class embeddings (a buffer: follows ``.to``).

    Raises:
        UserInputError: Fewer than two classes, repeated or empty names, bad templates.
    """

    class_weights: Tensor

    def __init__(
        self,
        vl_model: VLModel,
        classnames: Sequence[str],
        templates: Sequence[str] = DEFAULT_TEMPLATES,
    ) -> None:
        """Embed the class prompts once; the head is frozen."""
        super().__init__()
        self.classnames = check_classnames(classnames)
        self.templates = check_templates(templates)
        self.vl_model = vl_model
        with torch.no_grad():
            # encode_text, not text.encode: a text side the alignment tuned names the classes
            weights = class_embeddings(vl_model, self.classnames, self.templates)
        weights = F.normalize(weights.detach().float(), dim=-1)
        if weights.shape != (len(self.classnames), int(vl_model.embed_dim)):
            raise ValueError(
                f"class embeddings have shape {tuple(weights.shape)}; expected "
                f"[{len(self.classnames)}, {vl_model.embed_dim}]"
            )
        self.register_buffer("class_weights", weights, persistent=False)

    @property
    def num_classes(self) -> int:
        """``K``."""
        return len(self.classnames)

    @property
    def scale(self) -> Tensor:
        """The inverse temperature ``exp(logit_scale)``, at most :data:`MAX_LOGIT_SCALE`."""
        return self.vl_model.logit_scale.detach().float().exp().clamp(max=MAX_LOGIT_SCALE)

    @property
    def bias(self) -> Tensor:
        """The SigLIP logit bias (0 for a model without one)."""
        bias = getattr(self.vl_model, "logit_bias", None)
        if bias is None:
            return torch.zeros((), device=self.class_weights.device)
        return bias.detach().float()

    def logits(self, embeddings: Tensor) -> Tensor:
        """``scale · cos`` of L2-normalised embeddings ``[B, D]`` with each class: ``[B, K]``."""
        embeddings = F.normalize(embeddings.float(), dim=-1)
        weights = self.class_weights.to(embeddings.device)
        return self.scale.to(embeddings.device) * embeddings @ weights.T

    def probabilities(self, logits: Tensor, *, multilabel: bool = False) -> Tensor:
        """Softmax over the classes (dim 1), or per label ``sigmoid(logit + bias)``."""
        if multilabel:
            return torch.sigmoid(logits + self.bias.to(logits.device))
        return torch.softmax(logits, dim=1)

    def forward(
        self,
        image: Tensor,
        bands: Sequence[str],
        *,
        sensor: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Tensor:
        """Scene logits ``[B, K]`` of normalised images ``[B, C, H, W]`` (pooled embedding)."""
        embeddings = self.vl_model.encode_image(image, bands, sensor=sensor, meta=meta)
        return self.logits(embeddings)

    def dense(
        self,
        image: Tensor,
        bands: Sequence[str],
        *,
        sensor: str | None = None,
        meta: Mapping[str, Any] | None = None,
        size: tuple[int, int] | None = None,
    ) -> Tensor:
        """Per-pixel logits ``[B, K, H, W]``: per-patch logits upsampled bilinearly.

        Args:
            image: Normalised images ``[B, C, H, W]``.
            bands: Band names of the channels.
            sensor: Registry sensor name.
            meta: ``lon``, ``lat``, ``time``, ``gsd`` per image (NaN: unknown).
            size: Output size (default: the image's ``H, W``).
        """
        patches = self.vl_model.encode_image_dense(image, bands, sensor=sensor, meta=meta)
        b, d, h, w = patches.shape
        flat = patches.permute(0, 2, 3, 1).reshape(b * h * w, d)
        logits = self.logits(flat).reshape(b, h, w, -1).permute(0, 3, 1, 2)
        out = size if size is not None else tuple(image.shape[-2:])
        if tuple(logits.shape[-2:]) != tuple(out):
            logits = F.interpolate(logits, size=out, mode="bilinear", align_corners=False)
        return logits


# ----------------------------------------------------------------------------------------------
# Sensors and bands: what the alignment saw
# ----------------------------------------------------------------------------------------------


def aligned_inputs(model: VLModel, sensor: str, bands: Sequence[str]) -> str | None:
    """``None`` when the text alignment was trained on ``sensor`` with every one of ``bands``
    (or the model records no training sensors); else one line saying what it never saw."""
    unseen = model.unaligned_bands(sensor, bands)
    if not unseen:
        return None
    spec = get_sensor(sensor)
    trained = "; ".join(f"{s} ({len(b)} bands)" for s, b in model.sensors.items())
    if spec.name not in model.sensors:
        what = f"{spec.name} (it was trained on {trained})"
    else:
        what = f"{spec.name} band(s) {', '.join(unseen)} (it was trained on {trained})"
    return (
        f"the model's text alignment never saw {what}: the encoder takes these bands, but "
        "their zero-shot classes were never tied to words and may be unreliable"
    )


def image_sensor_bands(
    path: str | Path,
    *,
    bands: Sequence[str] | None = None,
    sensor: str | None = None,
    prefer: Sequence[str] = (),
) -> tuple[str, tuple[str, ...]]:
    """The registry sensor and band names of an image file, from its band descriptions.

    Args:
        path: The GeoTIFF/COG.
        bands: Every band of the file in order (``--bands``), instead of its descriptions.
        sensor: The sensor, when the names alone leave a choice (``B04``: Sentinel-2 or
            Landsat); default: among the sensors having every named band, the first of
            ``prefer``, else the first in registry order.
        prefer: Sensors to choose first (those the model was aligned on).

    Returns:
        ``(sensor, bands)``: the file's bands of that sensor, canonical names, in file order
        (bands of no sensor, or of another sensor, are left for the predictor to ignore).

    Raises:
        UserInputError: An unreadable file, no band names (no descriptions and no ``bands``),
            a band count ``bands`` contradicts, no sensor with the named bands.
    """
    from thinkingearth.data.scene import SceneInputError, open_raster
    from thinkingearth.sensors import sensors_with

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"--image {path} does not exist")
    dataset = open_raster(path, "--image")
    try:
        descriptions = tuple((d or "").strip() for d in dataset.descriptions)
        count = dataset.count
    finally:
        dataset.close()
    if bands is not None:
        labels = tuple(str(b).strip() for b in bands)
        if len(labels) != count:
            raise SceneInputError(
                f"--image {path} has {count} band(s) but --bands names {len(labels)} "
                f"({', '.join(labels)}); name each band of the file in order"
            )
    elif any(descriptions):
        labels = descriptions
    else:
        raise SceneInputError(
            f"--image {path} has no band descriptions; pass --bands with its {count} band "
            "name(s) in order, e.g. --bands B02,B03,B04,B08"
        )
    named = [n for n in labels if n and sensors_with([n])]
    if sensor is not None:
        spec = get_sensor(sensor)
    else:
        products = [s.name for s in sensors_with(named)] if named else []
        if not products:
            raise UserInputError(
                f"--image {path}: no sensor has every band it names ({', '.join(labels)}); "
                "pass --sensor and --bands"
            )
        preferred = [get_sensor(p).name for p in prefer if get_sensor(p).name in products]
        spec = get_sensor(preferred[0] if preferred else products[0])
    chosen = [spec.band(n).name for n in labels if n and spec.has_band(n)]
    if not chosen:
        raise UserInputError(
            f"--image {path} has no {spec.name} band ({', '.join(labels)}); expected some of: "
            f"{', '.join(spec.band_names)}"
        )
    return spec.name, tuple(dict.fromkeys(chosen))


# ----------------------------------------------------------------------------------------------
# The scene model
# ----------------------------------------------------------------------------------------------


class ZeroShotNetwork(nn.Module):
    """``[B, T, C, h, w]`` stored values -> normalise -> dense zero-shot logits ``[B, K, h, w]``.

    Args:
        classifier: The zero-shot classifier.
        sensor: Registry sensor of the inputs.
        bands: Band names of the ``C`` channels.
        normaliser: The normalisation (registry statistics; SAR to dB).
    """

    def __init__(
        self,
        classifier: ZeroShotClassifier,
        sensor: str,
        bands: tuple[str, ...],
        normaliser: Normaliser,
    ) -> None:
        """Keep the classifier and what normalises its inputs."""
        super().__init__()
        self.classifier = classifier
        self.sensor = sensor
        self.bands = bands
        self.normaliser = normaliser

    def forward(self, x: Tensor, meta: Mapping[str, Tensor] | None = None) -> Tensor:
        """Logits ``[B, K, h, w]`` of the last acquisition.

        Args:
            x: Tiles ``[B, T, C, h, w]`` in stored units (SAR linear sigma0), no data as NaN.
            meta: ``lon``, ``lat``, ``gsd`` ``[B]`` and ``time`` ``[B, T]`` (NaN: unknown).
        """
        if x.ndim != 5:
            raise ValueError(f"expected tiles [B, T, C, h, w]; got {tuple(x.shape)}")
        image = self.normaliser(x[:, -1], self.sensor, self.bands)
        batch_meta = None
        if meta is not None:
            batch_meta = {
                key: torch.as_tensor(meta[key], dtype=torch.float64).reshape(-1)
                for key in ("lon", "lat", "gsd")
            }
            time = torch.as_tensor(meta["time"], dtype=torch.float64)
            batch_meta["time"] = time[:, -1] if time.ndim == 2 else time.reshape(-1)
        return self.classifier.dense(image, list(self.bands), sensor=self.sensor, meta=batch_meta)


def _colours(k: int) -> tuple[str, ...]:
    from thinkingearth.viz import LANDCOVER_COLOURS

    if k <= len(LANDCOVER_COLOURS):
        return tuple(LANDCOVER_COLOURS[:k])
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return tuple(matplotlib.colors.to_hex(cmap(i % 20)) for i in range(k))


def zeroshot_scene_model(
    vl_model: VLModel,
    classnames: Sequence[str],
    sensor: str,
    bands: Sequence[str],
    *,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int = 8,
    name: str = "zeroshot",
    tags: Mapping[str, str] | None = None,
    normaliser: Normaliser | None = None,
) -> SceneModel:
    """A :class:`~thinkingearth.infer.model.SceneModel` mapping ``classnames`` zero-shot.

    The predictor gives the network tiles in stored units (SAR linear sigma0, no data as NaN);
    it normalises them (:class:`~thinkingearth.data.transforms.Normaliser`, as the model was
    trained), takes the per-patch embeddings with each tile's metadata and returns per-pixel
    logits; the predictor's softmax, blending, argmax and entropy follow.

    Warns:
        UnalignedInputWarning: ``sensor`` or some of ``bands`` were not in the text alignment's
            training data (once, one line).

    Args:
        vl_model: The vision-language model.
        classnames: At least two class names.
        sensor: Registry sensor of the image.
        bands: The bands to use (registry names).
        templates: Prompt templates (``{}`` for the class name).
        tile: Tile side in pixels (default: the encoder's image size, at least 64).
        overlap: Tile overlap (default: a quarter of the tile: patch logits are coarse).
        batch_size: Tiles per forward pass.
        name: How reports and file tags name the model.
        tags: Extra tags written into the outputs (weights, hash).
        normaliser: The normalisation (default: the model's ``normaliser`` if it has one, else
            the registry's).

    Raises:
        UserInputError: Bad class names or templates; a sensor without published statistics
            that the model stores none for.
    """
    from thinkingearth.infer.model import SceneModel

    spec = get_sensor(sensor)
    band_names = tuple(b.name for b in spec.select(list(bands)))
    classifier = ZeroShotClassifier(vl_model, classnames, templates)
    norm = normaliser if normaliser is not None else vl_model.normaliser
    if norm.needs_fit(spec.name, band_names):
        raise UserInputError(
            f"{spec.name} has no published normalisation statistics and the model stores none "
            f"for {', '.join(band_names)}; zero-shot maps need the statistics the model was "
            "trained with"
        )
    note = aligned_inputs(vl_model, spec.name, band_names)
    if note is not None:
        warnings.warn(note, UnalignedInputWarning, stacklevel=2)
    config = getattr(getattr(vl_model, "encoder", None), "config", None)
    side = int(tile) if tile is not None else max(64, int(getattr(config, "img_size", 64)))
    lap = int(overlap) if overlap is not None else side // 4
    metadata = bool(getattr(config, "metadata", True))
    all_tags = {
        "CLASSES_FROM": "class names through prompt templates (zero-shot, no training)",
        "TEMPLATES": " | ".join(classifier.templates),
        "INPUT_SENSOR": spec.name,
        "INPUT_BANDS": ",".join(band_names),
        "LOGIT_SCALE": f"{float(classifier.scale):.4g}",
        **dict(tags or {}),
    }
    return SceneModel(
        network=ZeroShotNetwork(classifier, spec.name, band_names, norm).eval(),
        task="zeroshot",
        classes=classifier.classnames,
        colours=_colours(classifier.num_classes),
        sensor=spec.name,
        bands=band_names,
        steps=(1,),
        tile=side,
        overlap=lap,
        sar_units="linear",
        outputs="logits",
        fill=(math.nan,) * len(band_names),
        batch_size=batch_size,
        name=name,
        tags=all_tags,
        metadata=metadata,
    )


def load_zeroshot_scene_model(
    weights: str | Path,
    classnames: Sequence[str],
    sensor: str,
    bands: Sequence[str],
    **options: Any,
) -> SceneModel:
    """:func:`zeroshot_scene_model` of the VL model saved at ``weights`` (on a Dask worker).

    ``options`` are :func:`zeroshot_scene_model`'s keywords. The unaligned-input warning is not
    repeated: the client that planned the run has given it.
    """
    from thinkingearth.vl.model import load_vl_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnalignedInputWarning)
        return zeroshot_scene_model(load_vl_model(weights), classnames, sensor, bands, **options)


def zeroshot_scenes(
    source: str | Path,
    image: str | Path | None,
    *,
    bands: Sequence[str] | None = None,
    sensor: str | None = None,
    prefer: Sequence[str] = (),
    ignore: Path | None = None,
) -> tuple[list[tuple[str, list[Acquisition]]], str, tuple[str, ...]]:
    """The scenes under ``source`` for zero-shot maps, and the one sensor and band set they share.

    Scenes are found as ``predict --scenes`` finds them
    (:func:`~thinkingearth.infer.batch.find_scenes`): scene folders holding the file named
    ``image`` (default ``image``), or, with no ``image``, the ``.tif`` images in ``source``;
    STAC items with an asset named ``image``.

    Args:
        source: The folder of scenes (or a JSON of STAC items).
        image: The image's file name inside each scene folder (a name, not a path).
        bands: Every band of each image, in file order (default: its band descriptions).
        sensor: The sensor, when band names leave a choice.
        prefer: Sensors to choose first (those the model was aligned on).
        ignore: A folder under ``source`` that is no scene (the output folder).

    Returns:
        ``(scenes, sensor, bands)``.

    Raises:
        UserInputError: ``image`` given as a path, no scenes, a scene folder without the image,
            an unreadable image, or scenes of different sensors or band sets.
    """
    from thinkingearth.infer.batch import InputNames, find_scenes

    name = None
    if image is not None:
        name = str(image)
        parts = Path(name).parts
        if len(parts) != 1 or parts[0] in (".", "..") or Path(name).is_absolute():
            raise UserInputError(
                f"with --scenes, --image is the file name of the image inside each scene folder "
                f"(e.g. --image s2.tif), not a path; got {name!r}"
            )
    root = Path(source)
    scenes = find_scenes(
        root, "zeroshot", InputNames(image=name, bands=tuple(bands or ()) or None), None
    )
    if root.is_dir():
        found = {scene for scene, _ in scenes}
        folders = sorted(
            p.name
            for p in root.iterdir()
            if p.is_dir()
            and not p.name.startswith(".")
            and not (ignore is not None and p.resolve() == ignore.resolve())
        )
        if not found.isdisjoint(folders):  # scene folders, not images: every folder is a scene
            missing = [f for f in folders if f not in found]
            if missing:
                raise UserInputError(
                    f"scene folder(s) {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''} "
                    f"in {root} have no {name or 'image'}; every scene folder needs the --image "
                    "file (move the others out)"
                )
    chosen: tuple[str, tuple[str, ...], str] | None = None
    for scene, acquisitions in scenes:
        source_file = acquisitions[-1].sources[0]
        got = image_sensor_bands(
            source_file.path, bands=source_file.bands, sensor=sensor, prefer=prefer
        )
        if chosen is None:
            chosen = (*got, scene)
        elif got != chosen[:2]:
            raise UserInputError(
                f"scene {scene} has {got[0]} bands {','.join(got[1])} but scene {chosen[2]} has "
                f"{chosen[0]} bands {','.join(chosen[1])}; one run maps scenes of one sensor and "
                "band set"
            )
    if chosen is None:  # find_scenes raises first; this keeps the type honest
        raise UserInputError(f"no scenes found in {root}")
    return scenes, chosen[0], chosen[1]
