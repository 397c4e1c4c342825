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
    "DataSource",
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

#: The built-in recipes; plugin recipes (``thinkingearth.recipes`` entry points, e.g. the
#: vision-language ``image_text``) add names (:mod:`thinkingearth.pretrain.plugins`).
Recipe = Literal["mae", "softcon", "supcon", "simclr", "cross_sensor", "distill"]
ContrastTargets = Literal["auto", "softcon", "supcon", "simclr"]
DataSource = Literal[
    "synthetic", "folder", "bigearthnet", "kurosiwo", "ssl4eo-s12", "copernicus-pretrain", "shards"
]
#: Scenes per sensor of the synthetic world when ``n`` is not given.
SYNTHETIC_N = 256
#: Sources that read a published layout under ``data.root``.
ROOTED_SOURCES: tuple[str, ...] = (
    "bigearthnet",
    "kurosiwo",
    "ssl4eo-s12",
    "copernicus-pretrain",
    "shards",
)
#: Sensors each real source serves (``folder`` and ``shards``: any).
SOURCE_SENSORS: dict[str, tuple[str, ...]] = {
    "bigearthnet": ("sentinel-2-l2a", "sentinel-1-grd"),
    "kurosiwo": ("sentinel-1-grd",),
    "ssl4eo-s12": ("sentinel-1-grd", "sentinel-2-l1c", "sentinel-2-l2a"),
    "copernicus-pretrain": (
        "sentinel-1-grd",
        "sentinel-2-l1c",
        "sentinel-3-olci",
        "sentinel-5p",
        "copernicus-dem",
    ),
}
#: Sources whose samples carry multi-hot ``labels`` (for SoftCon and SupCon).
LABELLED_SOURCES: tuple[str, ...] = ("synthetic", "bigearthnet", "shards")
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


#: The architecture of a new encoder whose ``encoder.name`` is left out.
DEFAULT_ENCODER = "thinkingearth_vit_tiny"


