"""The benchmark harness: every task × model × protocol × label fraction × seed, resumable.

:func:`run_bench` trains and tests each run with Lightning on one normalisation, one schedule
and one set of metrics, and writes ``OUT/results.csv`` (one row per run, rewritten atomically
after each run) and, at the end, ``OUT/report.md`` with its plots
(:mod:`thinkingearth.bench.report`). Rerunning with the same ``OUT`` skips the runs whose row is
there (finished or skipped; failed runs are tried again), so an interrupted benchmark resumes.
SIGTERM ends the current run after its current training step without a row (it runs again next
time), leaving ``results.csv`` as it was after the last finished run; ``overwrite`` starts again
from an empty table.

What a run does:

1. the task's data is read once per task; every image is normalised by the one transform of the
   toolkit (:class:`thinkingearth.data.transforms.Normaliser`: published registry statistics,
   Sentinel-1 linear sigma0 to dB with SSL4EO-S12 dB statistics, or statistics estimated on
   training samples for sensors without published ones); its name goes in the
   ``normalisation`` column;
2. the training subset is a seeded random ``ceil(fraction × n)`` of the training split
   (:func:`thinkingearth.tasks.protocols.label_fraction_indices`);
3. the model is built with the run's seed (random init for baselines and registry encoders;
   checkpoint weights otherwise), the protocol freezes what it freezes, and a fixed schedule
   trains for ``max_steps`` steps of AdamW (linear warm-up, cosine decay); there is no model
   selection on the validation split and no augmentation: the last weights are tested;
4. the test split is scored with :mod:`thinkingearth.tasks.metrics`, and the cost meters
   (:mod:`thinkingearth.bench.meters`) are read;
5. the test split is scored once more for its uncertainty
   (:func:`thinkingearth.uncertainty.evaluation.evaluate_uncertainty`: ECE with its bin count,
   NLL, Brier, discard test, correlation of uncertainty with error; regression: Gaussian NLL,
   90 % coverage); the metrics join the row and the curves (reliability diagram, discard curve)
   are stored in ``OUT/curves/<run>.json`` so the report can be rebuilt from files. If that
   evaluation fails the run stays ``ok`` (its task metrics are sound), its ``reason`` says
   ``uncertainty evaluation failed: ...`` and the report lists it.

Uncertainty and label noise are part of the run key (columns ``uncertainty`` and ``noise``):
``uncertainty`` names the head method of :class:`thinkingearth.tasks.variants.UncertaintyHead`
(``none``: the plain deterministic module; the head's other settings are the suite's
``Suite.head``); ``noise`` is the rate of label noise applied to the **training split only**
(:class:`thinkingearth.uncertainty.noise.NoisyLabels`, the task's ``noise_model`` or the task
kind's default, seeded by the run's seed); the test split keeps its clean labels. A network that
cannot take a head method (a complete dense model such as the U-Net has no separate head) gives
a ``skipped`` row with the reason. Rows of a ``results.csv`` written before these columns
existed read as ``none`` and ``0``, so such a benchmark resumes.

Domain shift is part of the run key too (column ``adapt``). A task with a split protocol
(``TaskSpec.split``, :class:`thinkingearth.data.domains.SplitSpec`; its data from
:func:`thinkingearth.data.domains.open_domain_splits`, as ``finetune`` splits it) trains on the
source domains and is tested on the target domains' test samples pooled (the row's metrics),
on each domain (``<primary>@<domain>``), on its worst target domain (``worst_domain``, named
in ``worst_domain_name``) and on the source domains' own test samples (``source_primary``).
``adapt`` is ``none`` (source only), an adaptation method of
:func:`thinkingearth.tasks.variants.get_adaptation` (``dann``, ``deep_coral``, ``mmd`` and
``self_training`` train on source batches paired with UNLABELLED target batches; ``adabn`` and
``tent`` adapt the trained model on the unlabelled target batches), ``generalise`` (method
``none`` with ``Suite.generalise``'s band, spectral and metadata dropout) or ``oracle``
(trained on the target domains' labelled training samples, which are the scenes the
adaptation methods see unlabelled; never the target test samples). ``oracle_gap`` is the
oracle's primary metric minus the run's (the reverse for lower-is-better metrics), same task,
model, protocol, fraction, head, noise and seed; it is filled whenever the table is written.
Model selection uses no target labels: every run trains ``max_steps`` steps and its last
weights are tested. One normaliser per task: fitted on the source training samples, and for a
target sensor without registry statistics (Landsat) estimated on the unlabelled target images
(``normalisation``: ``registry/dataset``). A fixed-band baseline is skipped on a split whose
domains have other bands, naming them. Tasks without a split run ``none`` only.

Evaluation protocols train nothing (``zero-shot``, :mod:`thinkingearth.bench.zeroshot`): a
vision-language model scores the test split directly (class names through prompts, retrieval
by similarity), with ``train_seconds`` and ``steps`` 0; the task's data is prepared for training
only when some run of the task trains.

A frozen encoder's features are computed once per sample and run (``Suite.cache_features``).
"""

from __future__ import annotations

import csv
import math
import os
import platform
import re
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, RandomSampler, Subset

from thinkingearth import stopping
from thinkingearth.bench.meters import PeakMemory, count_parameters, inference_throughput
from thinkingearth.bench.models import ModelSpec, build_network, resolve_models
from thinkingearth.bench.suites import Split, Suite, TaskSpec, get_suite
from thinkingearth.bench.zeroshot import (
    EVALUATION_PROTOCOLS,
    ZERO_SHOT_KINDS,
    evaluate_run,
    evaluation_skip_reason,
)
from thinkingearth.data.sample import collate
from thinkingearth.data.transforms import Normaliser
from thinkingearth.errors import UserInputError
from thinkingearth.fileio import atomic_file, check_writable_parent
from thinkingearth.models.baselines import BASELINES, Backbone, UnsupportedTaskError
from thinkingearth.progress import QuietLightning, progress_callbacks
from thinkingearth.runs import StopOnSignal, stop_on_sigterm
from thinkingearth.tasks.finetune_report import oracle_gap, worst_domain_names
from thinkingearth.tasks.protocols import (
    FeatureCache,
    TaskModule,
    check_protocol,
    label_fraction_indices,
)
from thinkingearth.tasks.training import (
    NormalisedDataset,
    build_task_module,
    fit_normaliser,
    target_stats_of,
)
from thinkingearth.tasks.variants import (
    UNCERTAINTY_METHODS,
    UncertaintyHead,
    get_uncertainty_builder,
)

if TYPE_CHECKING:
    from thinkingearth.tasks.variants import AdaptSection

