"""Pretraining configurations: validated dataclasses read from YAML.

A configuration is a YAML file (or one shipped in the package, picked by name: see
:func:`list_configs`) whose keys mirror :class:`PretrainConfig`. Everything is checked before any
data is made or any model is built:

* an unknown key, at any depth, is a :class:`~thinkingearth.errors.UserInputError` that names the
  key (``mae.mask_rato``) and lists the valid ones;
* a value of the wrong type or outside its range names the key and what was expected;
* an unknown sensor or band raises the sensor registry's own one-line error
  (:class:`~thinkingearth.errors.UnknownSensorError`, :class:`~thinkingearth.errors.UnknownBandError`).

A file may start from another configuration with ``base: NAME_OR_FILE``; its keys are merged
over the base recursively (lists and scalars replace, mappings merge).

Example (the shipped ``tiny-synthetic``)::

    name: tiny-synthetic
    recipe: mae
    encoder: {name: thinkingearth_vit_tiny, overrides: {depth: 4, patch_size: 8, img_size: 64}}
    data:
      sensors: [{sensor: sentinel-2-l2a, n: 512}, {sensor: sentinel-1-grd, n: 512}]
    trainer: {max_steps: 300, checkpoint_every: 100}
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from thinkingearth.errors import UserInputError
from thinkingearth.sensors import get_sensor

__all__ = [
    "AugmentConfig",
    "ContrastiveConfig",
    "DataConfig",
    "DistillConfig",
    "EncoderSpec",
    "MAEConfig",
    "OptimConfig",
    "PretrainConfig",
    "Recipe",
    "SensorSource",
    "TeacherSpec",
    "TrainerConfig",
    "config_from_dict",
    "list_configs",
    "load_config",
    "merge",
]

Recipe = Literal["mae", "softcon", "supcon", "simclr", "cross_sensor", "distill"]
ContrastTargets = Literal["auto", "softcon", "supcon", "simclr"]
#: Sensors the synthetic world makes (``thinkingearth.data.synthetic``).
SYNTHETIC_SENSORS: tuple[str, ...] = (
    "sentinel-2-l2a",
    "sentinel-2-l1c",
    "sentinel-1-grd",
    "sentinel-3-olci",
    "sentinel-5p",
    "copernicus-dem",
)


@dataclass(frozen=True)
class EncoderSpec:
    """Which encoder to pretrain.

    Attributes:
        name: A registered configuration (``thinkingearth.models.list_models()``).
        overrides: Fields of :class:`~thinkingearth.models.EncoderConfig` to change, e.g.
            ``{depth: 4, patch_size: 8, img_size: 64}``.
        init: Start from these weights (a ``.safetensors`` written by
            :func:`thinkingearth.models.save`, or a published checkpoint); ``None`` = random.
    """

    name: str = "thinkingearth_vit_tiny"
    overrides: dict[str, Any] = field(default_factory=dict)
    init: str | None = None


@dataclass(frozen=True)
class SensorSource:
    """One sensor of the training data.

    Attributes:
        sensor: Registry name or alias of the sensor.
        bands: A subset of its bands in any order; ``None`` = every band the source makes.
        n: Number of training samples (scenes) of this sensor.
    """

    sensor: str
    bands: tuple[str, ...] | None = None
    n: int = 256


@dataclass(frozen=True)
class DataConfig:
    """Training data.

    Attributes:
        source: Where samples come from. ``synthetic``: the embedded synthetic Copernicus world.
        sensors: The sensors of the run; batches hold one sensor each (grouped batches), drawn
            in a seeded shuffled order.
        pair: For ``cross_sensor``: the two sensors whose co-registered samples of one place are
            positives (each may also appear in ``sensors`` to choose its bands and ``n``).
        size: Pixels per side of the source samples.
        batch_size: Samples per batch on each device.
        num_workers: DataLoader worker processes.
        cloud_cover: Mean Sentinel-2 cloud fraction of the synthetic world.
        split: Which stream of the synthetic world to train on.
    """

    source: Literal["synthetic"] = "synthetic"
    sensors: tuple[SensorSource, ...] = (SensorSource("sentinel-2-l2a"),)
    pair: tuple[str, ...] | None = None
    size: int = 64
    batch_size: int = 32
    num_workers: int = 0
    cloud_cover: float = 0.0
    split: Literal["train", "val", "test"] = "train"


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentations (applied per batch on the device, seeded by step and rank).

    Attributes:
        crop_size: Output pixels per side of the random resized crop (a multiple of the patch
            size); ``None`` keeps ``data.size``.
        crop_scale: Range of the crop's area as a share of the sample's area.
        crop_ratio: Range of the crop's aspect ratio (width / height).
        flips: Random horizontal and vertical flips.
        band_fraction: Range of the share of bands kept (a random subset per batch and view).
    """

    crop_size: int | None = None
    crop_scale: tuple[float, float] = (0.35, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.3333333333333333)
    flips: bool = True
    band_fraction: tuple[float, float] = (0.75, 1.0)


