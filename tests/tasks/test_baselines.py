"""Supervised baselines: what each builds for each task, shapes, and refusals with reasons."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from timm.layers import EcaModule

from thinkingearth.errors import UserInputError
from thinkingearth.models.baselines import (
    BASELINES,
    Backbone,
    DenseModel,
    SiameseUNet,
    UNet,
    UnsupportedTaskError,
    WideResNetECA,
    build_baseline,
    level_indices,
)

_TASKS = ("classification", "multilabel", "segmentation", "change", "regression")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One intra-op thread: the tensors here are tiny, and two threads per op on a shared
    2-core machine spend more time waiting for each other than computing."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", list(BASELINES))
def test_every_baseline_builds_its_tasks_and_refuses_the_others(name: str) -> None:
    tasks = ("classification", "change") if name == "resnet50" else _TASKS  # resnet18 does all
    for task in tasks:
        if task not in BASELINES[name].tasks:
            with pytest.raises(UnsupportedTaskError, match=f"{name} cannot do {task}: .+"):
                build_baseline(name, task, 2, 3, time_steps=3)  # type: ignore[arg-type]
            continue
        net = build_baseline(
            name,
            task,  # type: ignore[arg-type]
            2,
            3,
            time_steps=3,
            img_size=16,
            unet_widths=(8, 16),
            vit_depth=2,
        )
        series = task == "change"
        image = torch.randn(2, 3, 2, 16, 16) if series else torch.randn(2, 2, 16, 16)
        if isinstance(net, DenseModel):
            assert net(image).shape == (2, 3, 16, 16)
        else:
            assert isinstance(net, Backbone)
            single = image[:, 0] if series else image
            assert net.pooled(single).shape == (2, net.embed_dim)
            if task in ("segmentation", "change", "regression"):
                maps = net.levels(single)
                assert [m.shape[1] for m in maps] == list(net.level_channels)
                assert len(maps) == len(net.level_strides) == 4


def test_unknown_baseline_lists_the_names() -> None:
    with pytest.raises(UserInputError, match="expected one of: wrn-eca, resnet18"):
        build_baseline("resnet9", "segmentation", 2, 3)


def test_resnet_levels_have_strides_4_to_32() -> None:
    net = build_baseline("resnet18", "segmentation", 12, 9)
    assert net.level_strides == (4, 8, 16, 32)
    assert [m.shape[-1] for m in net.levels(torch.randn(2, 12, 64, 64))] == [16, 8, 4, 2]


def test_wrn_eca_has_channel_attention_in_every_block() -> None:
    net = WideResNetECA(12, depth=16, width=4)
    blocks = list(net.blocks)
    assert len(blocks) == 6  # (16 - 4) / 6 = 2 per group, 3 groups
    assert all(isinstance(b.eca, EcaModule) for b in blocks)
    assert net.embed_dim == 256
    with pytest.raises(ValueError, match="6n \\+ 4"):
        WideResNetECA(12, depth=15)


def test_unet_pads_sizes_that_are_not_a_multiple_and_crops_back() -> None:
    net = UNet(3, 2, widths=(8, 16, 32))
    assert net(torch.randn(2, 3, 30, 27)).shape == (2, 2, 30, 27)
    with pytest.raises(ValueError, match=r"expects images \[B, 3, H, W\]; got \(2, 4, 30, 30\)"):
        net(torch.randn(2, 4, 30, 30))


def test_early_fusion_unet_and_siamese_nets_take_series() -> None:
    ef = UNet(2, 3, widths=(8, 16), time_steps=3)
    assert ef(torch.randn(2, 3, 2, 16, 16)).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"image series \[B, 3, 2, H, W\]"):
        ef(torch.randn(2, 2, 16, 16))


def test_siamese_diff_ignores_the_order_of_the_pre_event_images() -> None:
    torch.manual_seed(0)
    net = SiameseUNet(2, 3, time_steps=3, fusion="diff", widths=(8, 16)).eval()
    x = torch.randn(2, 3, 2, 16, 16)
    swapped = x[:, [1, 0, 2]]
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(swapped), rtol=1e-4, atol=1e-5)
    concat = SiameseUNet(2, 3, time_steps=3, fusion="concat", widths=(8, 16))
    assert concat(x).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="2\\+ acquisitions"):
        SiameseUNet(2, 3, time_steps=1)


def test_level_indices_are_four_and_end_with_the_last_block() -> None:
    assert level_indices(12) == (2, 5, 8, 11)
    assert level_indices(2) == (0, 0, 1, 1)
    assert level_indices(24)[-1] == 23
