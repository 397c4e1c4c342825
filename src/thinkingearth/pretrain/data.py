"""Pretraining data: sources per sensor, co-registered pairs, and a resumable grouped sampler.

* Each batch holds **one sensor** (and one band set), so any mix of sensors trains in one run:
  :class:`GroupedBatchSampler` cuts every sensor's shuffled samples into batches and shuffles the
  batches of all sensors together, one seeded plan per pass over the data.
* The order is a pure function of ``(seed, step)``: batch ``step`` of the run is always the same,
  on every rank, so resuming at step ``s`` restarts the stream at ``s`` exactly.
  :class:`ResumableLoader` exposes that position as Lightning's loader ``state_dict`` (saved in
  every checkpoint) and restores it on ``--resume``.
* Under DDP all ranks read the same sensor at the same step (each its own slice of a global batch
  of ``batch_size * world_size`` samples), so every rank uses the same parameters every step.
* :class:`PairedSynthetic` serves co-registered samples of two sensors of one place (for the
  cross-sensor recipe), cut from one generated scene.
* Real sources (``data.source`` ``folder``, ``bigearthnet``, ``kurosiwo``, ``ssl4eo-s12``,
  ``copernicus-pretrain``) come from :mod:`thinkingearth.pretrain.sources`: map-style datasets
  whose sample ``i`` is a pure function of ``(seed, i)``, so they go through the same sampler
  and resume the same way. Windows with no valid pixel are skipped there; the samples say how
  many, and :meth:`PretrainDataModule.on_before_batch_transfer` adds them up
  (:attr:`PretrainDataModule.nodata_windows`, reported in the run's log and summary).
* ``data.source: shards`` streams :class:`~thinkingearth.pretrain.shards.ShardDataset` (one
  stream per sensor group, split across ranks and workers there); :class:`ShardLoader` picks the
  group of each step with the grouped sampler's seeded plan, so every rank reads the same sensor
  at a step, and resumes each group's stream at the samples it had trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Any

import lightning as L
import numpy as np
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from thinkingearth.data.sample import collate, collate_sides
from thinkingearth.data.synthetic import SyntheticCopernicus, scene_to_sample
from thinkingearth.data.transforms import Normaliser
from thinkingearth.errors import UserInputError
from thinkingearth.pretrain.config import PretrainConfig
from thinkingearth.sensors import get_sensor

__all__ = [
    "GroupedBatchSampler",
    "PairedSynthetic",
    "PretrainDataModule",
    "ResumableLoader",
    "ShardLoader",
    "SharedSceneSamples",
    "collate_pairs",
    "fit_normaliser",
]

#: Samples per sensor used to estimate statistics where the registry publishes none.
STATS_SAMPLES = 32


class PairedSynthetic(Dataset[dict[str, Any]]):
    """Co-registered samples of two sensors of the same synthetic scene.

    Each item is ``{"a": Sample, "b": Sample}``: both are cut from one generated scene, so they
    show the same place on the same grid (the positives of cross-sensor contrastive learning).

    Args:
        a: The first sensor's dataset.
        b: The second sensor's dataset (same seed, split, size and length as ``a``).
    """

    def __init__(self, a: SyntheticCopernicus, b: SyntheticCopernicus) -> None:
        """Check that both datasets draw the same scenes."""
        if (a.seed, a.split, a.n, a.config.shape) != (b.seed, b.split, b.n, b.config.shape):
            raise ValueError("paired datasets must share seed, split, n and size")
        self.a, self.b = a, b
        self._cache: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.a)

    @staticmethod
    def _cut(scene: Any, ds: SyntheticCopernicus) -> dict[str, Any]:
        full = ("NO2",) if ds.sensor == "sentinel-5p" else get_sensor(ds.sensor).band_names
        sample = scene_to_sample(scene, ds.sensor, "none", None, full)
        channels = [full.index(b) for b in ds.bands]
        sample["image"] = sample["image"][channels].contiguous()
        sample["bands"] = tuple(ds.bands)
        return sample

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index not in self._cache:
            scene = self.a.scene(index)
            self._cache[index] = {"a": self._cut(scene, self.a), "b": self._cut(scene, self.b)}
        item = self._cache[index]
        return {"a": dict(item["a"]), "b": dict(item["b"])}


class _SceneSampleCache:
    """Samples of several sensors cut from each generated scene once (scenes are the cost)."""

    def __init__(self, datasets: Mapping[str, SyntheticCopernicus]) -> None:
        self.datasets = dict(datasets)
        self.samples: dict[tuple[str, int], dict[str, Any]] = {}

    def get(self, sensor: str, index: int) -> dict[str, Any]:
        key = (sensor, index)
        if key not in self.samples:
            source = self.datasets[sensor]
            scene = source.scene(index)
            for name, ds in self.datasets.items():
                same_world = (ds.seed, ds.split, ds.config) == (
                    source.seed,
                    source.split,
                    source.config,
                )
                if same_world and index < len(ds):
                    self.samples[(name, index)] = PairedSynthetic._cut(scene, ds)
        return dict(self.samples[key])


class SharedSceneSamples(Dataset[dict[str, Any]]):
    """One sensor's samples of the synthetic world, sharing generated scenes with other sensors.

    The sensors of a run read the same scenes (same seed, split and size); each scene is generated
    once and cut into every sensor's sample, halving the data cost of an S1 + S2 run.

    Args:
        cache: The shared cache of the run's sensors.
        sensor: This dataset's sensor (canonical name).
    """

    def __init__(self, cache: _SceneSampleCache, sensor: str) -> None:
        """Keep the shared cache."""
        self.cache, self.sensor = cache, sensor

    def __len__(self) -> int:
        return len(self.cache.datasets[self.sensor])

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        return self.cache.get(self.sensor, index)


#: Collate ``{"a": Sample, "b": Sample}`` items (two sensors) into ``{"a": batch, "b": batch}``.
collate_pairs = collate_sides


class GroupedBatchSampler(Sampler[list[int]]):
    """Seeded batches of one group (sensor) each, resumable at any step, DDP-aware.

    Pass ``p`` over the data: every group's indices are permuted with ``(seed, p)``, cut into
    global batches of ``batch_size * world_size`` (the remainder is dropped), and the global
    batches of all groups are shuffled together. Rank ``r`` takes slice ``r`` of each global
    batch. Step ``s`` of the run is batch ``s mod L`` of pass ``s // L`` (``L`` batches a pass).

    Args:
        group_sizes: Number of samples of each group; indices are offset by the earlier groups
            (as in a ``ConcatDataset``).
        batch_size: Samples per batch on each rank.
        total_steps: Length of the run (the sampler yields batches ``start .. total_steps-1``).
        seed: Seed of the order.
        rank: This process's global rank.
        world_size: Number of processes.
        start: First step to yield (the resume position).
    """

    def __init__(
        self,
        group_sizes: Sequence[int],
        batch_size: int,
        total_steps: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
    ) -> None:
        """Check that every group fills at least one global batch."""
        self.group_sizes = [int(n) for n in group_sizes]
        self.batch_size = int(batch_size)
        self.total_steps = int(total_steps)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.start = int(start)
        per_step = self.batch_size * self.world_size
        for g, n in enumerate(self.group_sizes):
            if n < per_step:
                raise UserInputError(
                    f"data group {g} has {n} samples, fewer than one global batch "
                    f"(batch_size {self.batch_size} x {self.world_size} processes = {per_step})"
                )
        self.offsets = np.cumsum([0, *self.group_sizes[:-1]]).tolist()
        self.steps_per_pass = sum(n // per_step for n in self.group_sizes)
        self._plan_pass = -1
        self._plan: list[tuple[int, np.ndarray]] = []

    def __len__(self) -> int:
        return self.total_steps

    def _make_plan(self, p: int) -> list[tuple[int, np.ndarray]]:
        rng = np.random.default_rng([self.seed, p, 0x5EED])
        per_step = self.batch_size * self.world_size
        plan: list[tuple[int, np.ndarray]] = []
        for g, n in enumerate(self.group_sizes):
            perm = rng.permutation(n)
            for k in range(n // per_step):
                plan.append((g, perm[k * per_step : (k + 1) * per_step]))
        order = rng.permutation(len(plan))
        return [plan[i] for i in order]

    def global_batch(self, step: int) -> tuple[int, list[int]]:
        """Group and dataset indices of the global batch of ``step`` (all ranks)."""
        p, q = divmod(int(step), self.steps_per_pass)
        if p != self._plan_pass:
            self._plan, self._plan_pass = self._make_plan(p), p
        group, local = self._plan[q]
        return group, [int(self.offsets[group] + i) for i in local]

    def group_counts(self, step: int) -> list[int]:
        """Global batches of each group among steps ``0 .. step - 1``."""
        passes, rest = divmod(int(step), self.steps_per_pass)
        per_step = self.batch_size * self.world_size
        counts = [passes * (n // per_step) for n in self.group_sizes]
        if rest:
            for group, _ in self._make_plan(passes)[:rest]:
                counts[group] += 1
        return counts

    def batch(self, step: int) -> list[int]:
        """This rank's dataset indices at ``step``."""
        _, indices = self.global_batch(step)
        return indices[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.total_steps):
            yield self.batch(step)

    def state_dict(self) -> dict[str, int]:
        """The order's identity and the next step to yield."""
        return {
            "seed": self.seed,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "start": self.start,
        }


