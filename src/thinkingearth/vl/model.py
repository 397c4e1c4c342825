"""The vision-language model: the any-sensor encoder projected into a text encoder's space.

:class:`VLModel` pairs an :class:`~thinkingearth.models.Encoder` (any sensor, any bands: S1, S2,
S3, S5P, DEM) with a linear projection into the embedding space of a
:class:`~thinkingearth.vl.text.TextEncoder`, plus CLIP's learned temperature (``logit_scale``)
and SigLIP's bias (``logit_bias``). Images and texts come out L2-normalised in one space, so a
cosine similarity compares a scene with a sentence.

Files (:func:`save_vl_model` / :func:`load_vl_model`): ``PATH.safetensors`` (encoder, projection,
temperature, bias; the text encoder's weights too when it was tuned) and ``PATH.json`` (format,
encoder architecture, text encoder spec, dimensions, the sensors and bands the alignment was
trained on, the normalisation statistics, and the SHA-256 of the weights file). A frozen text
encoder is not copied into the file: the JSON names its spec and it is loaded from there.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from thinkingearth.data.transforms import Normaliser
from thinkingearth.errors import UserInputError
from thinkingearth.models import Encoder, EncoderConfig
from thinkingearth.models.weights import (
    LANGUAGE_TABLE_KEY,
    CheckpointFormatError,
    pack_language_table,
    training_checkpoint_error,
    unpack_language_table,
)
from thinkingearth.sensors import get_sensor
from thinkingearth.vl.text import load_text_encoder

__all__ = [
    "VL_FORMAT",
    "VL_MODEL_STEM",
    "VLModel",
    "load_vl_model",
    "save_vl_model",
]

#: Format marker of the JSON beside the weights.
VL_FORMAT = "thinkingearth.vl_model"
_FORMAT_VERSION = 1
#: File stem a VL pretraining run writes in its output folder.
VL_MODEL_STEM = "vl_model"
_META_KEYS = ("lon", "lat", "time", "gsd")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class VLModel(nn.Module):
    """Any-sensor image encoder + projection into the space of a text encoder.

    Args:
        encoder: The any-sensor encoder.
        text: The text encoder (:func:`~thinkingearth.vl.text.load_text_encoder`). A frozen one
            is held but not registered as a submodule, so it is neither in the state dict nor in
            training checkpoints; a trainable one is (``text_tower``).
        loss: Which loss the temperature and bias are initialised for: ``clip`` (scale
            ``log(1/0.07)``, bias 0) or ``siglip`` (scale ``log 10``, bias ``-10``, as in Zhai
            et al. 2023).
        normaliser: Normalisation of raw Samples in :meth:`encode_samples` (with the statistics
            of sensors the registry publishes none for, estimated in training).
        sensors: Sensor -> bands the image-text alignment was trained on.
        projection: The projection ``encoder.embed_dim -> text.dim`` (default: a new linear map
            without bias).
    """

    def __init__(
        self,
        encoder: Encoder,
        text: Any,
        *,
        loss: Literal["clip", "siglip"] = "clip",
        normaliser: Normaliser | None = None,
        sensors: Mapping[str, Sequence[str]] | None = None,
        projection: nn.Module | None = None,
    ) -> None:
        """Build the projection and the temperature."""
        super().__init__()
        self.encoder = encoder
        self.projection = (
            projection
            if projection is not None
            else nn.Linear(encoder.embed_dim, int(text.dim), bias=False)
        )
        if getattr(text, "trainable", False):
            self.text_tower = text
        else:
            object.__setattr__(self, "_frozen_text", text)
        scale, bias = (math.log(1 / 0.07), 0.0) if loss == "clip" else (math.log(10.0), -10.0)
        self.logit_scale = nn.Parameter(torch.tensor(scale))
        self.logit_bias = nn.Parameter(torch.tensor(bias))
        self.loss = loss
        self.normaliser = normaliser if normaliser is not None else Normaliser()
        self.sensors: dict[str, list[str]] = {
            get_sensor(k).name: [str(b) for b in v] for k, v in (sensors or {}).items()
        }
        self.sha256: str | None = None
        self._warned: set[tuple[str, tuple[str, ...]]] = set()

    # -- parts ----------------------------------------------------------------------------------

    @property
    def text(self) -> Any:
        """The text encoder."""
        if "text_tower" in self._modules:
            return self._modules["text_tower"]
        return self.__dict__["_frozen_text"]

    @property
    def embed_dim(self) -> int:
        """Width of the shared image-text space (the text encoder's)."""
        return int(self.text.dim)

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        out = super()._apply(fn, recurse)
        frozen = self.__dict__.get("_frozen_text")
        if frozen is not None:
            frozen._apply(fn)  # the frozen text encoder follows the model's device
        return out

    # -- encoding -------------------------------------------------------------------------------

    def encode_image(
        self,
        image: Tensor,
        bands: Sequence[str],
        *,
        sensor: str | None = None,
        meta: Any = None,
    ) -> Tensor:
        """``[B, embed_dim]`` L2-normalised embeddings of a normalised image ``[B, C, H, W]``."""
        features = self.encoder(image, bands=list(bands), sensor=sensor, meta=meta)
        return F.normalize(self.projection(features), dim=-1)

    def encode_image_dense(
        self,
        image: Tensor,
        bands: Sequence[str],
        *,
        sensor: str | None = None,
        meta: Any = None,
    ) -> Tensor:
        """``[B, embed_dim, h, w]`` per-patch embeddings in the text space, L2-normalised per patch.

        Each patch token of the last block (after the final LayerNorm) goes through the same
        projection as the pooled features.
        """
        maps = self.encoder.forward_intermediates(
            image, list(bands), indices=[-1], norm=True, sensor=sensor, meta=meta
        )[0]
        projected = self.projection(maps.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return F.normalize(projected, dim=1)

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """``[N, embed_dim]`` L2-normalised text embeddings, on the model's device."""
        return self.text.encode(texts).to(self.logit_scale.device)

    def unaligned_bands(self, sensor: str, bands: Sequence[str]) -> list[str]:
        """Bands of ``sensor`` the image-text alignment never saw (all, for an unseen sensor).

        A model that records no training sensors (never trained) reports none.
        """
        if not self.sensors:
            return []
        spec = get_sensor(sensor)
        seen = set(self.sensors.get(spec.name, ()))
        return [spec.band(b).name for b in bands if spec.band(b).name not in seen]

    def encode_samples(self, samples: Sequence[Mapping[str, Any]], batch_size: int = 64) -> Tensor:
        """Embeddings of raw Samples from any reader, any sensor, in input order (no gradients).

        Each Sample is normalised from its own ``sensor``, ``bands`` and ``units`` with the
        model's :class:`~thinkingearth.data.transforms.Normaliser`; samples are grouped by
        sensor, bands, units and size, and encoded with their metadata (``lon``, ``lat``,
        ``time``, ``gsd``; NaN where a Sample lacks it). A sensor without published
        statistics that the model has none for (it was not trained on it) gets statistics
        estimated from the given samples, with a warning; so do bands the alignment never saw.

        Returns:
            ``[len(samples), embed_dim]``, L2-normalised.

        Raises:
            UserInputError: A Sample without ``image`` / ``sensor`` / ``bands``, a time series
                ``[T, C, H, W]`` (one image per sample is encoded), or unknown bands.
        """
        from thinkingearth.data.sample import collate

        device = self.logit_scale.device
        out = torch.empty(len(samples), self.embed_dim, device=device)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, sample in enumerate(samples):
            image = sample.get("image")
            if not isinstance(image, Tensor) or "sensor" not in sample or not sample.get("bands"):
                raise UserInputError(
                    f"sample {i} lacks image, sensor or bands; expected a Sample from a reader"
                )
            if image.ndim != 3:
                raise UserInputError(
                    f"sample {i} has an image of shape {tuple(image.shape)}; encode_samples takes "
                    "one image [C, H, W] per sample (pick one acquisition of a time series)"
                )
            spec = get_sensor(str(sample["sensor"]))
            bands = tuple(spec.band(b).name for b in sample["bands"])
            units = sample.get("units")
            key = (
                spec.name,
                bands,
                None if units is None else str(units).lower(),
                image.shape[-2:],
            )
            groups.setdefault(key, []).append(i)
        with torch.no_grad():
            for (sensor, bands, units, _), indices in groups.items():
                self._check_group(sensor, bands, [samples[i]["image"] for i in indices])
                for start in range(0, len(indices), batch_size):
                    chunk = indices[start : start + batch_size]
                    images = torch.stack(
                        [self.normaliser(samples[i]["image"], sensor, bands, units) for i in chunk]
                    )
                    meta = collate(
                        [
                            {
                                "image": images[j],
                                **{k: samples[i][k] for k in _META_KEYS if k in samples[i]},
                            }
                            for j, i in enumerate(chunk)
                        ]
                    )
                    embedded = self.encode_image(
                        images.to(device),
                        bands,
                        sensor=sensor,
                        meta={k: meta[k] for k in _META_KEYS},
                    )
                    out[torch.tensor(chunk, device=device)] = embedded
        return out

    def _check_group(self, sensor: str, bands: tuple[str, ...], images: list[Tensor]) -> None:
        key = (sensor, bands)
        if self.normaliser.needs_fit(sensor, bands):
            self.normaliser.fit(sensor, bands, images)
            if key not in self._warned:
                warnings.warn(
                    f"{sensor}: no normalisation statistics in the model for {', '.join(bands)}; "
                    f"estimated them from the {len(images)} given sample(s)",
                    stacklevel=3,
                )
        unseen = self.unaligned_bands(sensor, bands)
        if unseen and key not in self._warned:
            warnings.warn(
                f"{sensor} band(s) {', '.join(unseen)} were never aligned with text in training "
                f"(trained on: {'; '.join(f'{s}: {len(b)} bands' for s, b in self.sensors.items())}); "
                "the encoder takes them, but text similarity is untested there",
                stacklevel=3,
            )
        self._warned.add(key)

    # -- description ----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """What the model's JSON records (see the module docstring)."""
        text = self.text
        return {
            "format": VL_FORMAT,
            "format_version": _FORMAT_VERSION,
            "encoder": self.encoder.config.to_dict(),
            "language_keys": sorted(self.encoder.language_table),
            "text": {
                "spec": str(text.spec),
                "name": str(text.name),
                "dim": int(text.dim),
                "trainable": bool(getattr(text, "trainable", False)),
            },
            "embed_dim": self.embed_dim,
            "projection": {
                "in": int(self.encoder.embed_dim),
                "out": self.embed_dim,
                "kind": "linear",
                "bias": getattr(self.projection, "bias", None) is not None,
            },
            "loss": self.loss,
            "logit_scale": float(self.logit_scale.detach()),
            "logit_bias": float(self.logit_bias.detach()),
            "sensors": {s: list(b) for s, b in self.sensors.items()},
            "normalisation": self.normaliser.to_dict()["stats"],
        }


def _paths(path: str | Path) -> tuple[Path, Path]:
    """``(PATH.safetensors, PATH.json)`` of a folder (its ``vl_model``), a file or a stem."""
    path = Path(path)
    if path.is_dir():
        path = path / VL_MODEL_STEM
    base = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def save_vl_model(model: VLModel, path: str | Path) -> Path:
    """Write ``PATH.safetensors`` and ``PATH.json`` (each renamed into place when complete).

    Args:
        model: The model.
        path: The stem (``OUT/vl_model``), or the ``.safetensors`` / ``.json`` file name.

    Returns:
        The path of the ``.safetensors`` file; ``model.sha256`` becomes its SHA-256.
    """
    tensors_path, json_path = _paths(path)
    tensors_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    tensors.update(pack_language_table(model.encoder)[1])
    header = model.describe()
    staging = tensors_path.parent / f".{tensors_path.stem}-{uuid.uuid4().hex[:8]}.partial"
    staging.mkdir()
    try:
        # Both files complete in a hidden sibling first; the tensors are renamed into place
        # first and the JSON that names their hash last, so a JSON always matches its tensors.
        save_file(tensors, str(staging / "w.safetensors"), metadata={"format": VL_FORMAT})
        header["weights_sha256"] = _sha256(staging / "w.safetensors")
        (staging / "w.json").write_text(json.dumps(header, indent=2) + "\n", encoding="utf-8")
        for name in ("w.safetensors", "w.json"):
            with (staging / name).open("rb") as handle:
                os.fsync(handle.fileno())
            os.chmod(staging / name, 0o666 & ~_umask())
        os.replace(staging / "w.safetensors", tensors_path)
        os.replace(staging / "w.json", json_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    model.sha256 = header["weights_sha256"]
    return tensors_path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_vl_model(path: str | Path, *, device: str | torch.device = "cpu") -> VLModel:
    """Read a model :func:`save_vl_model` wrote.

    Args:
        path: The folder a vision-language pretraining run wrote (``OUT``: reads
            ``OUT/vl_model.safetensors``), or the model's ``.safetensors`` / ``.json`` / stem.
        device: Where to put it.

    Returns:
        The model in eval mode, ``sha256`` set to its weights file's SHA-256.

    Raises:
        UserInputError: Missing files, a JSON that is not a VL model's, damaged tensors,
            tensors that do not match the JSON (another file's hash, or other shapes), or a
            text encoder that cannot be loaded or whose width differs from the recorded one.
    """
    if Path(path).suffix == ".ckpt":  # a VL pretrain run's checkpoints/step-*.ckpt
        raise training_checkpoint_error(
            path,
            expected="a vision-language model",
            written_by="a VL pretrain run's model",
            file="vl_model.safetensors",
        )
    tensors_path, json_path = _paths(path)
    for needed in (json_path, tensors_path):
        if not needed.is_file():
            raise UserInputError(
                f"{needed} does not exist; expected a vision-language model (the folder a VL "
                "pretrain run wrote, or its vl_model.safetensors with the .json beside it)"
            )
    try:
        header = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserInputError(f"{json_path}: not a readable JSON file ({error})") from None
    if not isinstance(header, dict) or header.get("format") != VL_FORMAT:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise UserInputError(f"{json_path}: expected format {VL_FORMAT!r}, found {found!r}")
    # Read first: a truncated or damaged file is that, not "another save" by its hash.
    try:
        tensors = load_file(str(tensors_path))
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointFormatError(
            f"{tensors_path}: not a readable safetensors file, truncated or damaged ({first})"
        ) from None
    sha = _sha256(tensors_path)
    if header.get("weights_sha256") not in (None, sha):
        raise UserInputError(
            f"{tensors_path} does not match {json_path.name} (SHA-256 {sha[:12]}..., the JSON "
            f"records {str(header['weights_sha256'])[:12]}...): the files come from different saves"
        )
    try:
        text_info = header["text"]
        text = load_text_encoder(str(text_info["spec"]), trainable=bool(text_info["trainable"]))
        if int(text.dim) != int(header["embed_dim"]):
            raise UserInputError(
                f"{json_path}: text encoder {text_info['spec']} gives {text.dim}-d embeddings, "
                f"the model was trained with {header['embed_dim']}-d ones"
            )
        with torch.device("meta"):
            encoder = Encoder(EncoderConfig.from_dict(header["encoder"]))
        projection = nn.Linear(
            int(header["projection"]["in"]),
            int(header["projection"]["out"]),
            bias=bool(header["projection"].get("bias", False)),
        )
        model = VLModel(
            encoder,
            text,
            loss=header.get("loss", "clip"),
            normaliser=Normaliser(header.get("normalisation") or {}),
            sensors=header.get("sensors") or {},
            projection=projection,
        )
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, UserInputError):
            raise
        raise UserInputError(
            f"{json_path}: incomplete or invalid VL model JSON ({error})"
        ) from None
    table = tensors.pop(LANGUAGE_TABLE_KEY, None)
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    if missing or unexpected:
        raise UserInputError(
            f"{tensors_path}: tensors do not match {json_path.name} (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    unpack_language_table(model.encoder, table, header.get("language_keys"))
    model.sha256 = sha
    return model.to(device).eval()
