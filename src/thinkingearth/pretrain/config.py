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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from thinkingearth.configfile import build, merge, plain, read_config, shipped_configs
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
_FOLDER = "configs"
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
        return plain(dataclasses.asdict(self))

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
    config: PretrainConfig = build(PretrainConfig, data)
    return config.validate()


# ----------------------------------------------------------------------------------------------
# Files and shipped configurations
# ----------------------------------------------------------------------------------------------


def list_configs() -> list[str]:
    """Names of the pretraining configurations shipped in the package."""
    shipped = shipped_configs(_FOLDER)
    return sorted(name for name in shipped if _is_pretrain_config(shipped[name]))


def _is_pretrain_config(entry: Any) -> bool:
    try:
        data = yaml.safe_load(entry.read_text(encoding="utf-8"))
    except OSError:  # pragma: no cover
        return False
    return isinstance(data, Mapping) and ("recipe" in data or "base" in data)


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
    data = read_config(name_or_file, _FOLDER, list_configs)
    if overrides:
        data = merge(data, overrides)
    return config_from_dict(data)