class ResumableLoader(DataLoader):
    """A DataLoader whose ``state_dict`` is the data-order position (Lightning saves it).

    The position saved is the trainer's step (one batch per optimiser step), read through
    ``position``, not the number of batches the loader has prefetched.
    """

    def __init__(self, *args: Any, position: Callable[[], int], **kwargs: Any) -> None:
        """Create the loader; ``position`` returns the number of batches already trained on."""
        super().__init__(*args, **kwargs)
        self._position = position

    def state_dict(self) -> dict[str, int]:
        """``seed``, ``batch_size``, ``world_size`` and ``step`` (next batch to train on)."""
        sampler = self.batch_sampler
        assert isinstance(sampler, GroupedBatchSampler)
        state = sampler.state_dict()
        state.pop("start")
        state["step"] = int(self._position())
        return state

    def load_state_dict(self, state_dict: Mapping[str, int]) -> None:
        """Continue the order at the saved step (checks that the seed is the same)."""
        sampler = self.batch_sampler
        assert isinstance(sampler, GroupedBatchSampler)
        if int(state_dict["seed"]) != sampler.seed:
            raise UserInputError(
                f"the checkpoint's data order has seed {state_dict['seed']}, the config "
                f"{sampler.seed}; resume with the config the run started with"
            )
        sampler.start = int(state_dict["step"])


