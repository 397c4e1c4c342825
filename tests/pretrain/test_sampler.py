"""The grouped sampler: one sensor per batch, a seeded order that resumes at any step, DDP slices."""

from __future__ import annotations

import pytest

from thinkingearth.errors import UserInputError
from thinkingearth.pretrain.data import GroupedBatchSampler, PretrainDataModule, ResumableLoader
from thinkingearth.pretrain.transforms import Normaliser


def _group(index: int) -> int:
    return 0 if index < 20 else 1


def test_batches_hold_one_group_and_cover_each_pass_once():
    sampler = GroupedBatchSampler([20, 12], batch_size=4, total_steps=16, seed=1)
    batches = list(sampler)
    assert len(batches) == 16 and sampler.steps_per_pass == 8
    for batch in batches:
        assert len(batch) == 4 and len({_group(i) for i in batch}) == 1
    first_pass = sorted(i for b in batches[:8] for i in b)
    assert first_pass == list(range(32))
    assert batches[:8] != batches[8:]  # each pass is reshuffled
    assert list(GroupedBatchSampler([20, 12], 4, 16, seed=1)) == batches
    assert list(GroupedBatchSampler([20, 12], 4, 16, seed=2)) != batches


def test_resume_continues_the_same_order():
    full = list(GroupedBatchSampler([20, 12], 4, 16, seed=3))
    resumed = list(GroupedBatchSampler([20, 12], 4, 16, seed=3, start=11))
    assert resumed == full[11:]


def test_ranks_read_disjoint_slices_of_one_global_batch():
    ranks = [GroupedBatchSampler([20, 12], 2, 6, seed=0, rank=r, world_size=2) for r in range(2)]
    for step in range(6):
        a, b = ranks[0].batch(step), ranks[1].batch(step)
        assert not set(a) & set(b)
        assert {_group(i) for i in a + b} == {_group(a[0])}
        assert a + b == ranks[0].global_batch(step)[1]


def test_too_small_groups_are_refused():
    with pytest.raises(UserInputError, match="fewer than one global batch"):
        GroupedBatchSampler([20, 3], 4, 10, seed=0)


def test_loader_state_is_the_trained_step(tiny):
    module = PretrainDataModule(tiny(), Normaliser())
    loader = module.train_dataloader()
    assert isinstance(loader, ResumableLoader) and len(loader) == 4
    state = loader.state_dict()
    assert state == {"seed": 0, "batch_size": 8, "world_size": 1, "step": 0}
    loader.load_state_dict({**state, "step": 3})
    assert len(list(loader)) == 1
    with pytest.raises(UserInputError, match="seed 5"):
        loader.load_state_dict({**state, "seed": 5})
