"""Benchmark suites: which tasks, on which data, with which defaults.

A :class:`Suite` lists :class:`TaskSpec` s (a task kind, its data, its primary metric) and the
defaults of a run: models, the protocols encoders are evaluated with per task kind, label
fractions and the training schedule. Suites (:func:`get_suite`):

* ``synthetic-lite``: the synthetic Copernicus world (:mod:`thinkingearth.data.synthetic`) at
  32 px: multi-label land-cover classification (Sentinel-2 L2A), land-cover segmentation
  (Sentinel-2 L2A), Kuro Siwo-style flood change detection (Sentinel-1 GRD, SL2 + SL1 + MS1)
  and above-ground biomass regression (Sentinel-2 L2A); sized to finish in under 10 minutes on
  2 CPU cores with its default models and 3 seeds (one PyTorch thread: its tensors are tiny);
* ``synthetic``: the same world at 64 px with NO2 regression added, every protocol and label
  fractions of 1 %, 10 % and 100 % (hours on a CPU);
* ``noisy-labels``: the ``synthetic-lite`` tasks with label noise on the training split
  (rates 0, 0.2, 0.4; the task kind's default noise model of
  :mod:`thinkingearth.uncertainty.noise`) and clean test labels, deterministic vs
  heteroscedastic vs MC-dropout heads on a 2-block ViT-Tiny trained from scratch, three seeds;
  every run is also scored for its uncertainty (calibration, NLL, discard test);
* ``kurosiwo``: Kuro Siwo flood mapping from the real data under ``--data-root``
  (:class:`~thinkingearth.data.formats.kurosiwo.KuroSiwo`, the published event split);
* ``copernicus-bench``: the Copernicus-Bench tasks (Wang et al. 2025), read from
  ``--data-root`` through :class:`~thinkingearth.data.formats.copernicusbench.CopernicusBench`;
  a task whose folder is missing is skipped with the reason. The Sentinel-1 tasks stored in dB
  (eurosat_s1, bigearthnet_s1, dfc2020_s1) are in: their Samples say ``units: "db"`` and the
  normalisation converts from what the Sample says;
* ``vl-synthetic``: vision-language evaluation on the synthetic world at 32 px
  (:mod:`thinkingearth.bench.zeroshot`): zero-shot single-label (the dominant land-cover class)
  and multi-label classification from Sentinel-2 and multi-label from Sentinel-1 against a
  linear probe of the same encoder, text → image and image → text retrieval of the world's
  captions, and cross-sensor retrieval (a Sentinel-1 scene finds its Sentinel-2 twin); default
  models: a ``tiny-vl-synthetic`` VL model pretrained per seed, and ``chance``;
* ``domain-shift``: domain shift on the synthetic world at 32 px, split as ``finetune`` splits
  (:func:`thinkingearth.data.domains.open_domain_splits`): the dominant land-cover class
  across biomes (``leave-regions-out``, source temperate, targets boreal and arid), flood
  mapping across flood types (source rural, target urban) and the dominant land-cover class
  from Sentinel-2 L2A to Landsat 8/9 (``cross-sensor``); source-only training, domain
  generalisation, DANN, DeepCORAL, self-training, TENT and an oracle trained on target labels
  (``Suite.adapt``), a 2-block any-sensor encoder fine-tuned, three seeds; every run is tested
  per domain.

Primary metrics: mAP (multi-label), overall accuracy (single-label), mIoU (segmentation and
change detection, as Copernicus-Bench reports for Kuro Siwo), RMSE (regression, lower is
better), Recall@1 (retrieval: ``r@1/t2i``, ``r@1/s1→s2``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from torch.utils.data import Dataset

from thinkingearth.data.synthetic import FLOOD_CLASSES, LANDCOVER_CLASSES
from thinkingearth.errors import UserInputError
from thinkingearth.models.baselines import TaskKind

if TYPE_CHECKING:
    from thinkingearth.data.domains import DomainSplits, SplitSpec

__all__ = [
    "SUITES",
    "Split",
    "Suite",
    "TaskSpec",
    "get_suite",
    "list_suites",
]

Split = Literal["train", "val", "test"]
#: ``UncertaintyHead``'s defaults (other than the method), the default ``Suite.head``.
_HEAD_DEFAULTS: Mapping[str, int | float] = {
    "samples": 100,
    "temperature": 1.0,
    "mc_samples": 20,
    "dropout": 0.2,
    "members": 5,
}
#: ``AdaptSection``'s defaults (other than the method and augmentations): ``Suite.adapt_settings``.
_ADAPT_DEFAULTS: Mapping[str, int | float] = {
    "weight": 1.0,
    "threshold": 0.9,
    "steps": 10,
    "lr": 1e-4,
}
#: The augmentations of the ``generalise`` pseudo-method (``Suite.generalise``).
_GENERALISE_DEFAULTS: Mapping[str, float] = {
    "band_dropout": 0.3,
    "spectral_jitter": 0.1,
    "metadata_dropout": 0.3,
}
Loader = Callable[[Split], Dataset[dict[str, Any]]]
#: Task kinds of a suite: the trainable ones, and ``retrieval`` (evaluated without training).
SuiteTaskKind = TaskKind | Literal["retrieval"]


@dataclass(frozen=True)
class TaskSpec:
    """One task of a suite.

    Attributes:
        name: Task name (unique within the suite).
        kind: ``classification``, ``multilabel``, ``segmentation``, ``change``, ``regression``
            or ``retrieval`` (scored by the ``zero-shot`` protocol only).
        load: ``split -> Dataset`` of raw Samples (normalisation is applied by the runner).
        primary: Key of the primary metric (of :mod:`thinkingearth.tasks.metrics`).
        higher_is_better: Direction of the primary metric.
        num_classes: Classes or labels (1 for regression).
        class_names: Names for per-class metrics.
        ignore_index: Mask value ignored by loss and metrics.
        shown: Metrics shown in the report beside the primary one.
        description: One line for the report (sensor, data, labels).
        optional: A missing data folder skips the task (with the reason) instead of stopping.
        gallery: Retrieval only: ``split -> Dataset`` of the gallery Samples, item ``i`` the twin
            of ``load(split)[i]`` (the same scene from another sensor); ``None``: text retrieval
            between each Sample and its ``caption``.
        noise_model: The label-noise model of runs with a noise rate above 0
            (:data:`thinkingearth.uncertainty.noise.NOISE_MODELS`; ``None``: the task kind's
            default, :data:`thinkingearth.uncertainty.noise.DEFAULT_NOISE`).
        split: The domain-shift split protocol of the task
            (:class:`thinkingearth.data.domains.SplitSpec`; ``None``: one split, no domains).
            Such a task runs every adaptation method of the benchmark and is tested per domain.
        domains: With ``split``: ``log -> DomainSplits`` of raw Samples with the task's labels
            (:func:`thinkingearth.data.domains.open_domain_splits`, so ``finetune`` and ``bench``
            split alike); ``load`` is not used then.
    """

    name: str
    kind: SuiteTaskKind
    load: Loader
    primary: str
    higher_is_better: bool
    num_classes: int
    class_names: tuple[str, ...] = ()
    ignore_index: int | None = None
    shown: tuple[str, ...] = ()
    description: str = ""
    optional: bool = False
    gallery: Loader | None = None
    noise_model: str | None = None
    split: SplitSpec | None = None
    domains: Callable[[Callable[[str], None]], DomainSplits] | None = None


@dataclass(frozen=True)
class Suite:
    """A benchmark suite and the defaults of its runs.

    Attributes:
        name: Suite name.
        description: One line for the report.
        tasks: The tasks.
        models: Default ``--models``.
        protocols: Encoder protocols per task kind (baselines always fine-tune).
        fractions: Label fractions of the training split.
        max_steps: Optimisation steps per run (label fractions train as many steps).
        batch_size: Training batch size.
        eval_batch_size: Test batch size.
        lr: Peak learning rate per protocol.
        patch_size: Patch size encoders and the ViT baseline run at (``None``: their own; the
            ViT baseline then uses 16).
        img_size: Image size (position grid of the ViT baseline).
        decoder_channels: UPerNet width.
        unet_widths: U-Net stage widths.
        vit_depth: Blocks of the ViT baseline.
        wrn_depth: Depth of the Wide-ResNet baseline.
        wrn_width: Widening factor of the Wide-ResNet baseline.
        cache_features: Compute a frozen encoder's features once per sample (in memory).
        cache_samples: Keep normalised samples in memory.
        num_workers: Data-loader workers.
        stats_samples: Training samples used to estimate normalisation statistics where the
            registry publishes none.
        threads: PyTorch intra-op CPU threads (``None``: PyTorch's default, one per core).
        vl_pretrain_steps: Training steps of the vision-language models the benchmark
            pretrains from a config name (``None``: the config's ``trainer.max_steps``).
        uncertainty: Default uncertainty head methods (``--uncertainty``; ``none``: the plain
            deterministic module).
        noise: Default label-noise rates of the training split (``--noise``; ``0``: clean).
        head: Settings of the uncertainty heads (the fields of
            :class:`thinkingearth.tasks.variants.UncertaintyHead` other than the method:
            ``samples``, ``temperature``, ``mc_samples``, ``dropout``, ``members``).
        ece_bins: Equal-width confidence bins of the expected calibration error.
        adapt: Default domain-adaptation methods of the tasks with a split (``--adapt``):
            ``none`` (source only), the methods of
            :data:`thinkingearth.tasks.variants.ADAPT_METHODS`, ``oracle`` (trained on the
            target domains' labelled training samples) and ``generalise`` (method ``none`` with
            the augmentations of ``generalise``). Tasks without a split run ``none`` only.
        adapt_settings: The adaptation settings of
            :class:`thinkingearth.tasks.variants.AdaptSection` other than the method and the
            augmentations (``weight``, ``threshold``, ``steps``, ``lr``).
        generalise: The augmentations of the ``generalise`` runs (``band_dropout``,
            ``spectral_jitter``, ``metadata_dropout``).
        encoder_overrides: Configuration fields changed in registry encoders built with random
            weights (e.g. ``depth: 2``; :func:`thinkingearth.models.create_encoder`).
        hidden: Not listed (test-only suites).
    """

    name: str
    description: str
    tasks: tuple[TaskSpec, ...]
    models: tuple[str, ...]
    protocols: Mapping[str, tuple[str, ...]]
    fractions: tuple[float, ...] = (1.0,)
    max_steps: int = 200
    batch_size: int = 32
    eval_batch_size: int = 64
    lr: Mapping[str, float] = field(
        default_factory=lambda: {"linear-probe": 5e-3, "frozen-upernet": 1e-3, "finetune": 1e-3}
    )
    patch_size: int | None = 8
    img_size: int = 32
    decoder_channels: int = 64
    unet_widths: tuple[int, ...] = (32, 64, 128, 256)
    vit_depth: int = 12
    wrn_depth: int = 16
    wrn_width: int = 4
    cache_features: bool = True
    cache_samples: bool = True
    num_workers: int = 0
    stats_samples: int = 32
    threads: int | None = None
    vl_pretrain_steps: int | None = None
    uncertainty: tuple[str, ...] = ("none",)
    noise: tuple[float, ...] = (0.0,)
    head: Mapping[str, int | float] = field(default_factory=lambda: dict(_HEAD_DEFAULTS))
    ece_bins: int = 15
    adapt: tuple[str, ...] = ("none",)
    adapt_settings: Mapping[str, int | float] = field(default_factory=lambda: dict(_ADAPT_DEFAULTS))
    generalise: Mapping[str, float] = field(default_factory=lambda: dict(_GENERALISE_DEFAULTS))
    encoder_overrides: Mapping[str, int | float | str] = field(default_factory=dict)
    hidden: bool = False


# ----------------------------------------------------------------------------------------------
# Synthetic world
# ----------------------------------------------------------------------------------------------

_S2 = "sentinel-2-l2a"
#: Data-loader workers for the real-data suites: up to 4, leaving one core to the training.
_WORKERS = min(4, max(0, (os.cpu_count() or 1) - 1))
_S1 = "sentinel-1-grd"
_SHOWN: Mapping[str, tuple[str, ...]] = {
    "classification": ("f1_macro",),
    "multilabel": ("f1_macro", "oa"),
    "segmentation": ("oa", "f1_macro"),
    "change": ("water_f1", "f1/flood", "iou/flood"),
    "regression": ("mae",),
}


def _synthetic_loader(task: str, sensor: str, size: int, n: Mapping[str, int], seed: int) -> Loader:
    def load(split: Split) -> Dataset[dict[str, Any]]:
        from thinkingearth.data.synthetic import SyntheticCopernicus

        return SyntheticCopernicus(
            task,  # type: ignore[arg-type]
            sensor,
            split=split,
            n=n[split],
            size=size,
            seed=seed,
        )

    return load


def _synthetic_tasks(
    size: int, n: Mapping[str, int], seed: int, no2: bool = False
) -> tuple[TaskSpec, ...]:
    def spec(name: str, task: str, sensor: str, kind: TaskKind, **kw: Any) -> TaskSpec:
        return TaskSpec(
            name=name,
            kind=kind,
            load=_synthetic_loader(task, sensor, size, n, seed),
            shown=_SHOWN[kind],
            **kw,
        )

    tasks = [
        spec(
            "multilabel",
            "multilabel",
            _S2,
            "multilabel",
            primary="map",
            higher_is_better=True,
            num_classes=len(LANDCOVER_CLASSES),
            class_names=LANDCOVER_CLASSES,
            description=f"land-cover presence (9 labels) from Sentinel-2 L2A, {size} px",
        ),
        spec(
            "landcover",
            "landcover",
            _S2,
            "segmentation",
            primary="miou",
            higher_is_better=True,
            num_classes=len(LANDCOVER_CLASSES),
            class_names=LANDCOVER_CLASSES,
            description=f"land-cover segmentation (9 classes) from Sentinel-2 L2A, {size} px",
        ),
        spec(
            "flood",
            "flood",
            _S1,
            "change",
            primary="miou",
            higher_is_better=True,
            num_classes=len(FLOOD_CLASSES),
            class_names=FLOOD_CLASSES,
            ignore_index=3,
            description=(
                "Kuro Siwo-style flood mapping from Sentinel-1 GRD VV/VH: SL2, SL1 pre-event, "
                f"MS1 post-event; no water / permanent water / flood, 3 ignored; {size} px"
            ),
        ),
        spec(
            "biomass",
            "biomass",
            _S2,
            "regression",
            primary="rmse",
            higher_is_better=False,
            num_classes=1,
            description=f"above-ground biomass (Mg/ha) per pixel from Sentinel-2 L2A, {size} px",
        ),
    ]
    if no2:
        tasks.append(
            spec(
                "no2",
                "no2",
                _S2,
                "regression",
                primary="rmse",
                higher_is_better=False,
                num_classes=1,
                description=(
                    f"tropospheric NO2 (µmol/m²) per pixel from Sentinel-2 L2A land use, {size} px"
                ),
            )
        )
    return tuple(tasks)


_DENSE_FROZEN = {
    "classification": ("linear-probe",),
    "multilabel": ("linear-probe",),
    "segmentation": ("frozen-upernet",),
    "change": ("frozen-upernet",),
    "regression": ("frozen-upernet",),
}
_ALL_PROTOCOLS = {
    "classification": ("linear-probe", "finetune"),
    "multilabel": ("linear-probe", "finetune"),
    "segmentation": ("linear-probe", "frozen-upernet", "finetune"),
    "change": ("linear-probe", "frozen-upernet", "finetune"),
    "regression": ("linear-probe", "frozen-upernet", "finetune"),
}


def _synthetic_lite(data_root: Path | None) -> Suite:
    n = {"train": 192, "val": 32, "test": 96}
    return Suite(
        name="synthetic-lite",
        description=(
            "the synthetic Copernicus world at 32 px: 192 training and 96 test samples per task"
        ),
        tasks=_synthetic_tasks(32, n, seed=0),
        models=("thinkingearth_vit_tiny", "wrn-eca", "unet", "siamese-diff"),
        protocols=_DENSE_FROZEN,
        fractions=(1.0,),
        max_steps=100,
        batch_size=16,
        eval_batch_size=96,
        patch_size=8,
        img_size=32,
        decoder_channels=32,
        unet_widths=(16, 32, 64, 128),
        wrn_depth=10,
        wrn_width=2,
        # Tiny tensors: one thread per op is nearly as fast as two on an idle 2-core machine,
        # and several times faster when other jobs share the cores (threads wait for each other).
        threads=1,
    )


def _noisy_labels(data_root: Path | None) -> Suite:
    lite = _synthetic_lite(data_root)
    return replace(
        lite,
        name="noisy-labels",
        description=(
            "label noise on the synthetic Copernicus world at 32 px (the synthetic-lite tasks: "
            "192 training and 96 test samples per task; the training labels made noisy at each "
            "rate, the test labels clean): deterministic, heteroscedastic and MC-dropout heads "
            "on a 2-block ViT-Tiny trained from scratch"
        ),
        models=("vit-scratch",),
        uncertainty=("none", "heteroscedastic", "mc_dropout"),
        noise=(0.0, 0.2, 0.4),
        # Sized for 108 runs in about 15-20 minutes on 2 CPU cores (measured in
        # benchmarks/noisy_labels.md): a 2-block ViT and a narrow UPerNet learn the tasks in
        # 100 steps of batch 8 (a 12-block ViT or ResNet-18 take 2-4x longer per step, the
        # frozen random-init encoder learns less); 20 noisy-logit samples per step and 10
        # dropout passes instead of UncertaintyHead's 100 and 20 (the sampled loss at full
        # resolution is the heteroscedastic runs' main cost).
        vit_depth=2,
        batch_size=8,
        max_steps=100,
        decoder_channels=16,
        head={**_HEAD_DEFAULTS, "samples": 20, "mc_samples": 10},
    )


def _synthetic(data_root: Path | None) -> Suite:
    n = {"train": 1024, "val": 128, "test": 256}
    return Suite(
        name="synthetic",
        description=(
            "the synthetic Copernicus world at 64 px, every protocol and label fraction: 1024 "
            "training and 256 test samples per task"
        ),
        tasks=_synthetic_tasks(64, n, seed=0, no2=True),
        models=(
            "thinkingearth_vit_tiny",
            "wrn-eca",
            "resnet18",
            "resnet50",
            "unet",
            "siamese-diff",
            "siamese-concat",
            "vit-scratch",
        ),
        protocols=_ALL_PROTOCOLS,
        fractions=(0.01, 0.1, 1.0),
        max_steps=1000,
        batch_size=32,
        eval_batch_size=64,
        patch_size=8,
        img_size=64,
        decoder_channels=128,
    )


def _micro(data_root: Path | None) -> Suite:
    """Test-only: every task kind, tiny everything (seconds)."""
    n = {"train": 8, "val": 4, "test": 4}
    return Suite(
        name="_micro",
        description="test-only: 8 training and 4 test samples per task at 32 px",
        tasks=_synthetic_tasks(32, n, seed=0),
        models=("thinkingearth_vit_tiny", "unet", "wrn-eca"),
        protocols=_DENSE_FROZEN,
        fractions=(1.0,),
        max_steps=2,
        batch_size=4,
        eval_batch_size=4,
        patch_size=8,
        img_size=32,
        decoder_channels=16,
        unet_widths=(8, 16),
        vit_depth=2,
        wrn_depth=10,
        wrn_width=1,
        hidden=True,
    )


# ----------------------------------------------------------------------------------------------
# Vision-language on the synthetic world
# ----------------------------------------------------------------------------------------------


class _DominantLandcover(Dataset[dict[str, Any]]):
    """Synthetic land-cover Samples as single-label scenes: ``label`` = the class covering the
    most pixels of the mask (ties: the lower class id); the mask is dropped."""

    def __init__(self, base: Dataset[dict[str, Any]]) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        sample = dict(self.base[index])
        mask = sample.pop("mask")
        counts = torch.bincount(mask.reshape(-1), minlength=len(LANDCOVER_CLASSES))
        sample["label"] = torch.tensor(int(counts[: len(LANDCOVER_CLASSES)].argmax()))
        return sample


def _dominant_loader(sensor: str, size: int, n: Mapping[str, int], seed: int) -> Loader:
    landcover = _synthetic_loader("landcover", sensor, size, n, seed)

    def load(split: Split) -> Dataset[dict[str, Any]]:
        return _DominantLandcover(landcover(split))

    return load


_RETRIEVAL_SHOWN = ("r@5/{0}", "r@10/{0}", "r@1/{1}", "r@5/{1}", "r@10/{1}")


def _vl_tasks(size: int, n: Mapping[str, int], seed: int) -> tuple[TaskSpec, ...]:
    """The tasks of the vision-language suites (one world: scene ``i`` of a split is the same
    scene for every sensor)."""
    lc = len(LANDCOVER_CLASSES)
    return (
        TaskSpec(
            name="dominant-landcover",
            kind="classification",
            load=_dominant_loader(_S2, size, n, seed),
            primary="oa",
            higher_is_better=True,
            num_classes=lc,
            class_names=LANDCOVER_CLASSES,
            shown=("f1_macro",),
            description=f"the land-cover class covering most of a Sentinel-2 L2A scene, {size} px",
        ),
        TaskSpec(
            name="multilabel",
            kind="multilabel",
            load=_synthetic_loader("multilabel", _S2, size, n, seed),
            primary="map",
            higher_is_better=True,
            num_classes=lc,
            class_names=LANDCOVER_CLASSES,
            shown=("f1_macro", "oa"),
            description=f"land-cover presence (9 labels) from Sentinel-2 L2A, {size} px",
        ),
        TaskSpec(
            name="multilabel-s1",
            kind="multilabel",
            load=_synthetic_loader("multilabel", _S1, size, n, seed),
            primary="map",
            higher_is_better=True,
            num_classes=lc,
            class_names=LANDCOVER_CLASSES,
            shown=("f1_macro", "oa"),
            description=f"land-cover presence (9 labels) from Sentinel-1 GRD VV/VH, {size} px",
        ),
        TaskSpec(
            name="text-retrieval",
            kind="retrieval",
            load=_synthetic_loader("none", _S2, size, n, seed),
            primary="r@1/t2i",
            higher_is_better=True,
            num_classes=0,
            shown=tuple(k.format("t2i", "i2t") for k in _RETRIEVAL_SHOWN),
            description=(
                f"each test scene's caption finds its Sentinel-2 L2A image among {n['test']} "
                "(t2i), and each image its caption (i2t)"
            ),
        ),
        TaskSpec(
            name="cross-sensor",
            kind="retrieval",
            load=_synthetic_loader("none", _S1, size, n, seed),
            gallery=_synthetic_loader("none", _S2, size, n, seed),
            primary="r@1/s1→s2",
            higher_is_better=True,
            num_classes=0,
            shown=tuple(k.format("s1→s2", "s2→s1") for k in _RETRIEVAL_SHOWN),
            description=(
                f"a Sentinel-1 GRD scene finds its Sentinel-2 L2A twin (the same scene) among "
                f"{n['test']}, and the reverse"
            ),
        ),
    )


_VL_PROTOCOLS: Mapping[str, tuple[str, ...]] = {
    "classification": ("zero-shot", "linear-probe"),
    "multilabel": ("zero-shot", "linear-probe"),
    "retrieval": ("zero-shot",),
}


def _vl_synthetic(data_root: Path | None) -> Suite:
    n = {"train": 256, "val": 32, "test": 128}
    return Suite(
        name="vl-synthetic",
        description=(
            "vision-language on the synthetic Copernicus world at 32 px: zero-shot "
            "classification against a linear probe of the same encoder (256 training "
            "samples, 300 steps), and retrieval among 128 test scenes"
        ),
        tasks=_vl_tasks(32, n, seed=0),
        models=("tiny-vl-synthetic", "chance"),
        protocols=_VL_PROTOCOLS,
        fractions=(1.0,),
        # Linear probes on cached frozen features are cheap: train them to convergence so the
        # zero-shot rows face a fair supervised baseline (about 19 epochs of 256 samples).
        max_steps=300,
        batch_size=16,
        eval_batch_size=64,
        patch_size=None,
        img_size=32,
        threads=1,
    )


def _vl_micro(data_root: Path | None) -> Suite:
    """Test-only: the vision-language tasks, tiny (seconds)."""
    n = {"train": 8, "val": 4, "test": 12}
    return Suite(
        name="_vl_micro",
        description="test-only: the vision-language tasks with 8 training and 12 test samples",
        tasks=_vl_tasks(32, n, seed=0),
        models=("chance",),
        protocols=_VL_PROTOCOLS,
        fractions=(1.0,),
        max_steps=2,
        batch_size=4,
        eval_batch_size=8,
        patch_size=None,
        img_size=32,
        vl_pretrain_steps=2,
        hidden=True,
    )


# ----------------------------------------------------------------------------------------------
# Domain shift on the synthetic world
# ----------------------------------------------------------------------------------------------

_LANDSAT = "landsat-8-9"
#: Domain data: ``log -> DomainSplits`` (:attr:`TaskSpec.domains`).
DomainLoader = Callable[[Callable[[str], None]], "DomainSplits"]


def _domain_loader(
    task: str,
    sensor: str,
    size: int,
    n: Mapping[str, int],
    seed: int,
    spec: SplitSpec,
    single_label: bool = False,
) -> DomainLoader:
    """The domain splits of a synthetic task through
    :func:`thinkingearth.data.domains.open_domain_splits` (as ``finetune`` splits them);
    ``single_label``: land-cover masks become the dominant class (:class:`_DominantLandcover`)
    in every labelled part (the unlabelled target has no mask)."""

    def load(log: Callable[[str], None]) -> DomainSplits:
        from thinkingearth.data.domains import open_domain_splits
        from thinkingearth.tasks.finetune_config import SplitNames

        options = {"task": task, "sensor": sensor, "n": dict(n), "size": size, "seed": seed}
        splits = open_domain_splits("synthetic", None, options, SplitNames(), spec, log=log)
        if not single_label:
            return splits
        return replace(
            splits,
            train=_DominantLandcover(splits.train),
            val=_DominantLandcover(splits.val),
            test={d: _DominantLandcover(v) for d, v in splits.test.items()},
            target_train=(
                _DominantLandcover(splits.target_train) if splits.target_train is not None else None
            ),
        )

    return load


def _source_loader(domains: DomainLoader) -> Loader:
    """``load(split)`` of a task with a split: the source's train and val, the target domains'
    test samples pooled (what the runner tests a split task on)."""

    def load(split: Split) -> Dataset[dict[str, Any]]:
        from torch.utils.data import ConcatDataset

        splits = domains(lambda message: None)
        if split == "test":
            return ConcatDataset([splits.test[d] for d in splits.target_domains])
        return splits.train if split == "train" else splits.val

    return load


def _domain_tasks(size: int, n: Mapping[str, int], seed: int) -> tuple[TaskSpec, ...]:
    """The domain-shift tasks: land cover across biomes, flood mapping across flood types,
    land cover from Sentinel-2 L2A to Landsat 8/9."""
    from thinkingearth.data.domains import SplitSpec

    lc = len(LANDCOVER_CLASSES)
    biomes = SplitSpec("leave-regions-out", source=("temperate",), target=("boreal", "arid"))
    floods = SplitSpec("leave-regions-out", source=("rural",), target=("urban",))
    sensors = SplitSpec("cross-sensor", source=(_S2,), target=(_LANDSAT,))
    biome_data = _domain_loader("landcover", _S2, size, n, seed, biomes, single_label=True)
    flood_data = _domain_loader("flood", _S1, size, n, seed, floods)
    sensor_data = _domain_loader("landcover", _S2, size, n, seed, sensors, single_label=True)
    return (
        TaskSpec(
            name="landcover-biomes",
            kind="classification",
            load=_source_loader(biome_data),
            primary="oa",
            higher_is_better=True,
            num_classes=lc,
            class_names=LANDCOVER_CLASSES,
            shown=("f1_macro",),
            description=(
                "the land-cover class covering most of a Sentinel-2 L2A scene, "
                f"{size} px; trained on the temperate biome, tested on boreal and arid"
            ),
            split=biomes,
            domains=biome_data,
        ),
        TaskSpec(
            name="flood-types",
            kind="change",
            load=_source_loader(flood_data),
            primary="miou",
            higher_is_better=True,
            num_classes=len(FLOOD_CLASSES),
            class_names=FLOOD_CLASSES,
            ignore_index=3,
            shown=_SHOWN["change"],
            description=(
                "Kuro Siwo-style flood mapping from Sentinel-1 GRD VV/VH (SL2, SL1, MS1), "
                f"{size} px; trained on rural floods, tested on urban floods"
            ),
            split=floods,
            domains=flood_data,
        ),
        TaskSpec(
            name="landcover-s2-to-landsat",
            kind="classification",
            load=_source_loader(sensor_data),
            primary="oa",
            higher_is_better=True,
            num_classes=lc,
            class_names=LANDCOVER_CLASSES,
            shown=("f1_macro",),
            description=(
                f"the dominant land-cover class, {size} px; trained on Sentinel-2 L2A, tested "
                "on Landsat 8/9 OLI B1-B7 of the same ground"
            ),
            split=sensors,
            domains=sensor_data,
        ),
    )


_DOMAIN_PROTOCOLS: Mapping[str, tuple[str, ...]] = {
    "classification": ("finetune",),
    "change": ("finetune",),
}
_DOMAIN_METHODS = (
    "none",
    "generalise",
    "dann",
    "deep_coral",
    "self_training",
    "tent",
    "oracle",
)


def _domain_shift(data_root: Path | None) -> Suite:
    n = {"train": 128, "val": 16, "test": 64}
    return Suite(
        name="domain-shift",
        description=(
            "domain shift on the synthetic Copernicus world at 32 px (per domain 128 training "
            "scenes, given without labels to adaptation on a target, and 64 test scenes): "
            "source-only training beside domain generalisation, domain adaptation and an "
            "oracle trained on target labels, fine-tuning a 2-block any-sensor encoder"
        ),
        tasks=_domain_tasks(32, n, seed=0),
        models=("thinkingearth_vit_tiny",),
        protocols=_DOMAIN_PROTOCOLS,
        fractions=(1.0,),
        # Sized for 63 runs (3 tasks x 7 methods x 3 seeds) in about 20 minutes on 2 CPU cores
        # (one thread): measured 0.1 s (land cover) to 0.35 s (flood, DANN) of CPU per step of
        # batch 16 with this encoder; flood runs dominate.
        max_steps=100,
        batch_size=16,
        eval_batch_size=64,
        patch_size=8,
        img_size=32,
        decoder_channels=16,
        threads=1,
        adapt=_DOMAIN_METHODS,
        encoder_overrides={"depth": 2, "embed_dim": 96, "num_heads": 3, "img_size": 32},
    )


def _domain_micro(data_root: Path | None) -> Suite:
    """Test-only: the domain-shift tasks, tiny (seconds)."""
    n = {"train": 6, "val": 2, "test": 4}
    return Suite(
        name="_domain-micro",
        description="test-only: the domain-shift tasks with 6 training and 4 test samples",
        tasks=_domain_tasks(32, n, seed=0),
        models=("thinkingearth_vit_tiny",),
        protocols=_DOMAIN_PROTOCOLS,
        fractions=(1.0,),
        max_steps=2,
        batch_size=4,
        eval_batch_size=8,
        patch_size=8,
        img_size=32,
        decoder_channels=8,
        threads=1,
        adapt=("none", "oracle"),
        encoder_overrides={"depth": 2, "embed_dim": 48, "num_heads": 3, "img_size": 32},
        ece_bins=2,  # 4 test samples per domain
        hidden=True,
    )


# ----------------------------------------------------------------------------------------------
# Real data
# ----------------------------------------------------------------------------------------------


def _require_root(name: str, data_root: Path | None) -> Path:
    if data_root is None:
        raise UserInputError(f"suite {name} reads real data: pass --data-root DIR")
    root = Path(data_root)
    if not root.is_dir():
        raise UserInputError(f"--data-root {root} is not a folder")
    return root


def _kurosiwo(data_root: Path | None) -> Suite:
    root = _require_root("kurosiwo", data_root)

    def load(split: Split) -> Dataset[dict[str, Any]]:
        from thinkingearth.data.formats.kurosiwo import KuroSiwo

        return KuroSiwo(root, split=split)

    task = TaskSpec(
        name="kurosiwo",
        kind="change",
        load=load,
        primary="miou",
        higher_is_better=True,
        num_classes=3,
        class_names=FLOOD_CLASSES,
        ignore_index=3,
        shown=_SHOWN["change"],
        description=(
            f"Kuro Siwo GRD (Bountos et al. 2024) under {root}: SL2, SL1, MS1 VV/VH, 224 px, "
            "published event split"
        ),
    )
    return Suite(
        name="kurosiwo",
        description="Kuro Siwo flood mapping, published event split",
        tasks=(task,),
        models=("thinkingearth_vit_tiny", "unet", "siamese-diff", "siamese-concat", "resnet50"),
        protocols={"change": ("frozen-upernet", "finetune")},
        fractions=(0.01, 0.1, 1.0),
        max_steps=4000,
        batch_size=16,
        eval_batch_size=32,
        patch_size=None,
        img_size=224,
        decoder_channels=256,
        cache_features=False,
        cache_samples=False,
        num_workers=_WORKERS,
    )


#: Copernicus-Bench tasks of the suite: (task, kind, primary metric, higher is better).
_COPERNICUS_TASKS: tuple[tuple[str, TaskKind, str, bool], ...] = (
    ("cloud_s2", "segmentation", "miou", True),
    ("cloud_s3", "segmentation", "miou", True),
    ("eurosat_s1", "classification", "oa", True),
    ("eurosat_s2", "classification", "oa", True),
    ("bigearthnet_s1", "multilabel", "map", True),
    ("bigearthnet_s2", "multilabel", "map", True),
    ("lc100cls_s3", "multilabel", "map", True),
    ("lc100seg_s3", "segmentation", "miou", True),
    ("dfc2020_s1", "segmentation", "miou", True),
    ("dfc2020_s2", "segmentation", "miou", True),
    ("flood_s1", "change", "miou", True),
    ("lcz_s2", "classification", "oa", True),
    ("biomass_s3", "regression", "rmse", False),
    ("aq_no2_s5p", "regression", "rmse", False),
    ("aq_o3_s5p", "regression", "rmse", False),
)


def _copernicus_bench(data_root: Path | None) -> Suite:
    root = _require_root("copernicus-bench", data_root)
    from thinkingearth.data.formats.copernicusbench import TASKS

    def loader(name: str) -> Loader:
        def load(split: Split) -> Dataset[dict[str, Any]]:
            from thinkingearth.data.formats.copernicusbench import CopernicusBench

            return CopernicusBench(name, root, split=split)  # type: ignore[arg-type]

        return load

    tasks = []
    for name, kind, primary, higher in _COPERNICUS_TASKS:
        info = TASKS[name]
        tasks.append(
            TaskSpec(
                name=name,
                kind=kind,
                load=loader(name),
                primary=primary,
                higher_is_better=higher,
                num_classes=len(info.classes) if kind != "regression" else 1,
                class_names=tuple(info.classes) if kind != "regression" else (),
                ignore_index=info.ignore_index,
                shown=_SHOWN[kind],
                description=f"{info.sensor}: {info.values}",
                optional=True,
            )
        )
    return Suite(
        name="copernicus-bench",
        description="Copernicus-Bench (Wang et al. 2025) tasks found under --data-root",
        tasks=tuple(tasks),
        models=("thinkingearth_vit_tiny", "resnet50", "unet", "wrn-eca", "siamese-diff"),
        protocols={
            "classification": ("linear-probe", "finetune"),
            "multilabel": ("linear-probe", "finetune"),
            "segmentation": ("frozen-upernet", "finetune"),
            "change": ("frozen-upernet", "finetune"),
            "regression": ("frozen-upernet", "finetune"),
        },
        fractions=(1.0,),
        max_steps=3000,
        batch_size=16,
        eval_batch_size=32,
        patch_size=None,
        img_size=96,
        decoder_channels=256,
        cache_features=False,
        cache_samples=False,
        num_workers=_WORKERS,
    )


SUITES: Mapping[str, Callable[[Path | None], Suite]] = {
    "synthetic-lite": _synthetic_lite,
    "synthetic": _synthetic,
    "noisy-labels": _noisy_labels,
    "kurosiwo": _kurosiwo,
    "copernicus-bench": _copernicus_bench,
    "vl-synthetic": _vl_synthetic,
    "domain-shift": _domain_shift,
    "_micro": _micro,
    "_vl_micro": _vl_micro,
    "_domain-micro": _domain_micro,
}


def list_suites() -> list[str]:
    """Names of the public suites."""
    return [name for name in SUITES if not name.startswith("_")]


def get_suite(name: str, data_root: str | Path | None = None, **overrides: Any) -> Suite:
    """Build a suite by name, with optional field overrides (e.g. ``max_steps=10``).

    Raises:
        UserInputError: For an unknown suite, a missing ``data_root`` where the suite needs one,
            or an unknown override.
    """
    if name not in SUITES:
        raise UserInputError(f"unknown suite {name!r}; expected one of: {', '.join(list_suites())}")
    suite = SUITES[name](Path(data_root) if data_root is not None else None)
    fields = set(Suite.__dataclass_fields__)
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise UserInputError(f"unknown suite settings {unknown}; expected some of {sorted(fields)}")
    return replace(suite, **overrides) if overrides else suite