class ShardLoader:
    """Batches of one sensor group per step from shards, resumable at any step (``source: shards``).

    The group of step ``s`` is the grouped sampler's (:meth:`GroupedBatchSampler.global_batch`,
    sized by the groups' sample counts), the same on every rank. Each group is its own
    :class:`~thinkingearth.pretrain.shards.ShardDataset` stream (split across ranks and workers,
    shuffled there) batched by a DataLoader; resumed at step ``s``, group ``g``'s stream starts
    at ``batches of g before s x batch_size``, the samples this rank has trained on from it.
    Lightning saves :meth:`state_dict` in every checkpoint, as for :class:`ResumableLoader`.

    Args:
        make_stream: ``make_stream(group, start)`` returns the group's stream for this rank,
            starting after ``start`` samples.
        groups: The shard groups of the run, in ``group_sizes`` order.
        sampler: The grouped plan (its ``start`` is the first step to yield).
        collate_fn: Collates a batch (pairs: :func:`collate_pairs`).
        num_workers: DataLoader workers per group stream.
        position: Returns the trainer's step (the batches already trained on).
    """

    def __init__(
        self,
        make_stream: Callable[[int, int], Any],
        groups: Sequence[int],
        sampler: GroupedBatchSampler,
        collate_fn: Callable[[Sequence[Any]], Any],
        num_workers: int,
        position: Callable[[], int],
    ) -> None:
        """Keep the parts; streams open when iteration starts."""
        self.make_stream = make_stream
        self.groups = list(groups)
        self.sampler = sampler
        self.collate_fn = collate_fn
        self.num_workers = int(num_workers)
        self._position = position

    def __iter__(self) -> Iterator[Any]:
        start = self.sampler.start
        before = self.sampler.group_counts(start)
        batch = self.sampler.batch_size
        streams = [
            self.make_stream(group, before[g] * batch) for g, group in enumerate(self.groups)
        ]
        for stream in streams:
            # here, in the main process: raised inside a DataLoader worker, the one-line error
            # would arrive wrapped in the worker's traceback
            stream.check_readers(self.num_workers)
        loaders = [
            iter(
                DataLoader(
                    stream,
                    batch_size=batch,
                    collate_fn=self.collate_fn,
                    num_workers=self.num_workers,
                )
            )
            for stream in streams
        ]
        for step in range(start, self.sampler.total_steps):
            g, _ = self.sampler.global_batch(step)
            yield next(loaders[g])

    def state_dict(self) -> dict[str, int]:
        """``seed``, ``batch_size``, ``world_size`` and ``step`` (next batch to train on)."""
        state = self.sampler.state_dict()
        state.pop("start")
        state["step"] = int(self._position())
        return state

    def load_state_dict(self, state_dict: Mapping[str, int]) -> None:
        """Continue at the saved step (checks that the seed is the same)."""
        if int(state_dict["seed"]) != self.sampler.seed:
            raise UserInputError(
                f"the checkpoint's data order has seed {state_dict['seed']}, the config "
                f"{self.sampler.seed}; resume with the config the run started with"
            )
        self.sampler.start = int(state_dict["step"])