__all__ = [
    "CURVES_DIR",
    "FIXED_COLUMNS",
    "GENERALISE",
    "NO_ADAPTATION",
    "NO_UNCERTAINTY",
    "ORACLE",
    "RESULTS_NAME",
    "BenchResult",
    "RunKey",
    "adapt_choices",
    "adapt_section",
    "check_adapt",
    "check_noise",
    "check_uncertainty",
    "fill_oracle_gaps",
    "machine_summary",
    "measured_noise",
    "noise_model_of",
    "plan_runs",
    "read_results",
    "run_bench",
    "split_facts",
    "train_split",
    "uncertainty_head",
    "write_results",
]

RESULTS_NAME = "results.csv"
#: Columns of ``results.csv`` before the metrics (one column per metric follows).
FIXED_COLUMNS: tuple[str, ...] = (
    "suite",
    "task",
    "kind",
    "model",
    "protocol",
    "fraction",
    "seed",
    "uncertainty",
    "noise",
    "adapt",
    "status",
    "reason",
    "primary_metric",
    "primary",
    "split_protocol",
    "source",
    "target",
    "worst_domain",
    "source_primary",
    "oracle_gap",
    "train_seconds",
    "inference_ips",
    "params",
    "trainable_params",
    "peak_mem_mb",
    "memory_method",
    "normalisation",
    "train_samples",
    "steps",
    "batch_size",
    "test_samples",
    "device",
)
_DONE = ("ok", "skipped")
_CLASSIFICATION = ("classification", "multilabel")
Accelerator = Literal["cpu", "gpu", "auto"]


#: Uncertainty method of the plain deterministic module (the default ``uncertainty`` column).
NO_UNCERTAINTY = "none"
#: Folder of OUT holding each run's reliability and discard curves (JSON).
CURVES_DIR = "curves"
#: Adaptation of a source-only run (the default ``adapt`` column; every task without a split).
NO_ADAPTATION = "none"
#: The ``adapt`` value of a run trained on the target domains' labelled training samples.
ORACLE = "oracle"
#: The ``adapt`` value of domain generalisation: method ``none`` with ``Suite.generalise``'s
#: augmentations on the source batches (no target data).
GENERALISE = "generalise"


class RunKey(NamedTuple):
    """What identifies a run (and its row).

    ``uncertainty`` is the head method (``none``: deterministic), ``noise`` the rate of label
    noise on the training split (text, ``"0"``: clean labels) and ``adapt`` the domain
    adaptation of a task with a split (``none``: source only; ``oracle``; ``generalise``).
    """

    task: str
    model: str
    protocol: str
    fraction: str
    seed: int
    uncertainty: str = NO_UNCERTAINTY
    noise: str = "0"
    adapt: str = NO_ADAPTATION


def _fraction_text(fraction: float) -> str:
    return f"{float(fraction):g}"


def _row_key(row: Mapping[str, Any]) -> RunKey:
    return RunKey(
        str(row["task"]),
        str(row["model"]),
        str(row["protocol"]),
        _fraction_text(float(row["fraction"])),
        int(row["seed"]),
        str(row.get("uncertainty") or NO_UNCERTAINTY),  # rows written before the column
        _fraction_text(float(row.get("noise") or 0.0)),
        str(row.get("adapt") or NO_ADAPTATION),  # rows written before the column
    )


def check_uncertainty(methods: Sequence[str]) -> tuple[str, ...]:
    """The uncertainty methods of a benchmark, checked (duplicates dropped, order kept).

    Raises:
        UserInputError: For an empty list or an unknown method.
    """
    values = tuple(dict.fromkeys(str(m).strip() for m in methods))
    if not values:
        raise UserInputError("give at least one uncertainty method, e.g. --uncertainty none")
    for method in values:
        if method not in UNCERTAINTY_METHODS:
            raise UserInputError(
                f"unknown uncertainty method {method!r}; expected one of: "
                f"{', '.join(UNCERTAINTY_METHODS)}"
            )
    return values


def adapt_choices() -> tuple[str, ...]:
    """The values of ``--adapt``: the adaptation methods, ``oracle`` and ``generalise``."""
    from thinkingearth.tasks.variants import ADAPT_METHODS

    return (*ADAPT_METHODS, ORACLE, GENERALISE)


def check_adapt(methods: Sequence[str]) -> tuple[str, ...]:
    """The adaptation methods of a benchmark, checked (duplicates dropped, order kept).

    Raises:
        UserInputError: For an empty list or an unknown method.
    """
    values = tuple(dict.fromkeys(str(m).strip() for m in methods))
    if not values:
        raise UserInputError("give at least one adaptation method, e.g. --adapt none")
    choices = adapt_choices()
    for method in values:
        if method not in choices:
            raise UserInputError(
                f"unknown adaptation method {method!r}; expected one of: {', '.join(choices)}"
            )
    return values


def check_noise(rates: Sequence[float]) -> tuple[float, ...]:
    """The label-noise rates of a benchmark, checked (duplicates dropped, order kept).

    Raises:
        UserInputError: For an empty list or a rate outside ``[0, 1)``.
    """
    from thinkingearth.uncertainty.noise import check_noise_rate

    values = tuple(dict.fromkeys(float(r) for r in rates))
    if not values:
        raise UserInputError("give at least one noise rate, e.g. --noise 0")
    return tuple(check_noise_rate(rate) for rate in values)


@dataclass
class BenchResult:
    """What :func:`run_bench` did.

    Attributes:
        out: The output folder.
        rows: Every row of ``results.csv``.
        ran: Runs done by this call (finished, skipped or failed).
        reused: Rows found from an earlier call and kept.
        failed: Rows that failed in this call.
        seconds: Wall-clock time of this call.
    """

    out: Path
    rows: list[dict[str, Any]]
    ran: int
    reused: int
    failed: list[dict[str, Any]]
    seconds: float

    @property
    def report(self) -> Path:
        """``OUT/report.md``."""
        return self.out / "report.md"


# ----------------------------------------------------------------------------------------------
# results.csv
# ----------------------------------------------------------------------------------------------