@dataclass(frozen=True)
class EncoderSpec:
    """Which encoder to pretrain: a new one, or one that continues from weights.

    A new encoder is the architecture ``name`` with ``overrides``, randomly initialised. With
    ``init`` the run continues from a checkpoint and the checkpoint's architecture wins: its
    tensors fix it, so ``overrides`` are refused and ``name``, if given, must be that
    architecture; either contradiction is a one-line error, never a silent choice.

    Attributes:
        name: A registered architecture (``thinkingearth.models.list_models()``). Without
            ``init``: default ``thinkingearth_vit_tiny``. With ``init``: leave it out, or give
            the checkpoint's architecture (``copernicusfm_vit_base`` for ``copernicusfm_base``).
        overrides: Fields of :class:`~thinkingearth.models.EncoderConfig` to change in a new
            encoder, e.g. ``{depth: 4, patch_size: 8, img_size: 64}``; not with ``init``.
        init: Start from these weights: a checkpoint :func:`thinkingearth.models.load` reads
            (our ``.safetensors``, a published Copernicus-FM or DOFA ``.pth``), or a published
            weights name (``copernicusfm_base``, ``dofa_base``, ...: ``thinkingearth weights
            list``), found or downloaded when the run starts; ``None`` = random initialisation.
    """

    name: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    init: str | None = None

    def __post_init__(self) -> None:
        """A new encoder without a name is the default architecture."""
        if self.name is None and self.init is None:
            object.__setattr__(self, "name", DEFAULT_ENCODER)

    def check(self) -> int | None:
        """Check the encoder without reading weights or touching the network.

        A published weights name is checked against the registry only; whether its file is
        cached or downloadable is found out when the run starts (the registry's one-line error).

        Returns:
            The encoder's patch size, or ``None`` where only the checkpoint's tensors tell (a
            ``.pth`` file); the run checks that once it has loaded them.

        Raises:
            UserInputError: An unknown architecture or override; ``init`` that is neither a
                file nor a published weights name; ``overrides`` with ``init``; a ``name`` that
                is not the architecture of ``init``.
        """
        from thinkingearth.models.weights import CONFIGS  # lazy: imports torch

        if self.init is None:
            assert self.name is not None  # __post_init__
            if self.name not in CONFIGS:
                raise UserInputError(
                    f"encoder.name: unknown model {self.name!r}; expected one of: "
                    + ", ".join(sorted(CONFIGS))
                )
            fields = {f.name for f in dataclasses.fields(CONFIGS[self.name])}
            unknown = sorted(set(self.overrides) - fields)
            if unknown:
                raise UserInputError(
                    f"unknown key 'encoder.overrides.{unknown[0]}'; expected some of: "
                    + ", ".join(sorted(fields))
                )
            return int(self.overrides.get("patch_size", CONFIGS[self.name].patch_size))
        if self.overrides:
            raise UserInputError(
                f"encoder.overrides ({', '.join(sorted(self.overrides))}) cannot change encoder.init "
                f"{self.init}: the checkpoint's tensors fix its architecture; drop "
                "encoder.overrides (or encoder.init, for a new encoder)"
            )
        architecture, patch = self._init_architecture()
        if architecture is not None:
            self.check_architecture(architecture)
        return patch

    def check_architecture(self, architecture: str) -> None:
        """Refuse a ``name`` that is not ``architecture``, the one of the ``init`` checkpoint.

        Raises:
            UserInputError: ``name`` is given and differs.
        """
        if self.name is not None and self.name != architecture:
            raise UserInputError(
                f"encoder.name {self.name!r} contradicts encoder.init {self.init}, a "
                f"{architecture} checkpoint whose architecture is the one used; leave "
                f"encoder.name out or set it to {architecture!r}"
            )

    def _init_architecture(self) -> tuple[str | None, int | None]:
        """``(architecture, patch size)`` of ``init`` as far as known without its tensors."""
        import json

        from thinkingearth.models import published  # lazy: imports torch
        from thinkingearth.models.weights import CONFIGS, FORMAT

        assert self.init is not None
        path = Path(self.init)
        if path.is_file():  # load() also takes a file before a weights name
            if path.suffix not in (".safetensors", ".json"):
                return None, None  # a published .pth: its tensors tell
            try:  # our checkpoints name their architecture in the JSON beside the tensors
                header = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
                config = header["config"] if header.get("format") == FORMAT else None
                return str(config["name"]), int(config["patch_size"])
            except (OSError, ValueError, TypeError, KeyError, AttributeError):
                return None, None  # load() names what is wrong when the run starts
        if self.init in published.WEIGHTS:
            architecture = published.WEIGHTS[self.init].architecture
            known = CONFIGS.get(architecture)
            return architecture, (known.patch_size if known is not None else None)
        raise UserInputError(f"encoder.init: {published.unknown_name_error(self.init)}")


@dataclass(frozen=True)
class SensorSource:
    """One sensor of the training data.

    Attributes:
        sensor: Registry name or alias of the sensor.
        bands: A subset of its bands in any order; ``None`` = every band the source makes. For
            source ``folder`` these also name the bands of files that have no band descriptions
            and not the sensor's full band count (one name per file band, in file order).
        n: Training samples of this sensor per pass over the data. ``None``: the synthetic world
            makes :data:`SYNTHETIC_N` scenes; a real source serves every item once (a patch, a
            tile acquisition, a location; for ``folder`` as many windows as tile each file
            without overlap). Fewer than that draws a seeded subset; more repeats items with
            other random windows.
        root: Source ``folder``: the folder tree of GeoTIFF/COG files of this sensor.
        units: Source ``folder``, SAR sensors: what the files hold, ``linear`` sigma0 or ``db``;
            ``auto`` tells them apart per file from the values.
    """

    sensor: str
    bands: tuple[str, ...] | None = None
    n: int | None = None
    root: str | None = None
    units: Literal["auto", "linear", "db"] = "auto"