def _shard_groups(config: PretrainConfig, groups: Sequence[Mapping[str, Any]]) -> list[int]:
    """The shard groups the run reads: one per sensor, or the pair's (paired recipes)."""
    root = config.data.root

    def describe(group: Mapping[str, Any]) -> str:
        if "pair" in group:
            parts = group["pair"]
            return f"pair {parts['a']['sensor']}+{parts['b']['sensor']}"
        return f"{group['sensor']} ({', '.join(group['bands'])})"

    found = ", ".join(describe(g) for g in groups)
    if config.paired:
        assert config.data.pair is not None
        wanted = [get_sensor(s).name for s in config.data.pair]
        for g, group in enumerate(groups):
            parts = group.get("pair")
            if parts and [get_sensor(parts[k]["sensor"]).name for k in ("a", "b")] == wanted:
                return [g]
        raise UserInputError(
            f"the shards in {root} hold no {wanted[0]}+{wanted[1]} pairs; they hold: {found}"
        )
    chosen: list[int] = []
    for sensor in config.sensors:
        bands = config.source_for(sensor).bands
        want = None if bands is None else list(get_sensor(sensor).band(b).name for b in bands)
        matches = [
            g
            for g, group in enumerate(groups)
            if "pair" not in group
            and get_sensor(group["sensor"]).name == sensor
            and (want is None or list(group["bands"]) == want)
        ]
        if not matches:
            raise UserInputError(
                f"the shards in {root} hold no {sensor}"
                + ("" if want is None else f" with bands {', '.join(want)}")
                + f"; they hold: {found}"
            )
        if len(matches) > 1:
            raise UserInputError(
                f"the shards in {root} hold {sensor} with several band sets ({found}); choose "
                "one with bands: in its data.sensors entry"
            )
        chosen.append(matches[0])
    return chosen


def open_shard_stream(config: PretrainConfig, group: int, start: int, rank: int, world: int) -> Any:
    """One shard group's stream for this rank (:class:`~thinkingearth.pretrain.shards.ShardDataset`).

    Imported here, lazily: only ``source: shards`` needs the shards module.
    """
    from thinkingearth.pretrain.shards import ShardDataset

    assert config.data.root is not None
    return ShardDataset(
        config.data.root,
        seed=config.seed,
        shuffle_buffer=config.data.shuffle_buffer,
        rank=rank,
        world=world,
        start=start,
        batch_size=config.data.batch_size,
        group=group,
    )