def read_results(path: str | Path) -> list[dict[str, str]]:
    """Rows of an existing ``results.csv`` (empty if there is none).

    Raises:
        UserInputError: If the file is not a results table.
    """
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("suite", "task", "model", "protocol", "fraction", "seed", "status")
                   if c not in (reader.fieldnames or [])]  # fmt: skip
        if missing:
            raise UserInputError(f"{path} is not a benchmark results table (no {missing} column)")
        return [dict(row) for row in reader]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_results(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write ``rows`` atomically: the fixed columns, then every metric in order of appearance."""
    columns = list(FIXED_COLUMNS)
    for row in rows:
        columns += [k for k in row if k not in columns]
    with atomic_file(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _cell(row.get(c)) for c in columns})


# ----------------------------------------------------------------------------------------------
# Planning
# ----------------------------------------------------------------------------------------------


def plan_runs(
    suite: Suite,
    models: Sequence[ModelSpec],
    seeds: Sequence[int],
    protocols: Sequence[str] | None = None,
    fractions: Sequence[float] | None = None,
    uncertainty: Sequence[str] | None = None,
    noise: Sequence[float] | None = None,
    adapt: Sequence[str] | None = None,
) -> list[RunKey]:
    """Every run of a benchmark, in execution order (task, model, protocol, fraction,
    uncertainty, noise, adaptation, seed).

    Encoders run the suite's protocols for the task kind (or ``protocols``); baselines always
    ``finetune``; ``chance`` the evaluation protocols (``zero-shot``) on the kinds they score.
    Evaluation protocols run at label fraction 1, without a head method, without label noise
    and without adaptation only: they train nothing. Tasks with a split (``TaskSpec.split``) run
    every adaptation method; the others ``none`` only. ``uncertainty``, ``noise`` and ``adapt``
    default to the suite's.

    Raises:
        UserInputError: For an unknown protocol, uncertainty or adaptation method, a label
            fraction outside ``(0, 1]`` or a noise rate outside ``[0, 1)``.
    """
    chosen = (
        [p if p in EVALUATION_PROTOCOLS else check_protocol(p) for p in protocols]
        if protocols
        else None
    )
    fracs = tuple(fractions) if fractions else suite.fractions
    for f in fracs:
        label_fraction_indices(1, f, 0)  # validates the fraction
    methods = check_uncertainty(suite.uncertainty if uncertainty is None else uncertainty)
    rates = [_fraction_text(r) for r in check_noise(suite.noise if noise is None else noise)]
    adaptations = check_adapt(suite.adapt if adapt is None else adapt)
    keys: list[RunKey] = []
    for task in suite.tasks:
        shifts = adaptations if task.split is not None else (NO_ADAPTATION,)
        for spec in models:
            if spec.kind == "chance":
                protos = list(EVALUATION_PROTOCOLS) if task.kind in ZERO_SHOT_KINDS else []
            elif spec.is_encoder:
                protos = chosen or list(suite.protocols.get(task.kind, ()))
            else:
                protos = ["finetune"]
            for protocol in protos:
                evaluation = protocol in EVALUATION_PROTOCOLS
                for fraction in (1.0,) if evaluation else fracs:
                    for method in (NO_UNCERTAINTY,) if evaluation else methods:
                        for rate in ("0",) if evaluation else rates:
                            for shift in (NO_ADAPTATION,) if evaluation else shifts:
                                keys += [
                                    RunKey(
                                        task.name,
                                        spec.name,
                                        protocol,
                                        _fraction_text(fraction),
                                        seed,
                                        method,
                                        rate,
                                        shift,
                                    )
                                    for seed in seeds
                                ]
    return keys


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


@dataclass
class _Domains:
    """The domain data of a task with a split, normalised (one normaliser: fitted on the source
    training samples, and for a target sensor without registry statistics on the UNLABELLED
    target images)."""

    protocol: str
    source_domains: tuple[str, ...]
    target_domains: tuple[str, ...]
    tests: dict[str, Dataset[dict[str, Any]]]  # domain -> labelled test samples
    source_test: Dataset[dict[str, Any]] | None  # the source domains' test samples, pooled
    unlabelled: Dataset[dict[str, Any]] | None  # target samples without labels (adaptation)
    target_train: Dataset[dict[str, Any]] | None  # labelled target samples (the oracle)
    bands: dict[str, tuple[str, tuple[str, ...]]]  # domain -> (sensor, bands)
    val_source: str


@dataclass
class _Prepared:
    train: NormalisedDataset
    test: Dataset[dict[str, Any]]  # with a split: the target domains' test samples, pooled
    normalisation: str
    in_channels: int
    time_steps: int | None
    domains: _Domains | None = None


def _check_series(task: TaskSpec, image: torch.Tensor) -> None:
    if task.kind == "change" and image.ndim != 4:
        raise UserInputError(
            f"task {task.name}: change detection needs image series [T, C, H, W]; "
            f"got {tuple(image.shape)}"
        )


def _fit_more(normaliser: Normaliser, dataset: Dataset[dict[str, Any]], samples: int) -> None:
    """Statistics for ``dataset``'s sensor from its first images, where none are there yet."""
    first = dataset[0]
    sensor, bands = first["sensor"], tuple(first["bands"])
    if not normaliser.needs_fit(sensor, bands):
        return
    images = []
    for i in range(min(samples, len(dataset))):  # type: ignore[arg-type]
        image = dataset[i]["image"]
        images.extend(image.reshape(-1, *image.shape[-3:]))
    normaliser.fit(sensor, bands, images)


def _prepare_domains(task: TaskSpec, suite: Suite, log: Callable[[str], None]) -> _Prepared:
    if task.domains is None:
        raise UserInputError(f"task {task.name} has a split but no domain data")
    splits = task.domains(log)
    first = splits.train[0]
    _check_series(task, first["image"])
    normaliser = fit_normaliser(splits.train, suite.stats_samples)
    source_mode = Normaliser.mode(first["sensor"], tuple(first["bands"]))
    if splits.unlabelled is not None and len(splits.unlabelled) > 0:  # type: ignore[arg-type]
        # a target sensor without registry statistics: estimated on the unlabelled target
        _fit_more(normaliser, splits.unlabelled, suite.stats_samples)
    modes, bands = {source_mode}, {}
    tests: dict[str, Dataset[dict[str, Any]]] = {}
    for domain, dataset in splits.test.items():
        sample = dataset[0]
        bands[domain] = (str(sample["sensor"]), tuple(sample["bands"]))
        if normaliser.needs_fit(*bands[domain]):
            raise UserInputError(
                f"task {task.name}: domain {domain} ({bands[domain][0]}) needs normalisation "
                "statistics and the split gives no unlabelled target images to estimate them"
            )
        modes.add(Normaliser.mode(*bands[domain]))
        tests[domain] = NormalisedDataset(
            dataset, normaliser, f"test-{domain}", suite.cache_samples
        )
    missing = [d for d in splits.target_domains if d not in tests]
    if missing:
        raise UserInputError(f"task {task.name}: target domain {missing[0]} has no test samples")
    sources = [tests[d] for d in splits.source_domains if d in tests]
    target_mode = sorted(modes - {source_mode})
    normalisation = source_mode + "".join(f"/{m}" for m in target_mode)

    def normalised(dataset: Dataset[dict[str, Any]] | None, name: str) -> Any:
        if dataset is None or len(dataset) == 0:  # type: ignore[arg-type]
            return None
        return NormalisedDataset(dataset, normaliser, name, suite.cache_samples)

    image = first["image"]
    return _Prepared(
        train=NormalisedDataset(splits.train, normaliser, "train", suite.cache_samples),
        test=ConcatDataset([tests[d] for d in splits.target_domains]),
        normalisation=normalisation,
        in_channels=int(image.shape[-3]),
        time_steps=int(image.shape[0]) if task.kind == "change" else None,
        domains=_Domains(
            protocol=str(splits.protocol),
            source_domains=tuple(splits.source_domains),
            target_domains=tuple(splits.target_domains),
            tests=tests,
            source_test=ConcatDataset(sources) if sources else None,
            unlabelled=normalised(splits.unlabelled, "unlabelled"),
            target_train=normalised(splits.target_train, "target-train"),
            bands=bands,
            val_source=str(splits.val_source),
        ),
    )


def _prepare(
    task: TaskSpec, suite: Suite, log: Callable[[str], None] = lambda message: None
) -> _Prepared:
    if task.split is not None:
        return _prepare_domains(task, suite, log)
    splits: dict[Split, Dataset[dict[str, Any]]] = {s: task.load(s) for s in ("train", "test")}
    first = splits["train"][0]
    sensor, bands = first["sensor"], tuple(first["bands"])
    normaliser = fit_normaliser(splits["train"], suite.stats_samples)
    image = first["image"]
    series = task.kind == "change"
    if series and image.ndim != 4:
        raise UserInputError(
            f"task {task.name}: change detection needs image series [T, C, H, W]; "
            f"got {tuple(image.shape)}"
        )
    return _Prepared(
        train=NormalisedDataset(splits["train"], normaliser, "train", suite.cache_samples),
        test=NormalisedDataset(splits["test"], normaliser, "test", suite.cache_samples),
        normalisation=Normaliser.mode(sensor, bands),
        in_channels=int(image.shape[-3]),
        time_steps=int(image.shape[0]) if series else None,
    )


# ----------------------------------------------------------------------------------------------
# One run
# ----------------------------------------------------------------------------------------------


def uncertainty_head(suite: Suite, method: str) -> UncertaintyHead:
    """The :class:`~thinkingearth.tasks.variants.UncertaintyHead` of ``method`` with the suite's
    head settings (``Suite.head``: samples, temperature, mc_samples, dropout, members).

    Raises:
        UserInputError: For a bad setting (one line naming it).
    """
    return UncertaintyHead(uncertainty=method, **dict(suite.head))  # type: ignore[arg-type]


def _task_module(
    task: TaskSpec,
    net: Any,
    protocol: str,
    suite: Suite,
    train: Dataset[dict[str, Any]],
    method: str = NO_UNCERTAINTY,
) -> TaskModule:
    extra: dict[str, Any] = {}
    if method != NO_UNCERTAINTY:  # the plain module is built exactly as before
        extra["uncertainty"] = uncertainty_head(suite, method)
    return build_task_module(
        task.kind,
        net,
        num_classes=task.num_classes,
        protocol=protocol,
        lr=suite.lr[protocol],
        class_names=task.class_names or None,
        ignore_index=task.ignore_index,
        decoder_channels=suite.decoder_channels,
        target_stats=target_stats_of(train) if task.kind == "regression" else (0.0, 1.0),
        **extra,
    )


def noise_model_of(task: TaskSpec) -> str:
    """The label-noise model of a task: its ``noise_model``, else the task kind's default."""
    if task.noise_model is not None:
        return task.noise_model
    from thinkingearth.uncertainty.noise import DEFAULT_NOISE

    return str(DEFAULT_NOISE[task.kind])  # type: ignore[index]


def train_split(prepared: _Prepared, task: TaskSpec, key: RunKey) -> Dataset[dict[str, Any]]:
    """The training samples of a run: the seeded label fraction of the training split, with
    the run's label noise (:class:`~thinkingearth.uncertainty.noise.NoisyLabels`, seeded by the
    run's seed) when its rate is above 0. The test split is never made noisy. An ``oracle`` run
    trains on the target domains' labelled training samples instead of the source's.

    Raises:
        UserInputError: An oracle run of a split without labelled target training samples.
    """
    base: Dataset[dict[str, Any]] = prepared.train
    if key.adapt == ORACLE:
        if prepared.domains is None or prepared.domains.target_train is None:
            raise UserInputError(
                f"task {task.name}: the oracle needs labelled target training samples"
            )
        base = prepared.domains.target_train
    indices = label_fraction_indices(len(base), float(key.fraction), key.seed)  # type: ignore[arg-type]
    rate = float(key.noise)
    if rate == 0.0:
        return Subset(base, indices)
    from thinkingearth.uncertainty.noise import LabelNoise, NoisyLabels

    noisy = NoisyLabels(
        base,
        LabelNoise(noise_model_of(task), rate, seed=int(key.seed)),  # type: ignore[arg-type]
        task.kind,  # type: ignore[arg-type]
        task.num_classes,
        ignore_index=task.ignore_index,
    )
    return Subset(noisy, indices)


def measured_noise(train: Dataset[dict[str, Any]], task: TaskSpec) -> float:
    """The share of training labels (pixels) the noise changed, measured on the samples, as
    the noise model states its rate (``missed-flood``: the share of the flood pixels)."""
    from thinkingearth.uncertainty.noise import FLOOD_CLASS, LABEL_KEYS, measured_rate

    label = LABEL_KEYS[task.kind]  # type: ignore[index]
    clean, noisy = [], []
    for i in range(len(train)):  # type: ignore[arg-type]
        sample = train[i]
        clean.append(torch.as_tensor(sample[f"{label}_clean"]))
        noisy.append(torch.as_tensor(sample[label]))
    return float(
        measured_rate(
            torch.stack(clean),
            torch.stack(noisy),
            task.kind,  # type: ignore[arg-type]
            ignore_index=task.ignore_index,
            of_class=FLOOD_CLASS if noise_model_of(task) == "missed-flood" else None,
        )
    )


def _band_skip(spec: ModelSpec, prepared: _Prepared | None) -> str | None:
    """Why a fixed-band baseline cannot run a split whose domains have other bands."""
    if spec.is_encoder or prepared is None or prepared.domains is None:
        return None
    sets = dict.fromkeys(prepared.domains.bands.values())
    if len(sets) < 2:
        return None
    (sensor, bands), *others = sets
    other = "; ".join(f"{s} {', '.join(b)}" for s, b in others)
    return (
        f"{spec.name} takes a fixed band set: trained on {sensor} {', '.join(bands)}, the "
        f"domains also have {other} (the any-sensor encoder takes them)"
    )


def _skip_reason(task: TaskSpec, spec: ModelSpec, protocol: str) -> str | None:
    reason = evaluation_skip_reason(task, spec, protocol)
    if reason is not None or protocol in EVALUATION_PROTOCOLS or spec.kind == "chance":
        return reason
    if not spec.is_encoder and task.kind not in BASELINES[spec.name].tasks:
        return f"{spec.name} cannot do {task.kind}: {BASELINES[spec.name].reason}"
    if spec.is_encoder and task.kind in _CLASSIFICATION and protocol == "frozen-upernet":
        return "frozen-upernet is a dense protocol; scene classification uses linear-probe"
    return None


def _device(accelerator: str) -> torch.device:
    if accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", 0)
    return torch.device("cpu")


def _run_id(key: RunKey) -> str:
    text = f"{key.task}__{key.model}__{key.protocol}__f{key.fraction}__s{key.seed}"
    if key.uncertainty != NO_UNCERTAINTY or key.noise != "0":  # older runs keep their names
        text += f"__u{key.uncertainty}__n{key.noise}"
    if key.adapt != NO_ADAPTATION:
        text += f"__a{key.adapt}"
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", text)[-150:]


def _train_loader(
    dataset: Dataset[dict[str, Any]],
    suite: Suite,
    seed: int,
    *,
    samples: int | None = None,
    collate_fn: Callable[[Sequence[Any]], dict[str, Any]] = collate,
) -> tuple[DataLoader[Any], int]:
    """``max_steps`` seeded random batches of ``dataset``; the batch size is the suite's, at
    most ``samples`` (default: the dataset's length) and at least 2."""
    n = len(dataset) if samples is None else samples  # type: ignore[arg-type]
    batch = max(2, min(suite.batch_size, n))
    generator = torch.Generator().manual_seed(int(seed))
    sampler = RandomSampler(dataset, num_samples=suite.max_steps * batch, generator=generator)  # type: ignore[arg-type]
    loader = DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        drop_last=True,
        collate_fn=collate_fn,
        num_workers=suite.num_workers,
        persistent_workers=False,
    )
    return loader, batch


