"""Labelled data to a saved model: ``thinkingearth finetune`` calls :func:`finetune`.

A run reads a :class:`~thinkingearth.tasks.finetune_config.FinetuneConfig`, opens the train,
validation and test splits of its reader (a deterministic hold-out of the training split where
the reader has no validation split), normalises every image with the one
:class:`~thinkingearth.data.transforms.Normaliser` of the toolkit, trains the task module of the
task kind under the protocol (AdamW, warm-up then cosine decay), validates every
``trainer.val_every`` steps and keeps the best validation weights, then scores the test split
with those weights. Then every test evaluation installed in the entry-point group
``thinkingearth.test_evaluations`` (:func:`thinkingearth.tasks.variants.test_evaluations`; the
uncertainty evaluation of :mod:`thinkingearth.uncertainty`) runs on the test split with the saved
model: its metrics join ``metrics.json``, its section ``report.md``. An evaluation that fails is
reported in ``report.md`` and the log (and under ``run.evaluation_errors`` in ``metrics.json``);
the saved model and the other results stay.

With a split protocol (``split:``, :class:`~thinkingearth.data.domains.SplitSpec`) the data
comes from :func:`~thinkingearth.data.domains.open_domain_splits`: the model trains on the
source domains and is selected on SOURCE validation (no target label is seen); the normaliser
is fitted on the source training data, and a target sensor without published statistics gets
statistics estimated from the UNLABELLED target images. An adaptation method (``adapt:``,
:class:`~thinkingearth.tasks.variants.AdaptSection`; found by name through
:func:`~thinkingearth.tasks.variants.get_adaptation`, implemented in :mod:`thinkingearth.adapt`)
wraps the task module for training: each step gets ``{"source": batch, "target": batch}``, the
target batch drawn from the unlabelled target samples by ``(seed, step)`` as the source batch
is, so ``--resume`` stays exact; the best weights are those of the wrapped task module.
Post-hoc methods (AdaBN, TENT) then adapt the selected weights on the unlabelled target. The
model is scored on every test domain: ``metrics.json`` holds the pooled target test metrics at
the top level (bench's keys) and ``per_domain``, ``worst_domain``, ``mean_domain`` (over the
target domains), ``source`` (the source domains' own test samples pooled), ``split`` and
``adapt``; with ``split.oracle`` (``--oracle``) the same configuration is also trained on the
target domains' labelled training samples (``OUT/oracle``) and ``oracle`` and ``oracle_gap``
(positive = below the oracle) are added. Without a protocol, nothing of this changes a run.

Output folder ``OUT``::

    OUT/model.safetensors, OUT/model.json   the task checkpoint (tasks.checkpoint.save_task):
                                            ``thinkingearth predict --weights OUT/model``
    OUT/metrics.json                        test metrics under the keys of bench's results.csv
                                            (miou, water_f1, f1/flood, map, oa, rmse, ...; with
                                            the test evaluations' keys, e.g. ece, nll), and
                                            "run": steps, kept step, samples, time
    OUT/report.md                           curves, per-class table, confusion matrix, and a
                                            section per test evaluation
    OUT/training_curve.png, OUT/confusion_matrix.png
    OUT/config.yaml                         the resolved configuration
    OUT/checkpoints/step-*.ckpt             resumable checkpoints (``--resume``)
    OUT/checkpoints/best.safetensors/.json  the best validation weights so far
    OUT/logs/csv/metrics.csv                losses and validation metrics per step

``--resume`` continues from the latest checkpoint: weights, optimiser, schedule, step and the
position in the data order (batches are drawn from ``(seed, step)``), so a run killed with
SIGKILL and resumed trains on the same batches as an uninterrupted one. Every file is written to
a temporary sibling and renamed into place. SIGTERM stops training after the current step with a
checkpoint of it (exit status 143), for ``--resume``. An ``OUT`` holding a run is refused unless
``--resume`` or ``--overwrite`` (which deletes that run's files, :data:`RUN_OUTPUTS`, once the
new run's data and model are checked). A finished run resumed with a raised ``--max-steps``
trains on to the new end; its cosine is then the one planned for the new end (``pretrain``
stretches its schedule continuously; fine-tuning does not).

With ``--devices N > 1`` (DDP), Lightning runs the command again for ranks 1 to N-1; each process
draws its share of every step's global batch (``N x data.batch_size``) from ``(seed, step)``;
rank 0 alone keeps the best weights, tests and writes ``OUT``, the other processes end after
training.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler, Subset

from thinkingearth.configfile import merge, plain
from thinkingearth.data.domains import SplitSpec
from thinkingearth.data.readers import open_split
from thinkingearth.data.sample import collate, collate_sides
from thinkingearth.errors import UserInputError
from thinkingearth.fileio import atomic_file, check_writable_parent, remove_outputs
from thinkingearth.tasks.finetune_config import (
    FinetuneConfig,
    SplitNames,
    TrainerSection,
    load_finetune_config,
)
from thinkingearth.tasks.protocols import TaskModule, label_fraction_indices
from thinkingearth.tasks.training import (
    NormalisedDataset,
    build_task_module,
    fit_normaliser,
    target_stats_of,
)
from thinkingearth.tasks.variants import (
    Adaptation,
    AdaptSection,
    TestEvaluation,
    UncertaintyHead,
    get_adaptation,
    test_evaluations,
)

if TYPE_CHECKING:
    from thinkingearth.data.domains import DomainSplits
    from thinkingearth.data.transforms import Normaliser

__all__ = ["FinetuneResult", "StepBatchSampler", "finetune", "resolve_config"]

_logger = logging.getLogger(__name__)

#: Settings that may differ between a run and its ``--resume``.
RESUMABLE_CHANGES: frozenset[str] = frozenset(
    {
        "name",
        "trainer.max_steps",
        "trainer.val_every",
        "trainer.checkpoint_every",
        "trainer.keep_checkpoints",
        "trainer.log_every",
        "trainer.accelerator",
        "trainer.devices",
        "trainer.threads",
        "data.num_workers",
        "data.eval_batch_size",
        "data.root",
        "split.oracle",  # the oracle trains after the run, from its start
    }
)
_SCENE_TASKS = ("flood", "water", "landcover")
#: What a run writes in ``OUT`` (deleted by ``--overwrite``; nothing else in ``OUT`` is touched).
RUN_OUTPUTS: tuple[str, ...] = (
    "checkpoints",
    "logs",
    "config.yaml",
    "model.safetensors",
    "model.json",
    "metrics.json",
    "report.md",
    "training_curve.png",
    "confusion_matrix.png",
    # Figures of the uncertainty test evaluation (thinkingearth.uncertainty.evaluation).
    "reliability.png",
    "discard.png",
    # The oracle of a split protocol (split.oracle): trained on target labels.
    "oracle",
)


@dataclass(frozen=True)
class FinetuneResult:
    """What a run produced.

    Attributes:
        out: The output folder.
        model: ``OUT/model.safetensors`` (with ``OUT/model.json`` beside it).
        metrics: Test metrics of the saved model (keys as in ``bench``'s ``results.csv``).
        metrics_path: ``OUT/metrics.json``.
        report: ``OUT/report.md``.
        steps: Optimiser steps reached.
        best_step: Step of the saved (best validation) weights.
        seconds: Wall time of the call.
        resumed_from: Step the run resumed from (``None`` for a fresh run).
    """

    out: Path
    model: Path
    metrics: dict[str, float]
    metrics_path: Path
    report: Path
    steps: int
    best_step: int
    seconds: float
    resumed_from: int | None


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


class StepBatchSampler(Sampler[list[int]]):
    """Batches drawn from ``(seed, step)``: epoch-wise permutations cut into batches.

    A resumed run starts at ``start`` and sees exactly the batches the uninterrupted run would
    have seen. With several processes (DDP), each takes its slice of the global batch.

    Args:
        n: Samples in the dataset.
        batch_size: Samples per batch on each process.
        steps: Batches in total (the run's ``max_steps``).
        seed: Seed of the permutations.
        start: First step to yield.
        rank: This process's rank; ``None``: ``torch.distributed``'s rank when batches are
            drawn (0 without a process group), for a sampler built before DDP starts.
        world: Number of processes.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        steps: int,
        seed: int,
        start: int = 0,
        rank: int | None = 0,
        world: int = 1,
    ) -> None:
        """Keep the settings."""
        if n < 1 or batch_size < 1:
            raise ValueError(f"need samples and a positive batch size; got {n}, {batch_size}")
        self.n, self.batch_size, self.steps = int(n), int(batch_size), int(steps)
        self.seed, self.start, self.world = int(seed), int(start), int(world)
        self.given_rank = None if rank is None else int(rank)
        self._global = self.batch_size * self.world
        self._perms: dict[int, list[int]] = {}

    @property
    def rank(self) -> int:
        """This process's rank (the given one, else ``torch.distributed``'s)."""
        if self.given_rank is not None:
            return self.given_rank
        distributed = torch.distributed
        if distributed.is_available() and distributed.is_initialized():
            return int(distributed.get_rank())
        return 0

    def __len__(self) -> int:
        # The whole epoch, also when resuming: Lightning counts the restored batches in it.
        return self.steps

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=generator).tolist()}
        return self._perms[epoch]

    def batch(self, step: int) -> list[int]:
        """Indices of this process's share of batch ``step``."""
        first = step * self._global
        indices = [self._perm(i // self.n)[i % self.n] for i in range(first, first + self._global)]
        return indices[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.steps):
            yield self.batch(step)


@dataclass
class _Splits:
    train: Dataset[dict[str, Any]]
    val: Dataset[dict[str, Any]]
    test: Dataset[dict[str, Any]]
    val_source: str


def _ddp_child() -> bool:
    """Whether this process is one that Lightning's DDP launcher started for rank 1 and up.

    Lightning runs the same command again for each further device, with ``LOCAL_RANK`` (and
    ``NODE_RANK`` across machines) set; such a process trains only.
    """
    return any(int(os.environ.get(key, "0") or 0) > 0 for key in ("LOCAL_RANK", "NODE_RANK"))


def _size(dataset: Dataset[Any]) -> int:
    return len(dataset)  # type: ignore[arg-type]


def _open_splits(config: FinetuneConfig, log: Callable[[str], None]) -> _Splits:
    d = config.data
    where = f"reader {d.reader}" + (f" under {d.root}" if d.root else "")
    train = open_split(d.reader, d.root, d.splits.train, d.options)
    test = open_split(d.reader, d.root, d.splits.test, d.options)
    val: Dataset[dict[str, Any]] | None = None
    reason = "the config asks for it (data.splits.val: null)"
    if d.splits.val is not None:
        # Only the default name falls back to a hold-out when the reader has no such split (or
        # it is empty on disk); a split the config names must exist, so a typo is not silent.
        named = d.splits.val != SplitNames().val
        try:
            val = open_split(d.reader, d.root, d.splits.val, d.options)
            if _size(val) == 0:
                val, reason = None, f"split {d.splits.val} has no samples"
        except UserInputError as error:
            if named:
                raise UserInputError(f"data.splits.val {d.splits.val}: {error}") from None
            reason = str(error)
        if val is None and named:
            raise UserInputError(
                f"split {d.splits.val} of {where} has no samples (data.splits.val; null holds "
                "out part of the training split instead)"
            )
    for name, split in ((d.splits.train, train), (d.splits.test, test)):
        if _size(split) == 0:
            raise UserInputError(f"split {name} of {where} has no samples")
    source = f"split {d.splits.val}"
    if val is None:
        n = _size(train)
        if n < 2:
            raise UserInputError(
                f"split {d.splits.train} of {where} has {n} sample(s); a validation hold-out "
                "needs at least 2"
            )
        # A fixed generator (not the run's seed): every seed validates on the same samples.
        order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
        k = min(n - 1, max(1, round(d.val_fraction * n)))
        val = Subset(train, sorted(order[:k]))
        train = Subset(train, sorted(order[k:]))
        source = f"{k} samples held out of split {d.splits.train} ({d.val_fraction:.0%})"
        log(f"[finetune] validation: {source}, because {reason}")
    return _Splits(train, val, test, source)


def _check_sample(config: FinetuneConfig, sample: Mapping[str, Any]) -> None:
    """The first training sample fits the task kind and classes (one-line errors)."""
    t = config.task
    image = sample["image"]
    if t.kind == "change" and image.ndim != 4:
        raise UserInputError(
            f"task kind change needs image series [T, C, H, W]; reader {config.data.reader} "
            f"gives {tuple(image.shape)}"
        )
    if t.kind != "change" and image.ndim != 3:
        raise UserInputError(
            f"task kind {t.kind} needs images [C, H, W]; reader {config.data.reader} gives "
            f"{tuple(image.shape)} (a time series: use kind change)"
        )
    key = {"classification": "label", "multilabel": "label", "regression": "target"}.get(
        t.kind, "mask"
    )
    if key not in sample:
        raise UserInputError(
            f"task kind {t.kind} needs '{key}' in each sample; reader {config.data.reader} gives "
            f"{sorted(k for k in sample if not k.startswith('_'))}"
        )
    if t.kind == "multilabel" and sample["label"].numel() != len(t.classes):
        raise UserInputError(
            f"task.classes names {len(t.classes)} labels; the reader's samples have "
            f"{sample['label'].numel()}"
        )
    if t.kind in ("segmentation", "change"):
        values = set(torch.unique(sample["mask"]).tolist()) - {t.ignore_index}
        if values and max(values) >= len(t.classes):
            raise UserInputError(
                f"the masks hold class {max(values)}; task.classes names {len(t.classes)} "
                "classes (and task.ignore_index is "
                f"{t.ignore_index})"
            )


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


def _encoder(config: FinetuneConfig) -> Any:
    from thinkingearth.models import create_encoder, list_models, load

    m = config.model
    if m.encoder in list_models():
        return create_encoder(m.encoder, **m.overrides)
    if m.overrides:
        raise UserInputError(
            f"model.overrides change a registry configuration ({', '.join(list_models())}); "
            f"{m.encoder} holds trained weights"
        )
    return load(m.encoder)


def _network(
    config: FinetuneConfig, in_channels: int, time_steps: int | None, size: int
) -> tuple[Any, dict[str, Any] | None]:
    """The network and, for a baseline, the arguments that rebuild it."""
    m, t = config.model, config.task
    if m.baseline is not None:
        from thinkingearth.models.baselines import build_baseline

        options = dict(m.baseline_options)
        options.setdefault("img_size", size)
        if "unet_widths" in options:
            options["unet_widths"] = tuple(options["unet_widths"])
        outputs = 1 if t.kind == "regression" else len(t.classes)
        net = build_baseline(
            m.baseline, t.kind, in_channels, outputs, time_steps=time_steps, **options
        )
        return net, {"name": m.baseline, "in_channels": in_channels, **options}
    from thinkingearth.tasks.protocols import EncoderBackbone

    return EncoderBackbone(_encoder(config), patch_size=m.patch_size, use_meta=m.use_meta), None


def _module(config: FinetuneConfig, net: Any, train: Dataset[dict[str, Any]]) -> TaskModule:
    t = config.task
    return build_task_module(
        t.kind,
        net,
        num_classes=1 if t.kind == "regression" else len(t.classes),
        protocol=config.protocol,
        lr=config.lr,
        class_names=t.classes or None,
        ignore_index=t.ignore_index,
        decoder_channels=config.model.decoder_channels,
        weight_decay=config.optim.weight_decay,
        warmup=config.optim.warmup,
        fusion=config.model.fusion,
        target_stats=target_stats_of(train) if t.kind == "regression" else (0.0, 1.0),
        uncertainty=config.head,
    )


def _dry_run(module: TaskModule, dataset: Dataset[dict[str, Any]], model_name: str) -> None:
    """One forward on two samples: a model that cannot read the data says so in one line."""
    batch = collate([dataset[i] for i in range(min(2, _size(dataset)))])
    module.eval()
    try:
        with torch.no_grad():
            module.step(batch)
    except UserInputError as error:
        raise UserInputError(f"model {model_name} cannot read this data: {error}") from None
    except (RuntimeError, ValueError, KeyError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserInputError(
            f"model {model_name} cannot read this data ({batch['sensor']!r} bands "
            f"{list(batch['bands'])[:6]}...): {first}"
        ) from None
    finally:
        module.train()


# ----------------------------------------------------------------------------------------------
# Best validation weights
# ----------------------------------------------------------------------------------------------


class _BestWeights:
    """The best validation weights so far, on disk (``best.safetensors`` + ``best.json``)."""

    def __init__(self, folder: Path, metric: str, higher: bool) -> None:
        self.tensors = folder / "best.safetensors"
        self.record = folder / "best.json"
        self.metric, self.higher = metric, higher
        self.value: float | None = None
        self.step = -1
        self.validated_at = -1  # the step of the latest validation, kept or not
        if self.record.is_file() and self.tensors.is_file():
            saved = json.loads(self.record.read_text())
            if saved.get("metric") == metric:
                self.value, self.step = float(saved["value"]), int(saved["step"])

    def better(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.value is None:
            return True
        return value > self.value if self.higher else value < self.value

    def offer(self, module: TaskModule, value: float, step: int) -> bool:
        from safetensors.torch import save_file

        self.validated_at = step
        if not self.better(value):
            return False
        state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
        self.tensors.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(self.tensors) as tmp:
            save_file(state, str(tmp))
        with atomic_file(self.record) as tmp:
            tmp.write_text(json.dumps({"metric": self.metric, "value": value, "step": step}))
        self.value, self.step = value, step
        return True

    def restore(self, module: TaskModule) -> None:
        from safetensors.torch import load_file

        module.load_state_dict(load_file(str(self.tensors)), strict=True)


def _best_callback(best: _BestWeights, log: Callable[[str], None]) -> Any:
    from lightning.pytorch import Callback

    class KeepBest(Callback):
        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            if trainer.sanity_checking or not trainer.is_global_zero:
                return
            # An adaptation's module validates and saves the task module it wraps.
            task = pl_module if isinstance(pl_module, TaskModule) else pl_module.task
            value = task.val_results.get(best.metric, math.nan)
            step = int(trainer.global_step)
            kept = best.offer(task, float(value), step)
            log(
                f"[finetune] step {step}: validation {best.metric} {float(value):.4f}"
                + (" (best so far, kept)" if kept else f" (best {best.value:.4f} at {best.step})")
            )

    return KeepBest()


# ----------------------------------------------------------------------------------------------
# Domains: source and target data, adaptation, the oracle
# ----------------------------------------------------------------------------------------------


def _open_domains(config: FinetuneConfig, say: Callable[[str], None]) -> DomainSplits:
    """The source and target data of the split protocol (one-line errors for empty domains)."""
    from thinkingearth.data.domains import open_domain_splits

    d, spec = config.data, config.split
    domains = open_domain_splits(
        d.reader, d.root, d.options, d.splits, spec, val_fraction=d.val_fraction, log=say
    )
    where = f"split protocol {domains.protocol}"
    if _size(domains.train) == 0:
        raise UserInputError(
            f"source domain(s) {', '.join(domains.source_domains)} of {where} have no training "
            "samples"
        )
    for name in domains.target_domains:
        if name not in domains.test or _size(domains.test[name]) == 0:
            raise UserInputError(f"target domain {name} of {where} has no test samples")
    if config.adapt.needs_target and (domains.unlabelled is None or _size(domains.unlabelled) == 0):
        raise UserInputError(
            f"adaptation {config.adapt.method} needs unlabelled target data; target domain(s) "
            f"{', '.join(domains.target_domains)} of {where} give none (split.unlabelled_fraction "
            f"{spec.unlabelled_fraction})"
        )
    if spec.oracle and (domains.target_train is None or _size(domains.target_train) < 2):
        raise UserInputError(
            f"split.oracle trains on labelled target samples; target domain(s) "
            f"{', '.join(domains.target_domains)} of {where} have fewer than 2 beside the test set"
        )
    return domains


def _domain_splits(domains: DomainSplits) -> _Splits:
    """Source train and validation; the target domains' test samples pooled."""
    targets = [domains.test[name] for name in domains.target_domains]
    test = targets[0] if len(targets) == 1 else ConcatDataset(targets)
    return _Splits(domains.train, domains.val, test, domains.val_source)


def _check_target_bands(
    config: FinetuneConfig, domains: DomainSplits, sensor: str, bands: tuple[str, ...]
) -> None:
    """A fixed-band baseline reads the source's bands only: a target with others is refused."""
    baseline = config.model.baseline
    if baseline is None:  # the any-sensor encoder reads any registry bands
        return
    for name in domains.target_domains:
        sample = domains.test[name][0]
        target_sensor, target_bands = str(sample["sensor"]), tuple(sample["bands"])
        if target_bands != bands:
            missing = [b for b in bands if b not in target_bands]
            raise UserInputError(
                f"model.baseline {baseline} reads the fixed bands {', '.join(bands)} of {sensor}; "
                f"target domain {name} ({target_sensor}) has {', '.join(target_bands)}"
                + (f" (missing {', '.join(missing)})" if missing else "")
                + "; use the any-sensor encoder (model.encoder) across sensors"
            )


def _fit_target_normalisation(
    normaliser: Normaliser, domains: DomainSplits, samples: int
) -> list[str]:
    """Statistics of a target sensor the registry has none for, from UNLABELLED target images.

    Returns:
        One line per estimated sensor, for the log and the report.
    """
    notes: list[str] = []
    for name in domains.target_domains:
        first = domains.test[name][0]
        sensor, bands = str(first["sensor"]), tuple(first["bands"])
        if not normaliser.needs_fit(sensor, bands):
            continue
        pool = domains.unlabelled
        images: list[torch.Tensor] = []
        for i in range(min(_size(pool), 4 * samples) if pool is not None else 0):
            sample = pool[i]  # type: ignore[index]
            if str(sample["sensor"]) == sensor and tuple(sample["bands"]) == bands:
                images.extend(sample["image"].reshape(-1, *sample["image"].shape[-3:]))
                if len(images) >= samples:
                    break
        if not images:
            raise UserInputError(
                f"target sensor {sensor} has no published normalisation statistics and the "
                f"target domains give no unlabelled {sensor} images to estimate them from"
            )
        normaliser.fit(sensor, bands, images)
        notes.append(
            f"normalisation of target sensor {sensor}: estimated from {len(images)} unlabelled "
            "target images (the sensor registry publishes no statistics for it)"
        )
    return notes


def _wrap(adaptation: Adaptation | None, module: TaskModule, config: FinetuneConfig) -> Any:
    """The LightningModule that trains ``module`` with adaptation and/or augmentation."""
    if adaptation is None:  # method none with augmentation (domain generalisation)
        adaptation = get_adaptation("none")
    return adaptation.wrap(module, config.adapt)


class _PairedBatches(Sampler[list[tuple[int, int | None]]]):
    """Source batches of a :class:`StepBatchSampler` paired with target batches drawn from
    ``(seed, step)`` as well, so a resumed run sees the same pairs as an uninterrupted one."""

    def __init__(self, source: StepBatchSampler, target_size: int | None) -> None:
        """Pair ``source``'s batches with batches of a target of ``target_size`` samples."""
        self.source = source
        self.target = (
            None
            if not target_size
            else StepBatchSampler(
                target_size,
                source.batch_size,
                source.steps,
                source.seed + 7919,  # another stream than the source order
                source.start,
                source.given_rank,
                source.world,
            )
        )

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self) -> Iterator[list[tuple[int, int | None]]]:
        for step in range(self.source.start, self.source.steps):
            first = self.source.batch(step)
            second = self.target.batch(step) if self.target is not None else [None] * len(first)
            yield list(zip(first, second, strict=True))


class _Pairs(Dataset[dict[str, Any]]):
    """``(source index, target index)`` -> ``{"source": sample, "target": sample | None}``."""

    def __init__(
        self, source: Dataset[dict[str, Any]], target: Dataset[dict[str, Any]] | None
    ) -> None:
        """Keep both datasets."""
        self.source, self.target = source, target

    def __getitem__(self, index: tuple[int, int | None]) -> dict[str, Any]:  # type: ignore[override]
        i, j = index
        target = self.target[j] if self.target is not None and j is not None else None
        return {"source": self.source[i], "target": target}


def _evaluator(t: TrainerSection) -> Any:
    """A one-device Lightning trainer that only tests (no logger, bar or summary)."""
    import lightning as L

    return L.Trainer(
        accelerator=t.accelerator,
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        precision=t.precision,
    )


def _eval_loader(
    config: FinetuneConfig, dataset: Dataset[dict[str, Any]], batch_size: int | None = None
) -> DataLoader[Any]:
    return DataLoader(
        dataset,
        batch_size=batch_size or config.data.eval_batch_size,
        shuffle=False,
        collate_fn=collate,
        num_workers=config.data.num_workers,
    )


def _fit(
    config: FinetuneConfig,
    trained: Any,
    train: Dataset[dict[str, Any]],
    val: Dataset[dict[str, Any]],
    best: _BestWeights,
    out: Path,
    *,
    start: int,
    ckpt_path: Path | None,
    unlabelled: Dataset[dict[str, Any]] | None,
    callbacks: Sequence[Any],
    log: Callable[[str], None] | None,
    say: Callable[[str], None],
) -> int:
    """Train ``trained`` (a TaskModule, or an adaptation wrapping one) and keep the best
    validation weights of its task module in ``best``; returns the steps reached."""
    import lightning as L

    from thinkingearth.progress import progress_callbacks
    from thinkingearth.runs import (
        AtomicCheckpointIO,
        ResumableCSVLogger,
        StepCheckpoint,
        StepSeed,
        StopOnSignal,
        stop_on_sigterm,
    )

    t = config.trainer
    folder = best.tensors.parent
    n = _size(train)
    batch = max(1, min(config.data.batch_size, n))
    # The data order is a function of (seed, step): a resumed run starts at its step.
    # With DDP each process takes its share of each step's global batch; the rank is known only
    # once the processes run, so the sampler asks torch.distributed when it draws.
    sampler = StepBatchSampler(
        n, batch, t.max_steps, config.seed, start=start, rank=None, world=t.devices
    )
    loader: DataLoader[Any]
    if isinstance(trained, TaskModule):
        loader = DataLoader(
            train, batch_sampler=sampler, collate_fn=collate, num_workers=config.data.num_workers
        )
    else:  # an adaptation's module takes {"source": batch, "target": batch | None}
        pairs = _PairedBatches(sampler, _size(unlabelled) if unlabelled is not None else None)
        loader = DataLoader(
            _Pairs(train, unlabelled),
            batch_sampler=pairs,
            collate_fn=collate_sides,
            num_workers=config.data.num_workers,
        )
    progress, bar = progress_callbacks(log, "[finetune]")
    val_every = min(t.val_every, t.max_steps)
    trainer = L.Trainer(
        max_steps=t.max_steps,
        # The whole run is one pass of the sampler; no epoch limit, so a finished run resumed
        # with a raised max_steps trains on (Lightning's restored loop has ended epoch 0).
        max_epochs=-1,
        accelerator=t.accelerator,
        devices=t.devices,
        # The any-sensor encoder leaves parts unused per batch (e.g. the variable hypernetwork
        # on spectral bands), which plain DDP refuses after the first step.
        strategy="ddp_find_unused_parameters_true" if t.devices > 1 else "auto",
        precision=t.precision,
        callbacks=[
            StepCheckpoint(folder, t.checkpoint_every, t.keep_checkpoints),
            StopOnSignal(),
            StepSeed(config.seed),
            _best_callback(best, say),
            *progress,
            *callbacks,
        ],
        plugins=[AtomicCheckpointIO()],
        logger=ResumableCSVLogger(
            out, name="logs", version="csv", flush_logs_every_n_steps=t.log_every
        ),
        log_every_n_steps=t.log_every,
        val_check_interval=val_every,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_progress_bar=bar,
        enable_model_summary=False,
        use_distributed_sampler=False,
        default_root_dir=out,
    )
    with stop_on_sigterm(trainer, f"its checkpoint is in {folder}; run again with --resume"):
        trainer.fit(
            trained,
            train_dataloaders=loader,
            val_dataloaders=_eval_loader(config, val),
            ckpt_path=str(ckpt_path) if ckpt_path is not None else None,
            weights_only=True,
        )
    steps = int(trainer.global_step)
    # The last steps were not validated (max_steps not a multiple of val_every). Only rank 0
    # keeps the best weights, so it decides; with DDP every process must take part.
    if trainer.strategy.broadcast(best.validated_at != steps, src=0):
        trainer.validate(trained, dataloaders=_eval_loader(config, val), verbose=False)
    distributed = torch.distributed
    if distributed.is_available() and distributed.is_initialized():
        # Training is over: rank 0 tests and writes alone, so its metrics must not wait for
        # the other processes (which end after this).
        distributed.barrier()
        distributed.destroy_process_group()
    return steps


def _train_oracle(
    config: FinetuneConfig,
    domains: DomainSplits,
    normaliser: Normaliser,
    test: Dataset[dict[str, Any]],
    out: Path,
    size: int,
    time_steps: int | None,
    say: Callable[[str], None],
) -> dict[str, float]:
    """The same configuration trained (without adaptation) on the target domains' LABELLED
    training samples, selected on a hold-out of them, scored on the same target test samples.

    Its files go to ``OUT/oracle`` (deleted first: an oracle always trains from its start)."""
    import lightning as L

    from thinkingearth.progress import QuietLightning

    raw = domains.target_train
    assert raw is not None  # checked by _open_domains
    n = _size(raw)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    k = min(n - 1, max(1, round(config.data.val_fraction * n)))
    folder = out / "oracle"
    remove_outputs(out, ("oracle",))
    cache = config.data.cache
    train_all = NormalisedDataset(Subset(raw, sorted(order[k:])), normaliser, "oracle", cache)
    train = Subset(train_all, label_fraction_indices(n - k, config.fraction, config.seed))
    val = NormalisedDataset(Subset(raw, sorted(order[:k])), normaliser, "oracle-val", cache)
    say(
        f"[finetune] oracle: training on {len(train)} labelled target samples, validating on "
        f"{k} others (target labels), scoring on the same {_size(test)} target test samples"
    )
    L.seed_everything(config.seed, workers=True, verbose=False)
    net, _ = _network(config, int(raw[0]["image"].shape[-3]), time_steps, size)
    module = _module(config, net, train)
    metric, higher = config.task.primary_metric
    best = _BestWeights(folder / "checkpoints", metric, higher)
    t = config.trainer
    with QuietLightning():
        _fit(
            config,
            module,
            train,
            val,
            best,
            folder,
            start=0,
            ckpt_path=None,
            unlabelled=None,
            callbacks=(),
            log=None,
            say=lambda line: say(line.replace("[finetune]", "[finetune] oracle:", 1)),
        )
        if best.value is not None:
            best.restore(module)
        evaluator = _evaluator(t)
        evaluator.test(module, dataloaders=_eval_loader(config, test), verbose=False)
    return dict(module.test_results)


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------


def _check_same_config(out: Path, config: FinetuneConfig) -> None:
    saved_path = out / "config.yaml"
    if not saved_path.is_file():
        return
    saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
    # Runs from before the head section trained the plain (deterministic) head.
    saved.setdefault("head", UncertaintyHead().to_dict())
    # Runs from before domain shift had no split protocol and no adaptation.
    saved.setdefault("split", plain(dataclasses.asdict(SplitSpec())))
    saved.setdefault("adapt", plain(dataclasses.asdict(AdaptSection())))
    from thinkingearth.runs import check_same_config  # runs imports Lightning: lazily

    check_same_config(
        saved,
        config.to_dict(),
        resumable=RESUMABLE_CHANGES,
        opaque=("overrides", "options", "groups"),
        where=str(saved_path),
    )


def resolve_config(
    config: FinetuneConfig | str | Path,
    *,
    data_root: str | Path | None = None,
    encoder: str | None = None,
    model: str | None = None,
    protocol: str | None = None,
    fraction: float | None = None,
    max_steps: int | None = None,
    seed: int | None = None,
    accelerator: str | None = None,
    devices: int | None = None,
    adapt: str | None = None,
    oracle: bool | None = None,
    encoder_overrides: Mapping[str, Any] | None = None,
) -> FinetuneConfig:
    """The configuration with the command line's overrides merged in, validated.

    Args:
        config: A configuration, its YAML file or a shipped name.
        data_root: ``data.root``.
        encoder: ``model.encoder`` (and no baseline).
        model: ``model.baseline``.
        protocol: ``protocol``.
        fraction: ``fraction``.
        max_steps: ``trainer.max_steps``.
        seed: ``seed``.
        accelerator: ``trainer.accelerator``.
        devices: ``trainer.devices``.
        adapt: ``adapt.method`` (``none`` for source-only training).
        oracle: ``split.oracle``.
        encoder_overrides: ``model.overrides`` for ``encoder``: the configuration's own describe
            its own encoder and are dropped with ``encoder``; these (the command line's
            ``--set model.overrides...``) are kept.

    Raises:
        UserInputError: For an unknown name, a bad file or an invalid result.
    """
    if not isinstance(config, FinetuneConfig):
        config = load_finetune_config(str(config))
    overrides: dict[str, Any] = {}
    if data_root is not None:
        overrides["data"] = {"root": str(data_root)}
    if encoder is not None:
        overrides["model"] = {"encoder": str(encoder), "baseline": None}
    if model is not None:
        overrides.setdefault("model", {})["baseline"] = str(model)
    for key, value in (("protocol", protocol), ("fraction", fraction), ("seed", seed)):
        if value is not None:
            overrides[key] = value
    trainer = {
        k: v
        for k, v in (("max_steps", max_steps), ("accelerator", accelerator), ("devices", devices))
        if v is not None
    }
    if trainer:
        overrides["trainer"] = trainer
    if adapt is not None:
        overrides["adapt"] = {"method": str(adapt)}
    if oracle is not None:
        overrides["split"] = {"oracle": bool(oracle)}
    if not overrides:
        return config.validate()
    from thinkingearth.tasks.finetune_config import finetune_config_from_dict

    data = merge(config.to_dict(), overrides)
    if encoder is not None:  # the config's overrides describe its own registry encoder
        data["model"]["overrides"] = dict(encoder_overrides or {})
    return finetune_config_from_dict(data)


def _write_text(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def finetune(
    config: FinetuneConfig | str | Path,
    out: str | Path,
    *,
    data_root: str | Path | None = None,
    encoder: str | None = None,
    model: str | None = None,
    protocol: str | None = None,
    fraction: float | None = None,
    max_steps: int | None = None,
    seed: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    accelerator: str | None = None,
    devices: int | None = None,
    adapt: str | None = None,
    oracle: bool | None = None,
    callbacks: Sequence[Any] = (),
    log: Callable[[str], None] | None = print,
) -> FinetuneResult:
    """Fine-tune a model on labelled data, save it, and score it on the test split.

    Args:
        config: A configuration, its YAML file or a shipped name (``synthetic-flood`` ...).
        out: Output folder (see the module docstring).
        data_root: The data set's root (``data.root``).
        encoder: Encoder name or checkpoint path (``model.encoder``; clears a baseline).
        model: A baseline name (``model.baseline``; protocol ``finetune``).
        protocol: ``linear-probe``, ``frozen-upernet`` or ``finetune``.
        fraction: Share of training labels.
        max_steps: Optimiser steps.
        seed: Seed.
        resume: Continue from the latest checkpoint in ``out/checkpoints``.
        overwrite: Replace a run in ``out`` (its :data:`RUN_OUTPUTS` are deleted once the data
            and model are checked).
        accelerator: ``cpu``, ``gpu`` or ``auto``.
        devices: Devices (processes).
        adapt: Adaptation method (``adapt.method``; needs a ``split.protocol``).
        oracle: Also train on the target domains' labels and report the gap (``split.oracle``).
        callbacks: Extra Lightning callbacks.
        log: Where progress lines go (``None`` = silent).

    Returns:
        A :class:`FinetuneResult`.

    Raises:
        UserInputError: For an invalid configuration, data the reader cannot find, a split
            with no samples, a model that cannot read the data, ``resume`` without a checkpoint
            or with a different configuration, or ``out`` holding another run (without
            ``resume`` or ``overwrite``). Nothing is written to ``out`` before these checks pass.
        Terminated: SIGTERM arrived (:mod:`thinkingearth.stopping`); a checkpoint of the step
            reached is saved when training had started.
    """
    import lightning as L

    from thinkingearth.progress import QuietLightning
    from thinkingearth.runs import list_checkpoints, read_checkpoint_file, truncate_metrics
    from thinkingearth.tasks.checkpoint import save_task

    began = time.perf_counter()
    say = log or (lambda _message: None)
    if resume and overwrite:
        raise UserInputError("give --resume (continue the run in OUT) or --overwrite, not both")
    config = resolve_config(
        config,
        data_root=data_root,
        encoder=encoder,
        model=model,
        protocol=protocol,
        fraction=fraction,
        max_steps=max_steps,
        seed=seed,
        accelerator=accelerator,
        devices=devices,
        adapt=adapt,
        oracle=oracle,
    )
    if config.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        raise UserInputError("--accelerator gpu: no CUDA device is available")

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} is a file; expected a folder")
    check_writable_parent(out / "config.yaml")
    folder = out / "checkpoints"
    found = list_checkpoints(folder)
    resumed_from: int | None = None
    ckpt_path: Path | None = None
    if resume:
        if not found:
            raise UserInputError(
                f"--resume: no checkpoint in {folder}; start without --resume to begin a new run"
            )
        _check_same_config(out, config)
        resumed_from, ckpt_path = found[-1]
        read_checkpoint_file(ckpt_path)  # a corrupt file: one line now, not a traceback later
        if resumed_from >= config.trainer.max_steps:
            raise UserInputError(
                f"--resume: the run already reached step {resumed_from} of max_steps "
                f"{config.trainer.max_steps}; raise --max-steps to train further"
            )
    elif not overwrite and (found or (out / "model.safetensors").exists()):
        raise UserInputError(
            f"{out} already holds a fine-tuning run; pass --resume to continue it, --overwrite "
            "to replace it, or choose another --out"
        )
    if config.trainer.threads is not None:
        torch.set_num_threads(config.trainer.threads)

    # Data, model and a dry run: every user error surfaces before OUT is touched.
    say(f"[finetune] {config.name}: reading {config.data.reader} data ...")
    domains = _open_domains(config, say) if config.split.protocol != "none" else None
    splits = _open_splits(config, say) if domains is None else _domain_splits(domains)
    first = splits.train[0]
    _check_sample(config, first)
    sensor, bands = str(first["sensor"]), tuple(first["bands"])
    image = first["image"]
    size = int(image.shape[-1])
    time_steps = int(image.shape[0]) if config.task.kind == "change" else None
    normaliser = fit_normaliser(splits.train, config.data.stats_samples)
    notes: list[str] = []
    if domains is not None:
        _check_target_bands(config, domains, sensor, bands)
        notes = _fit_target_normalisation(normaliser, domains, config.data.stats_samples)
    cache = config.data.cache
    train_all = NormalisedDataset(splits.train, normaliser, "train", cache)
    indices = label_fraction_indices(_size(train_all), config.fraction, config.seed)
    train = Subset(train_all, indices)
    val = NormalisedDataset(splits.val, normaliser, "val", cache)
    test = NormalisedDataset(splits.test, normaliser, "test", cache)
    by_domain: dict[str, Dataset[dict[str, Any]]] = {}
    unlabelled: Dataset[dict[str, Any]] | None = None
    if domains is not None:
        by_domain = {
            name: NormalisedDataset(dataset, normaliser, f"test-{name}", cache)
            for name, dataset in domains.test.items()
        }
        if domains.unlabelled is not None:
            unlabelled = NormalisedDataset(domains.unlabelled, normaliser, "unlabelled", cache)
    L.seed_everything(config.seed, workers=True, verbose=False)
    net, baseline_args = _network(config, int(image.shape[-3]), time_steps, size)
    module = _module(config, net, train)
    model_name = config.model.baseline or config.model.encoder
    _dry_run(module, train, model_name)
    if domains is not None:  # the model reads every target domain (cross-sensor: other bands)
        for name in domains.target_domains:
            _dry_run(module, by_domain[name], model_name)
    adaptation = None if config.adapt.method == "none" else get_adaptation(config.adapt.method)
    trained: Any = module
    if not config.adapt.plain:  # (a post-hoc method that cannot act refuses here, not later)
        trained = _wrap(adaptation, module, config)
    pairs = unlabelled if adaptation is not None and adaptation.during_training else None
    say(
        f"[finetune] {len(train)} training samples (label fraction {config.fraction:g} of "
        f"{_size(train_all)}), {_size(val)} validation ({splits.val_source}), {_size(test)} "
        f"test; {sensor} {len(bands)} bands, {size} px; {model_name}, {config.protocol}"
    )
    if domains is not None:
        say(
            f"[finetune] {domains.protocol}: source {', '.join(domains.source_domains)} -> "
            f"target {', '.join(domains.target_domains)}; "
            + (f"{_size(unlabelled)} unlabelled target samples; " if unlabelled else "")
            + f"adaptation {config.adapt.method}"
        )
        for note in notes:
            say(f"[finetune] {note}")

    child = config.trainer.devices > 1 and _ddp_child()  # (LOCAL_RANK alone may be a cluster's)
    if overwrite and not child:
        for path in remove_outputs(out, RUN_OUTPUTS):
            say(f"[finetune] --overwrite: deleted {path}")
    out.mkdir(parents=True, exist_ok=True)
    if not child:  # rank 0 owns OUT; the other processes only train
        _write_text(out / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    if resumed_from is not None:
        if not child:
            truncate_metrics(out / "logs" / "csv" / "metrics.csv", resumed_from)
        say(f"[finetune] resuming from {ckpt_path.name} (step {resumed_from})")  # type: ignore[union-attr]

    t = config.trainer
    metric, higher = config.task.primary_metric
    best = _BestWeights(folder, metric, higher)
    with QuietLightning():
        steps = _fit(
            config,
            trained,
            train,
            val,
            best,
            out,
            start=resumed_from or 0,
            ckpt_path=ckpt_path,
            unlabelled=pairs,
            callbacks=callbacks,
            log=log,
            say=say,
        )
        if child:
            # Lightning started this process (the command run again) to train its share of
            # each batch; rank 0 selects, scores and writes the model, so this one ends here.
            raise SystemExit(0)
        if best.value is not None:
            best.restore(module)
        else:
            say("[finetune] validation gave no finite score; the last weights are kept")
        if adaptation is not None and unlabelled is not None:
            # Post-hoc methods (AdaBN, TENT) adapt the selected weights to the unlabelled target
            # (the others return the module as it is).
            if not adaptation.during_training:
                say(f"[finetune] adaptation {config.adapt.method} on the unlabelled target ...")
            module = adaptation.after_training(
                module, config.adapt, _eval_loader(config, unlabelled, config.data.batch_size)
            )
        evaluator = _evaluator(t)
        evaluator.test(module, dataloaders=_eval_loader(config, test), verbose=False)
        device = evaluator.strategy.root_device  # where the test evaluations run too
        metrics = dict(module.test_results)
        per_domain: dict[str, dict[str, float]] = {}
        source_metrics: dict[str, float] = {}
        if domains is not None:
            for name, dataset in by_domain.items():
                evaluator.test(module, dataloaders=_eval_loader(config, dataset), verbose=False)
                per_domain[name] = dict(module.test_results)
            sources = [by_domain[name] for name in domains.source_domains if name in by_domain]
            if sources:
                evaluator.test(
                    module, dataloaders=_eval_loader(config, ConcatDataset(sources)), verbose=False
                )
                source_metrics = dict(module.test_results)
            module.test_results = dict(metrics)
    from thinkingearth.tasks.finetune_report import confusion_matrix, write_report

    confusion = confusion_matrix(module, _eval_loader(config, test), config.task)
    model_path = save_task(
        module.cpu().eval(),
        out / "model",
        task=config.task.name,
        classes=config.task.classes,
        sensor=sensor,
        bands=bands,
        normaliser=normaliser,
        tile=config.model.tile or size,
        acquisitions=time_steps,
        baseline=baseline_args,
    )
    # After the model is saved: an evaluation that fails costs its own results only. It runs
    # on the device the model was trained on (a real test split is slow on the CPU).
    extra, sections, errors = _run_test_evaluations(
        module.to(device), _eval_loader(config, test), config, out, metrics, say
    )
    module.cpu()
    oracle: dict[str, float] | None = None
    if domains is not None and config.split.oracle:
        oracle = _train_oracle(config, domains, normaliser, test, out, size, time_steps, say)
    record = {
        "config": config.name,
        "task": config.task.name,
        "kind": config.task.kind,
        "model": model_name,
        "protocol": config.protocol,
        "uncertainty": config.head.uncertainty,
        "fraction": config.fraction,
        "seed": config.seed,
        "primary_metric": metric,
        "primary": metrics.get(metric, math.nan),
        "steps": steps,
        "best_step": best.step,
        "best_val": best.value,
        "train_samples": len(train),
        "val_samples": _size(val),
        "test_samples": _size(test),
        "validation": splits.val_source,
        "normalisation": type(normaliser).mode(sensor, bands),
        "seconds": round(time.perf_counter() - began, 2),
        "metrics": metrics,  # the task's own (the report's table; evaluations have sections)
    }
    domain_document: dict[str, Any] = {}
    domain_text: str | None = None
    if domains is not None:
        from thinkingearth.tasks.finetune_report import domain_section, domain_summary
        from thinkingearth.tasks.finetune_report import oracle_gap as gap_of

        targets = list(domains.target_domains)
        domain_document = {
            "per_domain": per_domain,
            **domain_summary(per_domain, targets),
            "source": source_metrics,
            "split": {
                "protocol": domains.protocol,
                "source": list(domains.source_domains),
                "target": targets,
            },
            "adapt": dataclasses.asdict(config.adapt),
        }
        if oracle is not None:
            domain_document["oracle"] = oracle
            domain_document["oracle_gap"] = gap_of(oracle, metrics)
        record["unlabelled_samples"] = _size(unlabelled) if unlabelled is not None else 0
        record["normalisation_notes"] = notes
        record["test_split"] = "the target domains' test samples (pooled)"
        domain_text = domain_section(
            per_domain,
            targets,
            list(domains.source_domains),
            metric,
            protocol=domains.protocol,
            method=config.adapt.method,
            notes=[
                f"test metrics: the target domains' test samples pooled ({_size(test)}); "
                f"{splits.val_source}",
                *notes,
            ],
            oracle=oracle,
        ) + (
            "\nThe oracle is the same configuration trained on the target domains' labelled "
            "training samples (selected on a hold-out of them); oracle_gap in metrics.json is "
            "its score minus this run's (errors: this run's minus its), so positive = below "
            "the oracle.\n"
            if oracle is not None
            else ""
        )
    metrics = {**metrics, **extra}
    metrics_path = out / "metrics.json"
    # The test metrics at the top level, under bench's results.csv keys; the run beside them.
    run = {k: v for k, v in record.items() if k != "metrics"}
    if errors:
        run["evaluation_errors"] = errors
    document = {**metrics, **domain_document, "run": run}
    _write_text(metrics_path, json.dumps(_finite(document), indent=2) + "\n")
    report = write_report(
        out,
        config,
        record,
        confusion,
        log_csv=out / "logs" / "csv",
        sections=sections,
        domains=domain_text,
    )
    say(
        f"[finetune] test {metric} {metrics.get(metric, math.nan):.4f} (weights of step "
        f"{best.step}); model: {model_path}"
    )
    return FinetuneResult(
        out=out,
        model=model_path,
        metrics=metrics,
        metrics_path=metrics_path,
        report=report,
        steps=steps,
        best_step=best.step,
        seconds=time.perf_counter() - began,
        resumed_from=resumed_from,
    )


def _run_test_evaluations(
    module: TaskModule,
    loader: DataLoader[Any],
    config: FinetuneConfig,
    out: Path,
    metrics: Mapping[str, float],
    say: Callable[[str], None],
) -> tuple[dict[str, float], list[str], dict[str, str]]:
    """Run every test evaluation on the test split.

    Args:
        module: The saved model.
        loader: The test split.
        config: The run's configuration.
        out: The run folder (evaluations write their figures there).
        metrics: The task's test metrics (an evaluation may not replace them).
        say: The progress log.

    Returns:
        The evaluations' metrics, their report sections (markdown) in evaluation order, and
        ``{name: error}`` for those that failed (their section says so; nothing is raised).
    """
    extra: dict[str, float] = {}
    sections: list[str] = []
    errors: dict[str, str] = {}
    for name, evaluate in test_evaluations().items():
        say(f"[finetune] test evaluation {name} ...")
        try:
            result = evaluate(
                module,
                loader,
                config.task.kind,
                ignore_index=config.task.ignore_index,
                out=out,
            )
            if not isinstance(result, TestEvaluation):
                raise TypeError(f"returned {type(result).__name__}, not a TestEvaluation")
            clash = sorted(set(result.metrics) & (set(metrics) | set(extra)))
            if clash:
                raise ValueError(f"its metric keys {clash} are the task's or another's")
        except Exception as error:  # a plugin's failure must not lose the trained model
            message = f"{type(error).__name__}: {error}".splitlines()[0]
            errors[name] = message
            _logger.warning("test evaluation %s failed", name, exc_info=True)
            say(f"[finetune] test evaluation {name} FAILED ({message}); its results are missing")
            sections.append(
                f"## Test evaluation {name}: failed\n\n"
                f"The evaluation raised `{message}`; its metrics are not in metrics.json.\n"
            )
            continue
        extra.update({k: float(v) for k, v in result.metrics.items()})
        if result.markdown:
            sections.append(result.markdown.rstrip() + "\n")
    return extra, sections, errors


def _finite(value: Any) -> Any:
    """JSON has no NaN: non-finite floats become ``null``."""
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