class _ShardSamples(Dataset[dict[str, Any]]):
    """The first samples of one shard group, in shard order (statistics of the sensor)."""

    def __init__(self, config: PretrainConfig, group: int, sensor: str, bands: Sequence[str]):
        self.config, self.group = config, group
        self.sensor, self.bands = sensor, tuple(bands)
        self._samples: list[dict[str, Any]] | None = None

    def _load(self) -> list[dict[str, Any]]:
        if self._samples is None:
            from thinkingearth.pretrain.shards import ShardDataset

            assert self.config.data.root is not None
            stream = ShardDataset(
                self.config.data.root,
                seed=self.config.seed,
                shuffle_buffer=0,
                rank=0,
                world=1,
                epochs=1,
                group=self.group,
            )
            self._samples = list(islice(iter(stream), STATS_SAMPLES))
        return self._samples

    def __len__(self) -> int:
        return len(self._load())

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._load()[index]


def fit_normaliser(
    normaliser: Normaliser,
    datasets: Mapping[str, SyntheticCopernicus],
    samples: Mapping[str, Dataset[dict[str, Any]]] | None = None,
    count: int = STATS_SAMPLES,
) -> None:
    """Estimate statistics for the sensors the registry publishes none for (first samples).

    Args:
        normaliser: Receives the statistics.
        datasets: The sensors' datasets (their bands).
        samples: Where to read the samples from (default: ``datasets``), e.g. a shared cache.
        count: Samples per sensor.
    """
    for sensor, ds in datasets.items():
        if normaliser.needs_fit(sensor, ds.bands):
            source = samples[sensor] if samples is not None else ds
            images = (source[i]["image"] for i in range(min(count, len(ds))))
            normaliser.fit(sensor, ds.bands, images)