def _test_loader(dataset: Dataset[dict[str, Any]], suite: Suite) -> DataLoader[Any]:
    return DataLoader(
        dataset,
        batch_size=suite.eval_batch_size,
        shuffle=False,
        collate_fn=collate,
        num_workers=suite.num_workers,
    )


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


# ----------------------------------------------------------------------------------------------
# Domain shift
# ----------------------------------------------------------------------------------------------


def split_facts(task: TaskSpec) -> dict[str, str]:
    """The ``split_protocol``, ``source`` and ``target`` columns of a task's rows (empty for a
    task without a split; domains comma-separated)."""
    if task.split is None:
        return {}
    return {
        "split_protocol": str(task.split.protocol),
        "source": ",".join(task.split.source),
        "target": ",".join(task.split.target),
    }


def adapt_section(suite: Suite, method: str) -> AdaptSection | None:
    """The :class:`~thinkingearth.tasks.variants.AdaptSection` of a run's ``adapt`` value with
    the suite's settings (``None`` for ``none`` and ``oracle``: plain training).

    ``generalise`` is method ``none`` with ``Suite.generalise``'s augmentations; the methods
    take ``Suite.adapt_settings`` (weight, threshold, steps, lr).

    Raises:
        UserInputError: For a bad setting (one line naming it).
    """
    from thinkingearth.tasks.variants import AdaptSection

    if method in (NO_ADAPTATION, ORACLE):
        return None
    if method == GENERALISE:
        return AdaptSection(method="none", **dict(suite.generalise))  # type: ignore[arg-type]
    return AdaptSection(method=method, **dict(suite.adapt_settings))  # type: ignore[arg-type]


