"""Fine-tuning configurations: validated dataclasses read from YAML (``thinkingearth finetune``).

A configuration names the data (a reader of :mod:`thinkingearth.data.readers`, its root,
options and splits), the task (kind, classes, ignore index), the model (an encoder by registry
name, published weights name or checkpoint path; or a supervised baseline), the protocol, the
label fraction, the optimiser and the schedule, and how the model estimates its uncertainty
(``head:``, :class:`~thinkingearth.tasks.variants.UncertaintyHead`), and, for domain shift, how
the data is split into source and target domains (``split:``,
:class:`~thinkingearth.data.domains.SplitSpec`) and which adaptation method uses the
unlabelled target data (``adapt:``, :class:`~thinkingearth.tasks.variants.AdaptSection`; the
methods come from :mod:`thinkingearth.adapt` through entry points). Unknown keys at any
depth, wrong types and out-of-range values are one-line errors before any data is read
(:mod:`thinkingearth.configfile`); ``base: NAME_OR_FILE`` starts from another configuration.

Shipped configurations (:func:`list_finetune_configs`): ``synthetic-flood``,
``synthetic-landcover`` (no data needed, minutes on a CPU), ``kurosiwo-flood``,
``sen1floods11-water``, ``bigearthnet-landcover``, ``eurosat-ms``; with split protocols:
``synthetic-landcover-biomes`` (leave-regions-out), ``synthetic-cross-sensor`` (Sentinel-2 L2A to
Landsat 8/9), ``kurosiwo-leave-events-out``, ``bigearthnet-leave-countries-out``.

Example::

    name: kurosiwo-flood
    task: {kind: change, name: flood, classes: [no water, permanent water, flood],
           ignore_index: 3}
    data: {reader: kurosiwo, batch_size: 16}
    model: {encoder: copernicusfm_base, decoder_channels: 256}
    protocol: frozen-upernet
    head: {uncertainty: heteroscedastic, samples: 100, temperature: 1.0}
    trainer: {max_steps: 4000, val_every: 500, accelerator: auto}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from thinkingearth.configfile import build, merge, plain, read_config, shipped_configs
from thinkingearth.data.domains import SplitSpec
from thinkingearth.data.readers import LABELLED_READERS, ReaderName, reader_options
from thinkingearth.errors import UserInputError
from thinkingearth.models.baselines import BASELINES, TaskKind
from thinkingearth.tasks.protocols import Protocol
from thinkingearth.tasks.variants import (
    AdaptSection,
    UncertaintyHead,
    get_adaptation,
    get_uncertainty_builder,
)

__all__ = [
    "DataSection",
    "FinetuneConfig",
    "ModelSection",
    "OptimSection",
    "SplitNames",
    "TaskSection",
    "TrainerSection",
    "finetune_config_from_dict",
    "list_finetune_configs",
    "load_finetune_config",
]

_FOLDER = "configs/finetune"
#: Primary metric and its direction per task kind (as ``bench`` reports them).
PRIMARY: Mapping[str, tuple[str, bool]] = {
    "classification": ("oa", True),
    "multilabel": ("map", True),
    "segmentation": ("miou", True),
    "change": ("miou", True),
    "regression": ("rmse", False),
}


@dataclass(frozen=True)
class TaskSection:
    """What is predicted.

    Attributes:
        kind: ``classification``, ``multilabel``, ``segmentation``, ``change`` or
            ``regression``.
        name: Task name stored in the model: ``flood``, ``water`` or ``landcover`` make the
            model usable by ``thinkingearth predict --task NAME``; any other name is recorded.
        classes: Class (or label) names in id order; empty for regression.
        ignore_index: Mask value that counts nowhere (loss and metrics).
        primary: Metric that selects the best validation checkpoint (default: by kind, as in
            ``bench``: ``oa``, ``map``, ``miou``, ``rmse``).
    """

    kind: TaskKind = "segmentation"
    name: str = "landcover"
    classes: tuple[str, ...] = ()
    ignore_index: int | None = None
    primary: str | None = None

    @property
    def primary_metric(self) -> tuple[str, bool]:
        """``(metric key, higher is better)``."""
        default, higher = PRIMARY[self.kind]
        metric = self.primary or default
        return metric, (higher if metric == default else metric not in ("rmse", "mae", "loss"))


@dataclass(frozen=True)
class SplitNames:
    """The reader's split names.

    Attributes:
        train: Training split.
        val: Validation split; ``null`` holds out ``data.val_fraction`` of the training split
            (deterministically), as does a reader that has no validation split.
        test: Test split.
    """

    train: str = "train"
    val: str | None = "val"
    test: str = "test"


@dataclass(frozen=True)
class DataSection:
    """The labelled data.

    Attributes:
        reader: A reader of :mod:`thinkingearth.data.readers`.
        root: The data set's root folder (``--data-root``); not used by ``synthetic``.
        options: The reader's options.
        splits: Split names.
        val_fraction: Share of the training split held out for validation where there is no
            validation split.
        batch_size: Training batch size per device.
        eval_batch_size: Validation and test batch size.
        num_workers: Data-loader worker processes.
        cache: Keep normalised samples in memory (small data sets).
        stats_samples: Training samples that estimate normalisation statistics where the sensor
            registry publishes none.
    """

    reader: ReaderName = "synthetic"
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    splits: SplitNames = field(default_factory=SplitNames)
    val_fraction: float = 0.1
    batch_size: int = 16
    eval_batch_size: int = 32
    num_workers: int = 0
    cache: bool = False
    stats_samples: int = 32


@dataclass(frozen=True)
class ModelSection:
    """The network.

    Attributes:
        encoder: The any-sensor encoder: a registry configuration (random init, e.g.
            ``thinkingearth_vit_tiny``), a published weights name (``copernicusfm_base``) or a
            checkpoint path (``runs/pretrain/encoder.safetensors``). Ignored with ``baseline``.
        overrides: Configuration fields changed for a registry encoder (random init only).
        baseline: A supervised baseline trained from scratch instead (``unet``,
            ``siamese-diff``, ``resnet50``, ...; ``finetune`` protocol only).
        baseline_options: Keyword arguments of the baseline (``unet_widths``, ``wrn_depth``,
            ``wrn_width``, ``vit_depth``, ``img_size``, ``patch_size``).
        patch_size: Patch size the encoder runs at (default: its own).
        use_meta: Feed the samples' location, date and ground sample distance to the encoder.
        decoder_channels: UPerNet width.
        fusion: How change detection fuses pre- and post-event features: ``diff`` or
            ``concat``.
        tile: Tile side ``predict`` uses (default: the training samples' size).
    """

    encoder: str = "thinkingearth_vit_tiny"
    overrides: dict[str, Any] = field(default_factory=dict)
    baseline: str | None = None
    baseline_options: dict[str, Any] = field(default_factory=dict)
    patch_size: int | None = None
    use_meta: bool = True
    decoder_channels: int = 128
    fusion: Literal["diff", "concat"] = "diff"
    tile: int | None = None


@dataclass(frozen=True)
class OptimSection:
    """AdamW with linear warm-up then cosine decay, over the trainable parameters.

    Attributes:
        lr: Peak learning rate (default: by protocol, 5e-3 linear probe, 1e-3 otherwise).
        weight_decay: AdamW weight decay.
        warmup: Share of the steps with a linear warm-up.
    """

    lr: float | None = None
    weight_decay: float = 0.05
    warmup: float = 0.05


@dataclass(frozen=True)
class TrainerSection:
    """How long and where.

    Attributes:
        max_steps: Optimiser steps.
        val_every: Validate every this many steps (and at the end); the best validation
            checkpoint is the model.
        checkpoint_every: Write a resumable checkpoint every this many steps.
        keep_checkpoints: How many resumable checkpoints to keep.
        log_every: Log losses every this many steps.
        accelerator: ``cpu``, ``gpu`` or ``auto``.
        devices: Devices (processes on a CPU); more than one trains with DDP.
        precision: Lightning precision (``32-true``, ``bf16-mixed``, ``16-mixed``).
        threads: PyTorch intra-op CPU threads (default: PyTorch's).
    """

    max_steps: int = 200
    val_every: int = 50
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    log_every: int = 10
    accelerator: Literal["cpu", "gpu", "auto"] = "cpu"
    devices: int = 1
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true"
    threads: int | None = None


@dataclass(frozen=True)
class FinetuneConfig:
    """A whole fine-tuning run.

    Attributes:
        name: Name of the configuration.
        task: What is predicted.
        data: The labelled data.
        model: The network.
        protocol: ``linear-probe``, ``frozen-upernet`` or ``finetune`` (baselines: ``finetune``).
        fraction: Share of the training split's labels used, in ``(0, 1]``.
        seed: Seed of the initialisation, the label subset and the data order.
        optim: Optimiser.
        trainer: Schedule and devices.
        head: How the model estimates its uncertainty (``uncertainty: none`` by default; the
            other methods come from :mod:`thinkingearth.uncertainty`).
        split: Source and target domains (``protocol: none`` by default: the reader's own
            splits, as without the section).
        adapt: Domain adaptation or generalisation (``method: none`` by default); a method other
            than ``none`` needs the unlabelled target data of a split protocol.
    """

    name: str = "custom"
    task: TaskSection = field(default_factory=TaskSection)
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    protocol: Protocol = "finetune"
    fraction: float = 1.0
    seed: int = 0
    optim: OptimSection = field(default_factory=OptimSection)
    trainer: TrainerSection = field(default_factory=TrainerSection)
    head: UncertaintyHead = field(default_factory=UncertaintyHead)
    split: SplitSpec = field(default_factory=SplitSpec)
    adapt: AdaptSection = field(default_factory=AdaptSection)

    @property
    def lr(self) -> float:
        """Peak learning rate (the protocol's default unless set)."""
        if self.optim.lr is not None:
            return self.optim.lr
        return 5e-3 if self.protocol == "linear-probe" else 1e-3

    def to_dict(self) -> dict[str, Any]:
        """Plain-type (YAML/JSON-safe) dict of the configuration."""
        return plain(dataclasses.asdict(self))

    def validate(self) -> FinetuneConfig:
        """Check every value that can be checked without data; returns ``self``.

        Raises:
            UserInputError: A value out of range or inconsistent with another.
        """
        t, d, m, tr = self.task, self.data, self.model, self.trainer
        if t.kind != "regression" and len(t.classes) < 2:
            raise UserInputError(f"task.classes: a {t.kind} task needs at least two class names")
        if t.kind == "regression" and t.classes:
            raise UserInputError("task.classes: a regression task has no classes")
        if t.ignore_index is not None and t.ignore_index < 0:
            raise UserInputError(f"task.ignore_index must be >= 0, got {t.ignore_index}")
        if not t.name or not all(c.isalnum() or c in "-_" for c in t.name):
            raise UserInputError(f"task.name {t.name!r}: expected letters, digits, '-' and '_'")
        reader_options(d.reader)  # unknown reader: one line listing them
        if d.reader not in LABELLED_READERS:
            raise UserInputError(
                f"data.reader {d.reader} gives text, not task labels; finetune reads one of: "
                f"{', '.join(LABELLED_READERS)}"
            )
        unknown = sorted(set(d.options) - reader_options(d.reader))
        if unknown:
            raise UserInputError(
                f"unknown key 'data.options.{unknown[0]}' for reader {d.reader}; expected some "
                f"of: {', '.join(sorted(reader_options(d.reader)))}"
            )
        if d.reader == "synthetic" and "n" in d.options:
            _check_synthetic_counts(d.options["n"], d.splits)
        if not 0.0 < d.val_fraction < 1.0:
            raise UserInputError(f"data.val_fraction must be in (0, 1), got {d.val_fraction}")
        for key in ("batch_size", "eval_batch_size", "stats_samples"):
            _positive(f"data.{key}", getattr(d, key))
        if d.num_workers < 0:
            raise UserInputError(f"data.num_workers must be >= 0, got {d.num_workers}")
        if m.baseline is not None:
            if m.baseline not in BASELINES:
                raise UserInputError(
                    f"model.baseline: unknown baseline {m.baseline!r}; expected one of: "
                    + ", ".join(BASELINES)
                )
            if t.kind not in BASELINES[m.baseline].tasks:
                raise UserInputError(
                    f"model.baseline {m.baseline} cannot do {t.kind}: "
                    f"{BASELINES[m.baseline].reason}"
                )
            if self.protocol != "finetune":
                raise UserInputError(
                    f"baseline {m.baseline} is trained from scratch: protocol must be finetune, "
                    f"not {self.protocol}"
                )
            allowed = {"unet_widths", "wrn_depth", "wrn_width", "vit_depth", "img_size"}
            allowed.add("patch_size")
            extra = sorted(set(m.baseline_options) - allowed)
            if extra:
                raise UserInputError(
                    f"unknown key 'model.baseline_options.{extra[0]}'; expected some of: "
                    + ", ".join(sorted(allowed))
                )
        if t.kind in ("classification", "multilabel") and self.protocol == "frozen-upernet":
            raise UserInputError(
                "protocol frozen-upernet trains a dense decoder; scene classification uses "
                "linear-probe or finetune"
            )
        for key in ("patch_size", "tile"):
            value = getattr(m, key)
            if value is not None:
                _positive(f"model.{key}", value)
        _positive("model.decoder_channels", m.decoder_channels)
        if not 0.0 < self.fraction <= 1.0:
            raise UserInputError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.seed < 0:
            raise UserInputError(f"seed must be >= 0, got {self.seed}")
        _positive("optim.lr", self.lr)
        if self.optim.weight_decay < 0 or not 0.0 <= self.optim.warmup < 1.0:
            raise UserInputError("optim.weight_decay must be >= 0 and optim.warmup in [0, 1)")
        for key in ("max_steps", "val_every", "checkpoint_every", "keep_checkpoints"):
            _positive(f"trainer.{key}", getattr(tr, key))
        _positive("trainer.log_every", tr.log_every)
        _positive("trainer.devices", tr.devices)
        if tr.threads is not None:
            _positive("trainer.threads", tr.threads)
        if not self.head.plain:  # a method that is not installed fails before any data is read
            get_uncertainty_builder(self.head.uncertainty)
        self.split.validate()
        if self.adapt.needs_target and self.split.protocol == "none":
            raise UserInputError(
                f"adaptation needs unlabelled target data: set split.protocol (adapt.method "
                f"{self.adapt.method} with split.protocol none)"
            )
        if not self.adapt.plain:  # not installed: one line naming the installed methods
            get_adaptation(self.adapt.method)
        return self


def _check_synthetic_counts(n: Any, splits: SplitNames) -> None:
    """``data.options.n`` of the synthetic reader: a positive count, or one per split name.

    A key that is no split would be ignored silently (the split keeps its default size); the
    usual cause is YAML's ``{train:16}``, which is the key ``"train:16"``, not ``train: 16``.
    """
    used = [name for name in (splits.train, splits.val, splits.test) if name is not None]
    names = list(dict.fromkeys(["train", "val", "test", *used]))  # a base's val stays valid
    counts = n if isinstance(n, Mapping) else {name: n for name in used}
    unknown = sorted(str(key) for key in counts if key not in names)
    if unknown:
        raise UserInputError(
            f"unknown split {unknown[0]!r} in data.options.n; expected counts for some of: "
            f"{', '.join(names)} (in YAML write {{train: 16}}, with a space after the colon)"
        )
    for name, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise UserInputError(
                f"data.options.n.{name} must be a positive number of samples, got {count!r}"
            )


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise UserInputError(f"{key} must be positive, got {value}")


def finetune_config_from_dict(data: Mapping[str, Any]) -> FinetuneConfig:
    """Build and validate a :class:`FinetuneConfig` from a plain mapping (parsed YAML).

    Raises:
        UserInputError: For an unknown key (named, with the valid keys), a wrong type or value.
    """
    data = dict(data)
    data.pop("base", None)
    config: FinetuneConfig = build(FinetuneConfig, data)
    return config.validate()


def list_finetune_configs() -> list[str]:
    """Names of the fine-tuning configurations shipped in the package."""
    return sorted(shipped_configs(_FOLDER))


def load_finetune_config(
    name_or_file: str, overrides: Mapping[str, Any] | None = None
) -> FinetuneConfig:
    """Read a configuration by shipped name or YAML path, merge ``overrides`` and validate it.

    Args:
        name_or_file: A name from :func:`list_finetune_configs` or a path to a YAML file.
        overrides: Nested keys merged over the file (e.g. ``{"trainer": {"max_steps": 10}}``).

    Raises:
        UserInputError: Unknown name, unreadable file, invalid YAML or an invalid configuration.
    """
    data = read_config(name_or_file, _FOLDER, list_finetune_configs)
    if overrides:
        data = merge(data, overrides)
    return finetune_config_from_dict(data)