class PretrainDataModule(L.LightningDataModule):
    """Training data of a :class:`~thinkingearth.pretrain.config.PretrainConfig`.

    Args:
        config: The run's configuration.
        normaliser: Filled with estimated statistics where needed (see :meth:`setup`).

    Attributes:
        notes: What the data sources found (files, patches, left-out files), one line each.
        nodata_windows: Windows with no valid pixel skipped in the batches trained on so far
            (this process; real sources only).
    """

    def __init__(self, config: PretrainConfig, normaliser: Normaliser) -> None:
        """Keep the configuration; datasets are made in :meth:`setup`."""
        super().__init__()
        self.config = config
        self.normaliser = normaliser
        self.datasets: dict[str, Any] = {}
        self.dataset: Dataset[Any] | None = None
        self.group_sizes: list[int] = []
        self.shard_groups: list[int] = []
        self.notes: list[str] = []
        self.nodata_windows = 0
        self._built = False

    def _synthetic(self, sensor: str, n: int | None = None) -> SyntheticCopernicus:
        d = self.config.data
        source = self.config.source_for(sensor)
        count = source.n if n is None else n
        assert d.split is not None and count is not None  # validated, filled in by DataConfig
        return SyntheticCopernicus(
            task="none",
            sensor=sensor,
            split=d.split,
            n=count,
            size=d.size,
            seed=self.config.seed,
            bands=source.bands,
            cloud_cover=d.cloud_cover,
        )

    def build(self) -> None:
        """Create the datasets (cheap: scenes are generated on first use) and fit statistics."""
        if self._built:
            return
        self._built = True
        config = self.config
        source = config.data.source
        if source == "shards":
            self._build_shards()
        elif source != "synthetic":
            self._build_source()
        elif config.paired:
            n = min(int(config.source_for(s).n or 0) for s in config.sensors)
            a, b = (self._synthetic(s, n) for s in config.sensors)
            self.datasets = {a.sensor: a, b.sensor: b}
            self.dataset = PairedSynthetic(a, b)
            self.group_sizes = [len(a)]
            fit_normaliser(self.normaliser, self.datasets)
        else:
            self.datasets = {s: self._synthetic(s) for s in config.sensors}
            cache = _SceneSampleCache(self.datasets)
            parts = {s: SharedSceneSamples(cache, s) for s in self.datasets}
            self.dataset = ConcatDataset(list(parts.values()))
            self.group_sizes = [len(p) for p in parts.values()]
            fit_normaliser(self.normaliser, self.datasets, parts)

    def _build_source(self) -> None:
        """A real source's readers (:mod:`thinkingearth.pretrain.sources`)."""
        from thinkingearth.pretrain.sources import open_pair, open_sensor

        config = self.config
        if config.paired:
            pairs = open_pair(config)
            self.notes = list(dict.fromkeys([*pairs.a.notes, *pairs.b.notes]))
            self.datasets = {pairs.a.sensor: pairs.part("a"), pairs.b.sensor: pairs.part("b")}
            self.dataset = pairs
            self.group_sizes = [len(pairs)]
        else:
            parts = {s: open_sensor(config, s) for s in config.sensors}
            self.notes = [note for part in parts.values() for note in part.reader.notes]
            self.datasets = dict(parts)
            self.dataset = ConcatDataset(list(parts.values()))
            self.group_sizes = [len(p) for p in parts.values()]
        fit_normaliser(self.normaliser, self.datasets)

    def _build_shards(self) -> None:
        """The shard groups of the run, and statistics from their first samples where needed."""
        from thinkingearth.pretrain.shards import ShardIndex

        config = self.config
        assert config.data.root is not None
        index = ShardIndex.read(config.data.root)
        self.shard_groups = _shard_groups(config, index.groups)
        self.group_sizes = [int(index.groups[g]["count"]) for g in self.shard_groups]
        described = []
        for g in self.shard_groups:
            group = index.groups[g]
            parts = [group["pair"][k] for k in ("a", "b")] if "pair" in group else [group]
            for part in parts:
                sensor = get_sensor(part["sensor"]).name
                self.datasets[sensor] = _ShardSamples(config, g, sensor, part["bands"])
            described.append(f"{' + '.join(p['sensor'] for p in parts)}: {group['count']}")
        self.notes = [
            f"shards {config.data.root}: {len(index.shards)} shard(s), {index.total} samples; "
            f"reading {'; '.join(described)}"
        ]
        if config.paired:
            for key, sensor in zip(("a", "b"), config.sensors, strict=True):
                part = self.datasets[sensor]
                self.datasets[sensor] = _PairSide(part, key)
        fit_normaliser(self.normaliser, self.datasets)

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets (idempotent)."""
        self.build()

    def _position(self) -> int:
        return int(self.trainer.global_step) if self.trainer is not None else 0

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Count (and drop) the windows a real source skipped for having no valid pixel."""
        parts = [batch[k] for k in ("a", "b") if k in batch] if "image" not in batch else [batch]
        skipped = [part.pop("nodata_windows", None) for part in parts]
        if skipped[0] is not None and self.config.data.source != "shards":
            self.nodata_windows += int(sum(int(v) for v in skipped[0]))
        return batch

    def summary(self) -> dict[str, Any]:
        """What the run's summary says about its data (real sources; empty for synthetic)."""
        if self.config.data.source == "synthetic":
            return {}
        return {
            "source": self.config.data.source,
            "notes": list(self.notes),
            "nodata_windows_skipped": int(self.nodata_windows),
        }

    def train_dataloader(self) -> ResumableLoader | ShardLoader:
        """The grouped, seeded, resumable loader of this rank."""
        self.build()
        trainer = self.trainer
        rank = trainer.global_rank if trainer is not None else 0
        world = trainer.world_size if trainer is not None else 1
        total = trainer.max_steps if trainer is not None else self.config.trainer.max_steps
        sampler = GroupedBatchSampler(
            self.group_sizes,
            self.config.data.batch_size,
            total_steps=total,
            seed=self.config.seed,
            rank=rank,
            world_size=world,
            start=self._position(),
        )
        workers = self.config.data.num_workers
        collate_fn = collate_pairs if self.config.paired else collate
        if self.config.data.source == "shards":
            config = self.config
            return ShardLoader(
                lambda group, start: open_shard_stream(config, group, start, rank, world),
                self.shard_groups,
                sampler,
                collate_fn,
                workers,
                self._position,
            )
        assert self.dataset is not None
        return ResumableLoader(
            self.dataset,
            batch_sampler=sampler,
            collate_fn=collate_fn,
            num_workers=workers,
            persistent_workers=workers > 0,
            position=self._position,
        )


class _PairSide(Dataset[dict[str, Any]]):
    """One side (``"a"`` or ``"b"``) of pair records (statistics of its sensor)."""

    def __init__(self, pairs: _ShardSamples, key: str) -> None:
        self.pairs, self.key = pairs, key
        self.sensor, self.bands = pairs.sensor, pairs.bands

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.pairs[index][self.key]