def _adaptation(section: AdaptSection | None) -> Any:
    """The installed :class:`~thinkingearth.tasks.variants.Adaptation` of a section (``None``:
    plain training)."""
    if section is None:
        return None
    from thinkingearth.tasks.variants import get_adaptation

    return get_adaptation(section.method)


def _wraps(adaptation: Any, section: AdaptSection) -> bool:
    """True when training goes through the adaptation's wrapper (a during-training method, or
    augmentation of the source batches)."""
    return bool(adaptation.during_training) or section.augments


def _unlabelled(prepared: _Prepared, task: TaskSpec) -> Dataset[dict[str, Any]]:
    if prepared.domains is None or prepared.domains.unlabelled is None:
        raise UserInputError(
            f"task {task.name}: adaptation needs unlabelled target data; the split gives none"
        )
    return prepared.domains.unlabelled


def _paired_loader(
    source: Dataset[dict[str, Any]],
    target: Dataset[dict[str, Any]],
    suite: Suite,
    seed: int,
) -> tuple[DataLoader[Any], int]:
    """``{"source": batch, "target": batch}`` batches for ``max_steps`` steps
    (:class:`thinkingearth.adapt.data.SourceTargetPairs`, seeded by the run's seed)."""
    from thinkingearth.adapt.data import SourceTargetPairs, collate_pairs

    pairs = SourceTargetPairs(source, target, seed=int(seed))
    return _train_loader(
        pairs,
        suite,
        seed,
        samples=len(source),  # type: ignore[arg-type]
        collate_fn=collate_pairs,
    )


def _adapt_loader(target: Dataset[dict[str, Any]], suite: Suite, seed: int) -> DataLoader[Any]:
    """The unlabelled target batches a post-hoc method (AdaBN, TENT) adapts on, shuffled with
    the run's seed."""
    generator = torch.Generator().manual_seed(int(seed))
    n = len(target)  # type: ignore[arg-type]
    return DataLoader(
        target,
        batch_size=max(2, min(suite.batch_size, n)),
        shuffle=True,
        generator=generator,
        drop_last=n > suite.batch_size,
        collate_fn=collate,
        num_workers=suite.num_workers,
    )


def _domain_scores(
    trainer: Any, module: TaskModule, prepared: _Prepared, task: TaskSpec, suite: Suite
) -> dict[str, Any]:
    """Per-domain columns of a run of a task with a split: ``<primary>@<domain>`` for every
    domain, ``worst_domain`` (the primary metric on the worst TARGET domain) with
    ``worst_domain_name``, and ``source_primary`` (the source domains' test samples, pooled)."""
    domains = prepared.domains
    if domains is None:
        return {}
    facts: dict[str, Any] = {}
    per: dict[str, float] = {}
    for domain, dataset in domains.tests.items():
        trainer.test(module, dataloaders=_test_loader(dataset, suite), verbose=False)
        per[domain] = float(module.test_results.get(task.primary, math.nan))
        facts[f"{task.primary}@{domain}"] = per[domain]
    # The same worst-domain rule as finetune's metrics.json (tasks.finetune_report).
    metrics = {d: {task.primary: value} for d, value in per.items()}
    targets = [d for d in domains.target_domains if d in metrics]
    names = worst_domain_names(metrics, targets, task.primary) if targets else []
    if names:
        facts.update(worst_domain=per[names[0]], worst_domain_name=names[0])
    if domains.source_test is not None:
        trainer.test(module, dataloaders=_test_loader(domains.source_test, suite), verbose=False)
        facts["source_primary"] = float(module.test_results.get(task.primary, math.nan))
    return facts