@dataclass(frozen=True)
class DataConfig:
    """Training data.

    Attributes:
        source: Where samples come from (:mod:`thinkingearth.pretrain.sources`):
            ``synthetic`` (the embedded synthetic Copernicus world), ``folder`` (any folder tree
            of GeoTIFF/COG files per sensor entry's ``root``), ``bigearthnet`` (v1 or v2,
            Sentinel-2 L2A and Sentinel-1, with multi-labels), ``kurosiwo`` (labelled tiles and
            the unlabelled SAR set), ``ssl4eo-s12``, ``copernicus-pretrain`` (the published
            WebDataset shards) or ``shards`` (shards written by ``thinkingearth shard``).
        root: The data set's folder, for every source but ``synthetic`` and ``folder``.
        sensors: The sensors of the run; batches hold one sensor each (grouped batches), drawn
            in a seeded shuffled order.
        pair: For ``cross_sensor``: the two sensors whose co-registered samples of one place are
            positives (each may also appear in ``sensors`` to choose its bands and ``n``).
        size: Pixels per side of the samples: real sources cut random windows of this size,
            seeded per ``(seed, sample)``.
        batch_size: Samples per batch on each device.
        num_workers: DataLoader worker processes.
        cloud_cover: Mean Sentinel-2 cloud fraction of the synthetic world.
        split: The synthetic world's stream; the official split of ``bigearthnet`` and the event
            split of ``kurosiwo`` (``null``: every patch or event). Other sources have none.
        shuffle_buffer: Source ``shards``: decoded samples each reader holds to shuffle (memory:
            this many samples per data-loader worker and sensor); 0 reads in shard order.
        kurosiwo_captioned: Source ``kurosiwo``: read only the post-event acquisitions (MS1) of
            the labelled tiles, each window with its ``flood_mask`` (which ``recipe: image_text``
            turns into a caption of its flood shares); pre-event acquisitions and unlabelled
            tiles have no label and are left out.
    """

    source: DataSource = "synthetic"
    root: str | None = None
    sensors: tuple[SensorSource, ...] = (SensorSource("sentinel-2-l2a"),)
    pair: tuple[str, ...] | None = None
    size: int = 64
    batch_size: int = 32
    num_workers: int = 0
    cloud_cover: float = 0.0
    split: Literal["train", "val", "test"] | None = "train"
    shuffle_buffer: int = 1024
    kurosiwo_captioned: bool = False

    def __post_init__(self) -> None:
        """The synthetic world makes :data:`SYNTHETIC_N` scenes per sensor unless told."""
        if self.source == "synthetic" and any(s.n is None for s in self.sensors):
            sensors = tuple(
                dataclasses.replace(s, n=SYNTHETIC_N) if s.n is None else s for s in self.sensors
            )
            object.__setattr__(self, "sensors", sensors)


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
            combines both, as in Copernicus-FM. Or a plugin recipe (an entry point of group
            ``thinkingearth.recipes``: ``image_text`` of :mod:`thinkingearth.vl`).
        seed: Seed of the initialisation, the data order, augmentations and masks.
        encoder: The encoder (see :class:`EncoderSpec`).
        data: The training data.
        augment: Augmentations.
        mae: MAE settings (recipe ``mae``).
        contrastive: Contrastive settings (``softcon``, ``supcon``, ``simclr``, ``cross_sensor``).
        distill: Distillation settings (recipe ``distill``, or with ``mae``).
        optim: Optimiser and schedule.
        trainer: Trainer settings.
        vl: Settings of a plugin recipe that reads the ``vl`` section (vision-language:
            ``image_text``), checked and filled in by that recipe; ``None`` for the others.
    """

    name: str = "custom"
    recipe: str = "mae"
    seed: int = 0
    encoder: EncoderSpec = field(default_factory=EncoderSpec)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mae: MAEConfig = field(default_factory=MAEConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    distill: DistillConfig | None = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    vl: dict[str, Any] | None = None

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
    def paired(self) -> bool:
        """Whether the recipe reads co-registered ``data.pair`` samples (``cross_sensor``, or a
        plugin recipe declared ``paired``, e.g. ``modality_gap``)."""
        if self.recipe == "cross_sensor":
            return True
        from thinkingearth.pretrain.plugins import get_recipe, is_plugin

        return is_plugin(self.recipe) and get_recipe(self.recipe).paired

    @property
    def crop_size(self) -> int:
        """Output size of the augmented images."""
        return self.augment.crop_size or self.data.size

    @property
    def sensors(self) -> tuple[str, ...]:
        """Canonical names of the sensors the run reads (``pair`` for paired recipes)."""
        if self.paired:
            assert self.data.pair is not None
            return tuple(get_sensor(s).name for s in self.data.pair)
        return tuple(get_sensor(s.sensor).name for s in self.data.sensors)

    def source_for(self, sensor: str) -> SensorSource:
        """The :class:`SensorSource` of a sensor (a default one if ``data.sensors`` lacks it)."""
        canonical = get_sensor(sensor).name
        for source in self.data.sensors:
            if get_sensor(source.sensor).name == canonical:
                return source
        return SensorSource(canonical, n=SYNTHETIC_N if self.data.source == "synthetic" else None)

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
        from thinkingearth.pretrain.plugins import get_recipe, is_plugin

        plugin = get_recipe(self.recipe) if is_plugin(self.recipe) else None  # unknown: named
        if self.vl is not None and (plugin is None or plugin.section != "vl"):
            raise UserInputError(
                f"the vl section is only read by the vision-language recipes, not {self.recipe}"
            )
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
            if source.n is not None:
                _positive(f"data.sensors[{i}].n", source.n)
            self._validate_entry(i, source, sensor.name)
        self._validate_source()
        if self.paired:
            if d.pair is None or len(d.pair) != 2:
                raise UserInputError(
                    f"recipe {self.recipe} needs data.pair: two sensors, e.g. "
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
            self._validate_pair(names)
        elif d.pair is not None:
            raise UserInputError(
                f"data.pair is only used by recipes that read pairs (cross_sensor, "
                f"modality_gap), not {self.recipe}"
            )
        labelled = self.recipe in ("softcon", "supcon") or (
            self.recipe == "cross_sensor" and self.contrast_targets in ("softcon", "supcon")
        )
        if labelled and d.source not in LABELLED_SOURCES:
            raise UserInputError(
                f"{self.contrast_targets} targets need multi-hot labels, which data.source "
                f"{d.source} has none of; use bigearthnet, synthetic or shards written from "
                "them, or contrastive.targets simclr"
            )
        _positive("data.size", d.size)
        _positive("data.batch_size", d.batch_size)
        if d.num_workers < 0:
            raise UserInputError(f"data.num_workers must be >= 0, got {d.num_workers}")
        if d.shuffle_buffer < 0:
            raise UserInputError(f"data.shuffle_buffer must be >= 0, got {d.shuffle_buffer}")
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
        # The encoder: a new architecture or a checkpoint to continue, and its patch size (of a
        # .pth checkpoint only known from its tensors: the module checks it when it loads them).
        patch = self.encoder.check()
        if patch is not None and self.crop_size % patch:
            raise UserInputError(
                f"augment.crop_size ({self.crop_size}) must be a multiple of the encoder's patch "
                f"size ({patch})"
            )
        if self.crop_size > d.size:
            raise UserInputError(
                f"augment.crop_size ({self.crop_size}) is larger than data.size ({d.size})"
            )
        self._check_variables()
        if plugin is not None and plugin.validate is not None:
            resolved = plugin.validate(self)  # the recipe's own checks, its section filled in
            if plugin.section is not None and resolved is not None:
                object.__setattr__(self, plugin.section, plain(dict(resolved)))
        return self

    def _validate_entry(self, i: int, entry: SensorSource, sensor: str) -> None:
        """One ``data.sensors`` entry against the source: ``root``, ``units`` and the sensor."""
        d = self.data
        key = f"data.sensors[{i}]"
        if d.source == "folder":
            if not entry.root:
                raise UserInputError(
                    f"{key}.root is missing: source folder reads each sensor's GeoTIFFs from its "
                    f"own root, e.g. {{sensor: {sensor}, root: path/to/files}}"
                )
        else:
            if entry.root is not None:
                where = "data.root" if d.source in ROOTED_SOURCES else "nothing"
                raise UserInputError(
                    f"{key}.root is only read by source folder; source {d.source} reads {where}"
                )
            if entry.units != "auto":
                raise UserInputError(
                    f"{key}.units is only read by source folder; source {d.source} knows its units"
                )
        allowed = SOURCE_SENSORS.get(d.source)
        if allowed is not None and sensor not in allowed:
            raise UserInputError(
                f"{key}: source {d.source} has no {sensor}; expected one of: {', '.join(allowed)}"
            )
        if d.source == "copernicus-pretrain" and sensor == "sentinel-5p":
            bands = entry.bands or ("NO2",)
            if len(bands) != 1:
                raise UserInputError(
                    f"{key}.bands: copernicus-pretrain holds each Sentinel-5P gas with its own "
                    f"dates; give one of CO, NO2, O3, SO2, got {list(bands)}"
                )

    def _validate_source(self) -> None:
        """``data.root`` and ``data.split`` against the source."""
        d = self.data
        if d.source in ROOTED_SOURCES and not d.root:
            raise UserInputError(
                f"data.root is missing: source {d.source} reads its files from data.root "
                "(e.g. --set data.root=PATH)"
            )
        if d.source not in ROOTED_SOURCES and d.root is not None:
            hint = "each data.sensors entry has its own root" if d.source == "folder" else ""
            raise UserInputError(
                f"data.root is not read by source {d.source}" + (f"; {hint}" if hint else "")
            )
        if d.source == "synthetic" and d.split is None:
            raise UserInputError("data.split: the synthetic world needs train, val or test")
        if d.kurosiwo_captioned and d.source != "kurosiwo":
            raise UserInputError(
                f"data.kurosiwo_captioned is only read by source kurosiwo, not {d.source}"
            )

    def _validate_pair(self, names: list[str]) -> None:
        """The cross-sensor pair against the source: both sensors must be co-registered there."""
        d = self.data
        if d.source == "kurosiwo":
            raise UserInputError(
                "data.pair: Kuro Siwo is Sentinel-1 only, so it has no cross-sensor pairs; use "
                "bigearthnet, ssl4eo-s12, copernicus-pretrain or two folder entries"
            )
        allowed = SOURCE_SENSORS.get(d.source)
        if allowed is not None:
            for name in names:
                if name not in allowed:
                    raise UserInputError(
                        f"data.pair: source {d.source} has no {name}; expected two of: "
                        + ", ".join(allowed)
                    )
        if d.source == "ssl4eo-s12" and set(names) == {"sentinel-2-l1c", "sentinel-2-l2a"}:
            raise UserInputError(
                "data.pair: SSL4EO-S12's pairs are Sentinel-1 with Sentinel-2 (L1C or L2A)"
            )
        if d.source == "folder":
            listed = {get_sensor(s.sensor).name for s in d.sensors}
            for name in names:
                if name not in listed:
                    raise UserInputError(
                        f"data.pair: {name} has no data.sensors entry; source folder needs a "
                        f"{{sensor: {name}, root: ...}} entry for each sensor of the pair"
                    )

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
                from thinkingearth.models import published  # lazy: imports torch

                if teacher.factory is not None:  # a state dict for the factory's module
                    raise UserInputError(
                        f"distill.teacher.checkpoint {teacher.checkpoint} does not exist"
                    )
                if teacher.checkpoint not in published.WEIGHTS:  # load() takes a weights name
                    message = str(published.unknown_name_error(teacher.checkpoint))
                    raise UserInputError(f"distill.teacher.checkpoint: {message}")
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
    if (
        isinstance(raw, Mapping)
        and raw.get("source") == "shards"
        and raw.get("sensors") is None
        and isinstance(raw.get("root"), str)
    ):
        data["data"] = {**raw, "sensors": _shard_sensors(raw["root"])}
    config: PretrainConfig = build(PretrainConfig, data)
    return config.validate()


def _shard_sensors(root: str) -> list[dict[str, Any]]:
    """``data.sensors`` of a shards folder, read from its index: every sensor with its bands.

    ``data: {source: shards, root: DIR}`` (no ``sensors``, or ``sensors: null``) reads every
    group of the shards; the resolved config
    (written with the run) names them. A sensor stored with several band sets must be chosen
    with ``data.sensors``.
    """
    from thinkingearth.pretrain.shards import ShardIndex  # lazy: only shards runs read it

    entries: dict[str, list[str]] = {}
    for group in ShardIndex.read(root).groups:
        parts = [group["pair"][k] for k in ("a", "b")] if "pair" in group else [group]
        for part in parts:
            sensor, bands = get_sensor(part["sensor"]).name, list(part["bands"])
            if entries.setdefault(sensor, bands) != bands:
                raise UserInputError(
                    f"the shards in {root} hold {sensor} with several band sets; list the "
                    "sensors to read in data.sensors (with bands:)"
                )
    return [{"sensor": sensor, "bands": bands} for sensor, bands in entries.items()]


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
