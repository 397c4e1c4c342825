"""Task heads: output shapes, the ViT neck, change fusion and clear shape errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from thinkingearth.models.heads import (
    ChangeFusion,
    DenseHead,
    FeaturePyramid,
    LinearDenseHead,
    LinearHead,
    UPerNet,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One intra-op thread: the tensors here are tiny, and two threads per op on a shared
    2-core machine spend more time waiting for each other than computing."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pyramid(b: int = 2, channels: tuple[int, ...] = (8, 16, 32, 64), size: int = 16):
    return [torch.randn(b, c, size // 2**i, size // 2**i) for i, c in enumerate(channels)]


def test_linear_head_shape_and_error() -> None:
    head = LinearHead(12, 5)
    assert head(torch.randn(3, 12)).shape == (3, 5)
    with pytest.raises(ValueError, match=r"pooled features \[B, 12\]; got \(3, 7\)"):
        head(torch.randn(3, 7))


def test_upernet_shapes_and_output_size() -> None:
    head = UPerNet((8, 16, 32, 64), num_outputs=4, channels=16)
    maps = _pyramid()
    assert head(maps).shape == (2, 4, 16, 16)  # the finest level's size
    assert head(maps, size=(64, 48)).shape == (2, 4, 64, 48)


def test_upernet_shape_errors_name_expected_and_received() -> None:
    head = UPerNet((8, 16, 32, 64), num_outputs=4, channels=16)
    with pytest.raises(ValueError, match="expects 4 feature maps"):
        head(_pyramid()[:3])
    wrong = _pyramid(channels=(8, 16, 33, 64))
    with pytest.raises(
        ValueError, match=r"feature map 2 must be \[B, 32, h, w\]; got \(2, 33, 4, 4\)"
    ):
        head(wrong)
    with pytest.raises(ValueError, match="differ in batch size"):
        head([*_pyramid()[:3], torch.randn(3, 64, 2, 2)])


def test_feature_pyramid_rescales_vit_maps_to_four_scales() -> None:
    neck = FeaturePyramid(24)
    maps = neck([torch.randn(2, 24, 4, 4) for _ in range(4)])
    assert [tuple(m.shape[-2:]) for m in maps] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    tiny = neck([torch.randn(2, 24, 1, 1) for _ in range(4)])
    assert tiny[-1].shape[-2:] == (1, 1)  # ceil mode keeps a 1x1 map
    with pytest.raises(ValueError, match="one resolution"):
        neck([torch.randn(2, 24, 4, 4)] * 3 + [torch.randn(2, 24, 2, 2)])


def test_dense_head_adds_the_vit_neck_only_for_single_scale_features() -> None:
    vit = DenseHead((24,) * 4, (8,) * 4, num_outputs=3, channels=16)
    assert vit.neck is not None
    out = vit([torch.randn(2, 24, 4, 4) for _ in range(4)], size=(32, 32))
    assert out.shape == (2, 3, 32, 32)
    cnn = DenseHead((8, 16, 32, 64), (4, 8, 16, 32), num_outputs=3, channels=16)
    assert cnn.neck is None
    assert cnn(_pyramid(), size=(64, 64)).shape == (2, 3, 64, 64)
    linear = DenseHead((24,) * 4, (8,) * 4, num_outputs=3, kind="linear")
    assert isinstance(linear.decoder, LinearDenseHead)
    assert linear([torch.randn(2, 24, 4, 4)] * 4, size=(32, 32)).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="unknown dense head"):
        DenseHead((24,) * 4, (8,) * 4, 3, kind="fcn")  # type: ignore[arg-type]


def test_change_fusion_diff_and_concat() -> None:
    pre = [[torch.full((1, 2, 2, 2), 1.0)], [torch.full((1, 2, 2, 2), 3.0)]]
    post = [torch.full((1, 2, 2, 2), 5.0)]
    diff = ChangeFusion("diff")
    assert torch.equal(diff(pre, post)[0], torch.full((1, 2, 2, 2), 3.0))  # 5 - mean(1, 3)
    assert diff.out_channels((2, 4)) == (2, 4)
    concat = ChangeFusion("concat")
    fused = concat(pre, post)[0]
    assert fused.shape == (1, 4, 2, 2)
    assert torch.equal(fused[:, :2], torch.full((1, 2, 2, 2), 2.0))
    assert concat.out_channels((2, 4)) == (4, 8)
    with pytest.raises(ValueError, match="pre-event acquisition 0"):
        diff([[torch.zeros(1, 2, 3, 3)]], post)
    with pytest.raises(ValueError, match="unknown fusion"):
        ChangeFusion("sum")  # type: ignore[arg-type]