def fill_oracle_gaps(rows: Sequence[dict[str, Any]], tasks: Mapping[str, TaskSpec]) -> None:
    """Set ``oracle_gap`` of every finished run of a task with a split whose oracle run (same
    task, model, protocol, fraction, seed, head and noise; ``adapt`` = ``oracle``) finished:
    oracle − run for higher-is-better metrics, run − oracle otherwise (positive: below the
    oracle). Rows without their oracle get an empty cell."""
    oracles: dict[RunKey, float] = {}
    for r in rows:
        if str(r.get("adapt") or NO_ADAPTATION) == ORACLE and r.get("status") == "ok":
            oracles[_row_key(r)] = _number(r.get("primary"))
    for r in rows:
        task = tasks.get(str(r.get("task")))
        if task is None or task.split is None or r.get("status") != "ok":
            continue
        oracle = oracles.get(_row_key(r)._replace(adapt=ORACLE), math.nan)
        value = _number(r.get("primary"))
        if not (math.isfinite(oracle) and math.isfinite(value)):
            r["oracle_gap"] = None
            continue
        # finetune's sign rule (tasks.finetune_report.oracle_gap): positive = below the oracle
        r["oracle_gap"] = oracle_gap({task.primary: oracle}, {task.primary: value})[task.primary]


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _run_one(
    key: RunKey,
    task: TaskSpec,
    prepared: _Prepared | None,
    spec: ModelSpec,
    suite: Suite,
    accelerator: Accelerator,
    out: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    logs = out / "logs"
    row: dict[str, Any] = {
        "suite": suite.name,
        "task": task.name,
        "kind": task.kind,
        "model": spec.name,
        "protocol": key.protocol,
        "fraction": key.fraction,
        "seed": key.seed,
        "uncertainty": key.uncertainty,
        "noise": key.noise,
        "adapt": key.adapt,
        "primary_metric": task.primary,
        **split_facts(task),
    }
    reason = _skip_reason(task, spec, key.protocol) or _band_skip(spec, prepared)
    if reason is not None:
        return {**row, "status": "skipped", "reason": reason}
    device = _device(accelerator)
    if key.protocol in EVALUATION_PROTOCOLS:
        try:
            return {**row, **evaluate_run(key, task, spec, suite, device, log)}
        except Exception as error:  # recorded and retried on the next call, as training runs
            log(f"[bench] {_run_id(key)} failed:\n{traceback.format_exc()}")
            return {**row, "status": "failed", "reason": _one_line(error)}
    if prepared is None:
        raise RuntimeError(f"task {task.name}: data not prepared for a training run")
    row["normalisation"] = prepared.normalisation
    try:
        L.seed_everything(key.seed, workers=True, verbose=False)
        net = build_network(
            spec, task, suite, prepared.in_channels, prepared.time_steps, seed=key.seed
        )
        frozen = key.protocol != "finetune"
        if frozen and suite.cache_features and isinstance(net, Backbone):
            net = FeatureCache(net)
        train = train_split(prepared, task, key)
        noise_facts: dict[str, Any] = {}
        if float(key.noise) > 0:
            noise_facts = {
                "noise_model": noise_model_of(task),
                "noise_measured": measured_noise(train, task),
            }
        try:
            module = _task_module(task, net, key.protocol, suite, train, key.uncertainty)
        except UserInputError as error:
            if key.uncertainty == NO_UNCERTAINTY:
                raise
            # e.g. a head method on a complete dense model (the U-Net has no separate head)
            return {**row, "status": "skipped", "reason": str(error)}
        section = adapt_section(suite, key.adapt)
        adaptation = _adaptation(section)
        fit_module: L.LightningModule = module
        # the wrapper also refuses, before training, a post-hoc method the model cannot take
        try:
            wrapped = adaptation.wrap(module, section) if section is not None else None
        except UserInputError as error:  # e.g. TENT on a model without normalisation layers
            return {**row, "status": "skipped", "reason": str(error)}
        if section is not None and wrapped is not None and _wraps(adaptation, section):
            # during-training methods and augmentation: source batches (+ unlabelled target);
            # post-hoc methods train plainly, as source-only training of the same seed does
            fit_module = wrapped
            if section.needs_target:
                target = _unlabelled(prepared, task)
                loader, batch = _paired_loader(train, target, suite, key.seed)
            else:  # augmentation only: plain source batches
                loader, batch = _train_loader(train, suite, key.seed)
        else:
            loader, batch = _train_loader(train, suite, key.seed)
        test_loader = _test_loader(prepared.test, suite)
        progress, bar = progress_callbacks(log, f"[bench] {_run_id(key)}")
        trainer = L.Trainer(
            accelerator="gpu" if device.type == "cuda" else "cpu",
            devices=1,
            max_steps=suite.max_steps,
            max_epochs=1,
            logger=CSVLogger(str(logs), name=_run_id(key)),
            log_every_n_steps=max(1, min(50, suite.max_steps // 4)),
            callbacks=[*progress, StopOnSignal()],
            enable_progress_bar=bar,
            enable_checkpointing=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            default_root_dir=str(logs),
        )
        with PeakMemory(device) as memory:
            start = time.perf_counter()
            hint = "results.csv keeps the finished runs; run the same command to do the rest"
            with stop_on_sigterm(trainer, f"{_run_id(key)} was not recorded; {hint}"):
                trainer.fit(fit_module, train_dataloaders=loader)
            if section is not None and section.needs_target and not adaptation.during_training:
                # post-hoc methods (adabn, tent): the trained model meets the unlabelled target
                target_loader = _adapt_loader(_unlabelled(prepared, task), suite, key.seed)
                module = adaptation.after_training(module, section, target_loader)
            train_seconds = time.perf_counter() - start
            trainer.test(module, dataloaders=test_loader, verbose=False)
            metrics = dict(module.test_results)
            domain_facts = _domain_scores(trainer, module, prepared, task, suite)
            module.to(device)
            scored = _score_uncertainty(module, test_loader, task, suite, device, key, out, log)
            if isinstance(net, FeatureCache):
                net.enabled = False
                net.clear()
            module.to(device)
            ips = inference_throughput(module, test_loader, device)
        params, trainable = count_parameters(module)
        row.update(
            status="ok",
            reason=scored.pop("reason", ""),
            primary=metrics.get(task.primary, math.nan),
            train_seconds=train_seconds,
            inference_ips=ips,
            params=params,
            trainable_params=trainable,
            peak_mem_mb=memory.peak_mb,
            memory_method=memory.method,
            train_samples=len(train),
            steps=int(trainer.global_step),
            batch_size=batch,
            test_samples=len(prepared.test),
            device=str(device),
        )
        row.update(metrics)
        row.update(domain_facts)
        row.update(noise_facts)
        row.update(scored)
        return row
    except UnsupportedTaskError as error:
        return {**row, "status": "skipped", "reason": str(error)}
    except Exception as error:  # a failed run is recorded and retried on the next call
        log(f"[bench] {_run_id(key)} failed:\n{traceback.format_exc()}")
        return {**row, "status": "failed", "reason": _one_line(error)}


# ----------------------------------------------------------------------------------------------
# The benchmark
# ----------------------------------------------------------------------------------------------


def _curve_arrays(value: Any) -> Any:
    """A curve dataclass (Reliability, DiscardCurve) as plain JSON values."""
    import dataclasses

    import numpy as np

    if value is None:
        return None
    out = {}
    for f in dataclasses.fields(value):
        item = getattr(value, f.name)
        if isinstance(item, np.ndarray | torch.Tensor):
            item = np.asarray(item, dtype=np.float64).tolist()
        elif isinstance(item, np.generic):
            item = item.item()
        out[f.name] = item
    return out


def _score_uncertainty(
    module: TaskModule,
    loader: DataLoader[Any],
    task: TaskSpec,
    suite: Suite,
    device: torch.device,
    key: RunKey,
    out: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The uncertainty evaluation of a trained run on the (clean) test split.

    Returns the metrics of :func:`thinkingearth.uncertainty.evaluation.evaluate_uncertainty`,
    ``uncertainty_seconds`` and ``curves`` (the JSON file of the run's reliability diagram and
    discard curve, relative to ``out``); when the evaluation fails, only ``reason`` saying so
    (the run's task metrics stand; the failure is logged with its traceback and listed in the
    report).
    """
    import json

    start = time.perf_counter()
    try:
        from thinkingearth.uncertainty.evaluation import evaluate_uncertainty

        result = evaluate_uncertainty(
            module,
            loader,
            task.kind,
            ignore_index=task.ignore_index,
            bins=suite.ece_bins,
            device=str(device),
            seed=int(key.seed),
        )
        seconds = time.perf_counter() - start
        relative = f"{CURVES_DIR}/{_run_id(key)}.json"
        record = {
            **key._asdict(),  # task, model, protocol, fraction, seed, uncertainty, noise
            "metrics": {k: float(v) for k, v in result.metrics.items()},
            "reliability": _curve_arrays(result.reliability),
            "discard": _curve_arrays(result.discard),
        }
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(record, allow_nan=True), encoding="utf-8")
    except Exception as error:  # the run's task metrics still stand; said in row and report
        log(f"[bench] {_run_id(key)}: uncertainty evaluation failed:\n{traceback.format_exc()}")
        return {"reason": f"uncertainty evaluation failed: {_one_line(error)}"}
    return {**result.metrics, "uncertainty_seconds": seconds, "curves": relative}


def _seed_list(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, int):
        if seeds < 1:
            raise UserInputError(f"--seeds must be a positive number of seeds; got {seeds}")
        return list(range(seeds))
    values = [int(s) for s in seeds]
    if not values:
        raise UserInputError("give at least one seed")
    return list(dict.fromkeys(values))


def run_bench(
    suite: str | Suite,
    models: str | Sequence[str] | None,
    out: str | Path,
    *,
    seeds: int | Sequence[int] = 3,
    data_root: str | Path | None = None,
    protocols: Sequence[str] | None = None,
    fractions: Sequence[float] | None = None,
    uncertainty: str | Sequence[str] | None = None,
    noise: Sequence[float] | None = None,
    adapt: str | Sequence[str] | None = None,
    max_steps: int | None = None,
    accelerator: Accelerator = "cpu",
    threads: int | None = None,
    command: str | None = None,
    report: bool = True,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> BenchResult:
    """Run a benchmark and write ``OUT/results.csv`` and ``OUT/report.md``.

    Args:
        suite: A suite name (:func:`thinkingearth.bench.suites.list_suites`) or a :class:`Suite`.
        models: Model names, comma-separated or a list (default: the suite's).
        out: Output folder; rows already in ``OUT/results.csv`` are not run again.
        seeds: Number of seeds (0, 1, …) or the seeds themselves.
        data_root: Root of the real data (``kurosiwo``, ``copernicus-bench``).
        protocols: Encoder protocols for every task (default: the suite's per task kind).
        fractions: Label fractions (default: the suite's).
        uncertainty: Uncertainty head methods, comma-separated or a list (``none``,
            ``heteroscedastic``, ``mc_dropout``, ``ensemble``; default: the suite's).
        noise: Label-noise rates in ``[0, 1)`` applied to the training split (default: the
            suite's).
        adapt: Domain-adaptation methods of the tasks with a split, comma-separated or a list
            (``none``: source only, ``dann``, ``deep_coral``, ``mmd``, ``adabn``,
            ``self_training``, ``tent``, ``oracle``, ``generalise``; default: the suite's).
        max_steps: Training steps per run (default: the suite's).
        accelerator: ``cpu``, ``gpu`` or ``auto``.
        threads: PyTorch intra-op CPU threads during the benchmark (default: the suite's
            setting, else PyTorch's).
        command: The command line, recorded in the report.
        report: Write ``report.md`` and its plots at the end.
        overwrite: Start from an empty table: the rows in ``OUT/results.csv`` (of any suite)
            are dropped and every run is done again.
        log: Progress messages.

    Returns:
        What ran; :attr:`BenchResult.failed` lists runs that raised (their rows say why).

    Raises:
        UserInputError: For unknown names, a missing data root, an ``OUT`` holding another
            suite's results, an unknown uncertainty or adaptation method, a noise rate outside
            ``[0, 1)``, or data a non-optional task cannot read.
    """
    if isinstance(uncertainty, str):
        uncertainty = [m for m in uncertainty.split(",") if m.strip()]
    if isinstance(adapt, str):
        adapt = [m for m in adapt.split(",") if m.strip()]
    if threads is not None and threads < 1:
        raise UserInputError(f"--threads must be a positive number; got {threads}")
    spec = get_suite(suite, data_root) if isinstance(suite, str) else suite
    chosen = threads if threads is not None else spec.threads
    previous_threads = torch.get_num_threads()
    if chosen is not None:
        torch.set_num_threads(int(chosen))
    try:
        return _run_bench(
            spec,
            models,
            out,
            seeds=seeds,
            protocols=protocols,
            fractions=fractions,
            uncertainty=uncertainty,
            noise=noise,
            adapt=adapt,
            max_steps=max_steps,
            accelerator=accelerator,
            command=command,
            report=report,
            overwrite=overwrite,
            log=log,
        )
    finally:
        torch.set_num_threads(previous_threads)


def _run_bench(
    spec: Suite,
    models: str | Sequence[str] | None,
    out: str | Path,
    *,
    seeds: int | Sequence[int],
    protocols: Sequence[str] | None,
    fractions: Sequence[float] | None,
    uncertainty: Sequence[str] | None,
    noise: Sequence[float] | None,
    adapt: Sequence[str] | None,
    max_steps: int | None,
    accelerator: Accelerator,
    command: str | None,
    report: bool,
    overwrite: bool,
    log: Callable[[str], None],
) -> BenchResult:
    began = time.perf_counter()
    machine = machine_summary(accelerator)
    if accelerator not in ("cpu", "gpu", "auto"):
        raise UserInputError(f"unknown accelerator {accelerator!r}; expected cpu, gpu or auto")
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise UserInputError("--accelerator gpu: no CUDA device is available")
    if max_steps is not None:
        if max_steps < 1:
            raise UserInputError(f"--max-steps must be positive; got {max_steps}")
        from dataclasses import replace

        spec = replace(spec, max_steps=int(max_steps))
    specs = resolve_models(models if models else list(spec.models))
    seed_values = _seed_list(seeds)
    keys = plan_runs(spec, specs, seed_values, protocols, fractions, uncertainty, noise, adapt)
    for method in sorted({k.uncertainty for k in keys} - {NO_UNCERTAINTY}):
        get_uncertainty_builder(method)  # an uninstalled method stops here, before any run
        uncertainty_head(spec, method)  # and so do bad Suite.head settings
    for method in sorted({k.adapt for k in keys}):
        _adaptation(adapt_section(spec, method))  # bad settings, uninstalled methods: here
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} is a file; expected a folder")
    check_writable_parent(out / RESULTS_NAME)
    out.mkdir(parents=True, exist_ok=True)
    results = out / RESULTS_NAME
    existing = [] if overwrite else read_results(results)
    others = sorted({r["suite"] for r in existing} - {spec.name})
    if others:
        raise UserInputError(
            f"{results} holds results of suite {', '.join(others)}; pass --overwrite to start "
            "again, or choose another --out"
        )
    rows: list[dict[str, Any]] = [dict(r) for r in existing if r.get("status") in _DONE]
    for r in rows:  # rows written before these columns existed: deterministic, clean labels
        r["uncertainty"] = r.get("uncertainty") or NO_UNCERTAINTY
        r["noise"] = r.get("noise") or "0"
        r["adapt"] = r.get("adapt") or NO_ADAPTATION
    by_task = {t.name: t for t in spec.tasks}

    def save() -> None:
        fill_oracle_gaps(rows, by_task)  # an oracle run fills the gaps of its task and seed
        write_results(results, rows)

    done = {_row_key(r) for r in rows}
    pending = [k for k in keys if k not in done]
    by_name = {s.name: s for s in specs}
    for model in specs:  # VL models named by a pretrain config are trained under OUT/models
        model.workdir = out / "models"
        model.log = log
        if spec.vl_pretrain_steps is not None:
            model.pretrain_steps = spec.vl_pretrain_steps
    log(
        f"[bench] suite {spec.name}: {len(keys)} runs, {len(keys) - len(pending)} already in "
        f"{results}, {len(pending)} to run"
    )
    failed: list[dict[str, Any]] = []
    ran = 0
    with QuietLightning():
        for task in spec.tasks:
            todo = [k for k in pending if k.task == task.name]
            if not todo:
                continue
            trains = any(
                k.protocol not in EVALUATION_PROTOCOLS
                and _skip_reason(task, by_name[k.model], k.protocol) is None
                for k in todo
            )
            log(f"[bench] {task.name}: reading data …")
            try:
                prepared = _prepare(task, spec, log) if trains else None
                if not trains:
                    task.load("test")  # a missing data folder shows here, as for training
            except UserInputError as error:  # DataLayoutError, a missing optional package, …
                if not task.optional:
                    raise
                for key in todo:
                    rows.append(_skipped_for_data(spec, task, key, str(error)))
                    ran += 1
                save()
                log(f"[bench] {task.name}: skipped ({error})")
                continue
            for key in todo:
                start = time.perf_counter()
                row = _run_one(key, task, prepared, by_name[key.model], spec, accelerator, out, log)
                rows.append(row)
                ran += 1
                save()
                stopping.check()  # a SIGTERM that a finaliser swallowed during the run
                if row["status"] == "failed":
                    failed.append(row)
                shown = (
                    f"{task.primary} {float(row['primary']):.4f}"
                    if row["status"] == "ok"
                    else row.get("reason", "")
                )
                variant = (
                    f" {key.uncertainty} noise={key.noise}"
                    if (key.uncertainty, key.noise) != (NO_UNCERTAINTY, "0")
                    else ""
                ) + (f" adapt={key.adapt}" if task.split is not None else "")
                log(
                    f"[bench] {ran}/{len(pending)} {task.name} {key.model} {key.protocol} "
                    f"f={key.fraction}{variant} seed={key.seed}: {row['status']} ({shown}) "
                    f"{time.perf_counter() - start:.1f} s"
                )
    if not existing and not rows:
        write_results(results, rows)
    elif existing and not ran:
        save()  # gaps of rows written before their oracle existed
    seconds = time.perf_counter() - began
    if report:
        from thinkingearth.bench.report import write_report

        write_report(
            out,
            rows,
            spec,
            specs,
            command=command,
            seconds=seconds if not existing else None,
            machine=f"{machine}; load average at the end {_load()}",
        )
    return BenchResult(out, rows, ran, len(rows) - ran, failed, seconds)


def _skipped_for_data(suite: Suite, task: TaskSpec, key: RunKey, reason: str) -> dict[str, Any]:
    return {
        "suite": suite.name,
        **key._asdict(),
        **split_facts(task),
        "kind": task.kind,
        "status": "skipped",
        "reason": f"data not available: {reason}",
        "primary_metric": task.primary,
    }


def _load() -> str:
    try:
        return ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine_summary(accelerator: str = "cpu") -> str:
    """One line about the machine: CPU, cores, threads, load average (1, 5, 15 min)."""
    cores = os.cpu_count() or 0
    cpu = platform.processor() or platform.machine()
    text = (
        f"{platform.system()} {cpu}, {cores} cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} intra-op threads, load average at the start {_load()}"
    )
    if _device(accelerator).type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text
