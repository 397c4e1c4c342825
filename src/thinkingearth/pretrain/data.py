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
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from thinkingearth.data.sample import collate
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


def collate_pairs(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Collate ``{"a", "b"}`` items into ``{"a": batch, "b": batch}``."""
    return {"a": collate([i["a"] for i in items]), "b": collate([i["b"] for i in items])}


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
    """

    def __init__(self, config: PretrainConfig, normaliser: Normaliser) -> None:
        """Keep the configuration; datasets are made in :meth:`setup`."""
        super().__init__()
        self.config = config
        self.normaliser = normaliser
        self.datasets: dict[str, SyntheticCopernicus] = {}
        self.dataset: Dataset[Any] | None = None
        self.group_sizes: list[int] = []

    def _synthetic(self, sensor: str, n: int | None = None) -> SyntheticCopernicus:
        d = self.config.data
        source = self.config.source_for(sensor)
        return SyntheticCopernicus(
            task="none",
            sensor=sensor,
            split=d.split,
            n=source.n if n is None else n,
            size=d.size,
            seed=self.config.seed,
            bands=source.bands,
            cloud_cover=d.cloud_cover,
        )

    def build(self) -> None:
        """Create the datasets (cheap: scenes are generated on first use) and fit statistics."""
        if self.dataset is not None:
            return
        config = self.config
        if config.recipe == "cross_sensor":
            n = min(config.source_for(s).n for s in config.sensors)
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

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets (idempotent)."""
        self.build()

    def _position(self) -> int:
        return int(self.trainer.global_step) if self.trainer is not None else 0

    def train_dataloader(self) -> ResumableLoader:
        """The grouped, seeded, resumable loader of this rank."""
        self.build()
        assert self.dataset is not None
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
        return ResumableLoader(
            self.dataset,
            batch_sampler=sampler,
            collate_fn=collate_pairs if self.config.recipe == "cross_sensor" else collate,
            num_workers=workers,
            persistent_workers=workers > 0,
            position=self._position,
        )