@dataclass(frozen=True)
class MAEConfig:
    """Masked autoencoding (He et al. 2022) with a band-conditioned (dynamic) decoder.

    Attributes:
        mask_ratio: Share of patch tokens hidden from the encoder.
        decoder_dim: Token width of the decoder.
        decoder_depth: Transformer blocks of the decoder.
        decoder_heads: Attention heads of the decoder.
        norm_pix_loss: Normalise each target patch (per band) by its mean and variance.
    """

    mask_ratio: float = 0.75
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    norm_pix_loss: bool = True


@dataclass(frozen=True)
class ContrastiveConfig:
    """Contrastive recipes: SoftCon, SupCon, SimCLR and cross-sensor InfoNCE.

    Attributes:
        targets: ``auto`` follows the recipe (``simclr`` for ``cross_sensor``); cross-sensor
            runs may also use ``softcon`` or ``supcon`` targets.
        temperature: Softmax temperature of the similarities.
        proj_dim: Output width of the projection head.
        proj_hidden: Hidden width of the projection head.
        gather: Contrast against the samples of every device (all-gather with gradients).
    """

    targets: ContrastTargets = "auto"
    temperature: float = 0.1
    proj_dim: int = 128
    proj_hidden: int = 512
    gather: bool = True


@dataclass(frozen=True)
class TeacherSpec:
    """A frozen teacher for feature distillation.

    Attributes:
        checkpoint: A checkpoint :func:`thinkingearth.models.load` reads (ours, Copernicus-FM or
            DOFA); called with the batch's bands and metadata. With ``factory``: a state dict
            (read with ``weights_only=True``) loaded into the factory's module.
        factory: ``"package.module:callable"`` returning any ``torch.nn.Module``; it is called
            as ``teacher(image)`` and must return ``[B, D]`` features or ``[B, D, h, w]`` maps.
        kwargs: Keyword arguments of ``factory``.
    """

    checkpoint: str | None = None
    factory: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DistillConfig:
    """Feature distillation from a frozen teacher (cosine loss), alone or with MAE.

    Attributes:
        teacher: The teacher (see :class:`TeacherSpec`); a Python caller may instead pass any
            module to :func:`thinkingearth.pretrain.run_pretrain`.
        weight: Weight of the distillation loss (MAE's weight is 1).
        teacher_bands: Bands fed to the teacher (of the batch's sensor, from the augmented image
            before band dropping); ``None`` = the student's bands.
        sensors: Sensors whose batches are distilled; ``None`` = all.
    """

    teacher: TeacherSpec | None = None
    weight: float = 1.0
    teacher_bands: tuple[str, ...] | None = None
    sensors: tuple[str, ...] | None = None


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up and cosine decay, stepped every optimiser step.

    Attributes:
        lr: Peak learning rate.
        weight_decay: Decoupled weight decay (not applied to biases, norms and tokens).
        betas: AdamW betas.
        warmup_steps: Linear warm-up length.
        schedule: ``cosine`` decay to ``min_lr_ratio * lr`` at ``max_steps``, or ``constant``.
        min_lr_ratio: Final learning rate as a share of ``lr``.
        grad_clip: Gradient-norm clipping (0 = off).
    """

    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 20
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0


@dataclass(frozen=True)
class TrainerConfig:
    """Lightning trainer settings.

    Attributes:
        max_steps: Optimiser steps of the run.
        max_time_s: Stop after this many seconds of training (``None`` = no limit).
        accelerator: ``cpu``, ``gpu`` or ``auto``.
        devices: Devices per node (processes on CPU).
        num_nodes: Nodes (Lightning DDP: torchrun, SLURM).
        strategy: ``auto``, ``ddp`` (one process per device, launched by Lightning or torchrun)
            or ``ddp_spawn``.
        precision: Lightning precision (``32-true``, ``bf16-mixed``, ``16-mixed``).
        checkpoint_every: Write a checkpoint every this many steps (and at the end).
        keep_checkpoints: How many of the latest checkpoints to keep.
        log_every: Log (CSV and TensorBoard) every this many steps.
        progress_bar: Show a progress bar.
        threads: Torch intra-op threads per process (``None`` = torch's default).
    """

    max_steps: int = 300
    max_time_s: float | None = None
    accelerator: Literal["cpu", "gpu", "auto"] = "cpu"
    devices: int = 1
    num_nodes: int = 1
    strategy: Literal["auto", "ddp", "ddp_spawn"] = "auto"
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true"
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    log_every: int = 10
    progress_bar: bool = True
    threads: int | None = None


@dataclass(frozen=True)
class PretrainConfig:
    """A whole pretraining run.

    Attributes:
        name: Name of the configuration (used for the default output folder).
        recipe: ``mae``; ``softcon``, ``supcon`` or ``simclr`` (contrastive on two augmented
            views); ``cross_sensor`` (co-registered ``data.pair`` samples are positives);
            ``distill`` (feature distillation only). ``mae`` with a ``distill`` section
            combines both, as in Copernicus-FM.
        seed: Seed of the initialisation, the data order, augmentations and masks.
        encoder: The encoder (see :class:`EncoderSpec`).
        data: The training data.
        augment: Augmentations.
        mae: MAE settings (recipe ``mae``).
        contrastive: Contrastive settings (``softcon``, ``supcon``, ``simclr``, ``cross_sensor``).
        distill: Distillation settings (recipe ``distill``, or with ``mae``).
        optim: Optimiser and schedule.
        trainer: Trainer settings.
    """

    name: str = "custom"
    recipe: Recipe = "mae"
    seed: int = 0
    encoder: EncoderSpec = field(default_factory=EncoderSpec)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mae: MAEConfig = field(default_factory=MAEConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    distill: DistillConfig | None = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    # ------------------------------------------------------------------------------------------

    @property
    def contrast_targets(self) -> Literal["softcon", "supcon", "simclr"]:
        """The contrastive targets of the run (``auto`` resolved)."""
        targets = self.contrastive.targets
        if targets != "auto":
            return targets
        if self.recipe in ("softcon", "supcon", "simclr"):
            return self.recipe  # type: ignore[return-value]
        return "simclr"

    @property
    def crop_size(self) -> int:
        """Output size of the augmented images."""
        return self.augment.crop_size or self.data.size

    @property
    def sensors(self) -> tuple[str, ...]:
        """Canonical names of the sensors the run reads (``pair`` for ``cross_sensor``)."""
        if self.recipe == "cross_sensor":
            assert self.data.pair is not None
            return tuple(get_sensor(s).name for s in self.data.pair)
        return tuple(get_sensor(s.sensor).name for s in self.data.sensors)

    def source_for(self, sensor: str) -> SensorSource:
        """The :class:`SensorSource` of a sensor (a default one if ``data.sensors`` lacks it)."""
        canonical = get_sensor(sensor).name
        for source in self.data.sensors:
            if get_sensor(source.sensor).name == canonical:
                return source
        return SensorSource(canonical)

    def to_dict(self) -> dict[str, Any]:
        """Plain-type (YAML/JSON-safe) dict of the configuration; tuples become lists."""
        return _plain(dataclasses.asdict(self))

    def validate(self) -> PretrainConfig:
        """Check every value that can be checked without data; returns ``self``.

        Raises:
            UserInputError: A value out of range or inconsistent with the recipe.
            UnknownSensorError: A sensor the registry does not know.
            UnknownBandError: A band the sensor does not have.
        """
        from thinkingearth.models.weights import CONFIGS  # lazy: imports torch

        if self.seed < 0:
            raise UserInputError(f"seed must be >= 0, got {self.seed}")
        d, a, t = self.data, self.augment, self.trainer
        if not d.sensors:
            raise UserInputError("data.sensors is empty; expected at least one sensor")
        seen: set[str] = set()
        for i, source in enumerate(d.sensors):
            sensor = get_sensor(source.sensor)  # the registry's own one-line error
            if source.bands is not None:
                sensor.select(source.bands)
            if d.source == "synthetic" and sensor.name not in SYNTHETIC_SENSORS:
                raise UserInputError(
                    f"data.sensors[{i}]: the synthetic world has no {sensor.name}; expected one "
                    f"of: {', '.join(SYNTHETIC_SENSORS)}"
                )
            if sensor.name in seen:
                raise UserInputError(f"data.sensors lists {sensor.name} twice; list it once")
            seen.add(sensor.name)
            _positive(f"data.sensors[{i}].n", source.n)
        if self.recipe == "cross_sensor":
            if d.pair is None or len(d.pair) != 2:
                raise UserInputError(
                    "recipe cross_sensor needs data.pair: two sensors, e.g. "
                    "[sentinel-1-grd, sentinel-2-l2a]"
                )
            names = [get_sensor(s).name for s in d.pair]
            if names[0] == names[1]:
                raise UserInputError(f"data.pair names {names[0]} twice; expected two sensors")
            for name in names:
                if d.source == "synthetic" and name not in SYNTHETIC_SENSORS:
                    raise UserInputError(
                        f"data.pair: the synthetic world has no {name}; expected some of: "
                        + ", ".join(SYNTHETIC_SENSORS)
                    )
                bands = self.source_for(name).bands
                if bands is not None:
                    get_sensor(name).select(bands)
        elif d.pair is not None:
            raise UserInputError(
                f"data.pair is only used by recipe cross_sensor, not {self.recipe}"
            )
        _positive("data.size", d.size)
        _positive("data.batch_size", d.batch_size)
        if d.num_workers < 0:
            raise UserInputError(f"data.num_workers must be >= 0, got {d.num_workers}")
        if not 0.0 <= d.cloud_cover <= 1.0:
            raise UserInputError(f"data.cloud_cover must be in [0, 1], got {d.cloud_cover}")
        _range_pair("augment.crop_scale", a.crop_scale, 0.0, 1.0)
        _range_pair("augment.crop_ratio", a.crop_ratio, 0.0, math.inf)
        _range_pair("augment.band_fraction", a.band_fraction, 0.0, 1.0)
        if a.crop_size is not None:
            _positive("augment.crop_size", a.crop_size)
        if self.recipe in ("softcon", "supcon", "simclr") and self.contrastive.targets not in (
            "auto",
            self.recipe,
        ):
            raise UserInputError(
                f"contrastive.targets {self.contrastive.targets!r} contradicts recipe "
                f"{self.recipe!r}; leave it 'auto' or pick the recipe you want"
            )
        m, c = self.mae, self.contrastive
        if not 0.0 < m.mask_ratio < 1.0:
            raise UserInputError(f"mae.mask_ratio must be in (0, 1), got {m.mask_ratio}")
        for key in ("decoder_dim", "decoder_depth", "decoder_heads"):
            _positive(f"mae.{key}", getattr(m, key))
        if m.decoder_dim % m.decoder_heads or m.decoder_dim % 4:
            raise UserInputError(
                f"mae.decoder_dim ({m.decoder_dim}) must be a multiple of 4 and of "
                f"mae.decoder_heads ({m.decoder_heads})"
            )
        if not c.temperature > 0:
            raise UserInputError(f"contrastive.temperature must be > 0, got {c.temperature}")
        _positive("contrastive.proj_dim", c.proj_dim)
        _positive("contrastive.proj_hidden", c.proj_hidden)
        if self.recipe == "distill" and self.distill is None:
            raise UserInputError("recipe distill needs a distill section with a teacher")
        if self.distill is not None:
            if self.recipe not in ("mae", "distill"):
                raise UserInputError(
                    f"distill combines with recipe mae (or runs alone as recipe distill), not "
                    f"with {self.recipe}"
                )
            self._validate_distill(self.distill)
        o = self.optim
        _positive("optim.lr", o.lr)
        if o.weight_decay < 0 or o.warmup_steps < 0 or o.grad_clip < 0:
            raise UserInputError("optim.weight_decay, warmup_steps and grad_clip must be >= 0")
        if not 0.0 <= o.min_lr_ratio <= 1.0:
            raise UserInputError(f"optim.min_lr_ratio must be in [0, 1], got {o.min_lr_ratio}")
        for key in ("max_steps", "devices", "num_nodes", "checkpoint_every", "keep_checkpoints"):
            _positive(f"trainer.{key}", getattr(t, key))
        _positive("trainer.log_every", t.log_every)
        if t.max_time_s is not None and not t.max_time_s > 0:
            raise UserInputError(f"trainer.max_time_s must be > 0, got {t.max_time_s}")
        if t.threads is not None:
            _positive("trainer.threads", t.threads)
        # The encoder: name, overrides and patch-size compatibility.
        if self.encoder.name not in CONFIGS:
            raise UserInputError(
                f"encoder.name: unknown model {self.encoder.name!r}; expected one of: "
                + ", ".join(sorted(CONFIGS))
            )
        fields = {f.name for f in dataclasses.fields(CONFIGS[self.encoder.name])}
        unknown = sorted(set(self.encoder.overrides) - fields)
        if unknown:
            raise UserInputError(
                f"unknown key 'encoder.overrides.{unknown[0]}'; expected some of: "
                + ", ".join(sorted(fields))
            )
        patch = int(self.encoder.overrides.get("patch_size", CONFIGS[self.encoder.name].patch_size))
        if self.crop_size % patch:
            raise UserInputError(
                f"augment.crop_size ({self.crop_size}) must be a multiple of the encoder's patch "
                f"size ({patch})"
            )
        if self.crop_size > d.size:
            raise UserInputError(
                f"augment.crop_size ({self.crop_size}) is larger than data.size ({d.size})"
            )
        if self.encoder.init is not None and not Path(self.encoder.init).is_file():
            raise UserInputError(f"encoder.init: checkpoint {self.encoder.init} does not exist")
        self._check_variables()
        return self

    def _check_variables(self) -> None:
        """Variables (S5P gases, DEM) are described to new encoders by the text encoder."""
        for name in self.sensors:
            bands = get_sensor(name).select(self.source_for(name).bands)
            if self.encoder.init is None and any(b.variable for b in bands):
                from thinkingearth.models.text import text_encoder_available

                if not text_encoder_available():
                    raise UserInputError(
                        f"{name} bands are non-spectral variables, which the encoder describes "
                        "with its text encoder; install it with pip install 'thinkingearth[text]'"
                    )

    def _validate_distill(self, distill: DistillConfig) -> None:
        if not distill.weight > 0:
            raise UserInputError(f"distill.weight must be > 0, got {distill.weight}")
        teacher = distill.teacher
        if teacher is not None:
            if teacher.checkpoint is None and teacher.factory is None:
                raise UserInputError(
                    "distill.teacher needs a checkpoint (a model thinkingearth.models.load reads) "
                    "or a factory ('package.module:callable')"
                )
            if teacher.factory is not None and ":" not in teacher.factory:
                raise UserInputError(
                    f"distill.teacher.factory {teacher.factory!r}: expected 'package.module:callable'"
                )
            if teacher.checkpoint is not None and not Path(teacher.checkpoint).is_file():
                raise UserInputError(
                    f"distill.teacher.checkpoint {teacher.checkpoint} does not exist"
                )
        if distill.sensors is not None:
            for name in distill.sensors:
                get_sensor(name)
        if distill.teacher_bands is not None:
            for name in distill.sensors or self.sensors:
                get_sensor(name).select(distill.teacher_bands)


# ----------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise UserInputError(f"{key} must be positive, got {value}")


def _range_pair(key: str, pair: tuple[float, float], low: float, high: float) -> None:
    a, b = pair
    if not (low < a <= b <= high):
        raise UserInputError(
            f"{key} must be [min, max] with {low} < min <= max <= {high}, got {list(pair)}"
        )


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is tuple:
        return "a list"
    if origin is dict:
        return "a mapping"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert it (lists to tuples)."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise UserInputError(f"{key} must not be null; expected {_type_name(tp)}")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except UserInputError as error:
                errors.append(error)
        if len(errors) == 1:
            raise errors[0]
        raise UserInputError(f"{key} is {value!r}; expected {_type_name(tp)}")
    if origin is Literal:
        if value not in get_args(tp):
            raise UserInputError(
                f"{key} is {value!r}; expected one of: " + ", ".join(str(a) for a in get_args(tp))
            )
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise UserInputError(f"{key} is {value!r}; expected a list")
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise UserInputError(f"{key} has {len(value)} values; expected {len(args)}")
        return tuple(
            _convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise UserInputError(f"{key} is {value!r}; expected a mapping")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserInputError(f"{key} is {value!r}; expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserInputError(f"{key} is {value!r}; expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserInputError(f"{key} is {value!r}; expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise UserInputError(f"{key} is {value!r}; expected a string")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")  # pragma: no cover


def _build(cls: Any, data: Any, prefix: str) -> Any:
    where = prefix or "the config"
    if not isinstance(data, Mapping):
        raise UserInputError(f"{where} is {data!r}; expected a mapping of keys to values")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            full = f"{prefix}.{key}" if prefix else str(key)
            raise UserInputError(
                f"unknown key {full!r} in the config; expected one of: {', '.join(names)}"
            )
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        kwargs[key] = _convert(value, hints[key], full)
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any]) -> PretrainConfig:
    """Build and validate a :class:`PretrainConfig` from a plain mapping (parsed YAML).

    Raises:
        UserInputError: For an unknown key (named, with the valid keys), a wrong type or value;
            the registry's errors for unknown sensors and bands.
    """
    data = dict(data)
    data.pop("base", None)
    # Sensors may be written as bare names: [s2, s1].
    raw = data.get("data")
    if isinstance(raw, Mapping) and isinstance(raw.get("sensors"), list):
        raw = dict(raw)
        raw["sensors"] = [{"sensor": s} if isinstance(s, str) else s for s in raw["sensors"]]
        data["data"] = raw
    config: PretrainConfig = _build(PretrainConfig, data, "")
    return config.validate()


# ----------------------------------------------------------------------------------------------
# Files and shipped configurations
# ----------------------------------------------------------------------------------------------


def _shipped() -> dict[str, Any]:
    folder = resources.files("thinkingearth") / "configs"
    if not folder.is_dir():  # pragma: no cover - broken install
        return {}
    return {
        Path(entry.name).stem: entry
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml") and entry.is_file()
    }


def list_configs() -> list[str]:
    """Names of the pretraining configurations shipped in the package."""
    return sorted(name for name in _shipped() if _is_pretrain_config(name))


def _is_pretrain_config(name: str) -> bool:
    try:
        text = _shipped()[name].read_text(encoding="utf-8")
    except OSError:  # pragma: no cover
        return False
    data = yaml.safe_load(text)
    return isinstance(data, Mapping) and ("recipe" in data or "base" in data)


def _read_raw(name_or_file: str | Path, chain: tuple[str, ...] = ()) -> dict[str, Any]:
    text: str
    label = str(name_or_file)
    path = Path(name_or_file)
    shipped = _shipped()
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise UserInputError(f"config file {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise UserInputError(f"cannot read config {path}: {error.strerror}") from None
    elif label in shipped:
        text = shipped[label].read_text(encoding="utf-8")
    else:
        raise UserInputError(
            f"unknown config {label!r}: not a file and not a shipped config; expected a YAML file "
            f"or one of: {', '.join(list_configs())}"
        )
    if label in chain:
        raise UserInputError(f"config {label!r} extends itself (base chain {' -> '.join(chain)})")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        first = str(error).strip().splitlines()[0]
        raise UserInputError(f"config {label} is not valid YAML ({first})") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise UserInputError(f"config {label} must be a mapping of keys to values")
    data = dict(data)
    base = data.get("base")
    if base is not None:
        if not isinstance(base, str):
            raise UserInputError(f"base in {label} must be a config name or file, got {base!r}")
        base_path = Path(base)
        if not base_path.is_absolute() and path.is_file() and (path.parent / base_path).is_file():
            base = str(path.parent / base_path)
        merged = merge(_read_raw(base, (*chain, label)), data)
        merged.pop("base", None)
        return merged
    return data


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``over`` into ``base`` recursively: mappings merge, everything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    name_or_file: str | Path, overrides: Mapping[str, Any] | None = None
) -> PretrainConfig:
    """Read a configuration by shipped name or YAML path, merge ``overrides`` and validate it.

    Args:
        name_or_file: A name from :func:`list_configs` or a path to a YAML file.
        overrides: Nested keys merged over the file (e.g. ``{"trainer": {"max_steps": 10}}``).

    Raises:
        UserInputError: Unknown name, unreadable file, invalid YAML or an invalid configuration.
    """
    data = _read_raw(name_or_file)
    if overrides:
        data = merge(data, overrides)
    return config_from_dict(data)
