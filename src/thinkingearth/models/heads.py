"""Task heads: linear probes, UPerNet over encoder features, and change-detection fusion.

Every dense head takes a list of feature maps ``[B, C_i, h_i, w_i]`` (one per encoder level,
finest first) and returns logits ``[B, K, H, W]`` at the requested output size:

* :class:`LinearHead`: pooled features ``[B, D]`` → ``[B, K]`` (linear probe, MAE style: a
  BatchNorm without affine parameters, then one linear layer; He et al. 2022);
* :class:`LinearDenseHead`: a per-pixel linear layer (1×1 convolution) on the last level,
  upsampled bilinearly (the dense linear probe);
* :class:`UPerNet`: the Unified Perceptual Parsing decoder (Xiao et al. 2018): a pyramid pooling
  module (PPM, Zhao et al. 2017) on the coarsest level and a feature pyramid network (FPN, Lin et
  al. 2017) over all levels, fused at the finest one;
* :class:`FeaturePyramid`: the "UPerNet for ViT" neck: a plain ViT gives maps of one resolution,
  so four are made from them at ×4, ×2, ×1 and ×½ by transposed convolutions and max pooling
  (as mmsegmentation's ``Feature2Pyramid`` for BEiT/MAE; Bao et al. 2022, He et al. 2022);
* :class:`DenseHead`: :class:`FeaturePyramid` (for single-scale features) + :class:`UPerNet`, or
  :class:`LinearDenseHead`, chosen by name;
* :class:`ChangeFusion`: multi-temporal feature fusion as in Kuro Siwo change detection
  (Bountos et al. 2024): per level, the post-event features minus the mean of the pre-event ones
  (``"diff"``), or both concatenated (``"concat"``).

Shape mistakes raise a :class:`ValueError` that says what was expected and what came.

References:
    Xiao, Liu, Zhou, Jiang, Sun. "Unified Perceptual Parsing for Scene Understanding." ECCV 2018.
    Zhao, Shi, Qi, Wang, Jia. "Pyramid Scene Parsing Network." CVPR 2017.
    Lin, Dollár, Girshick, He, Hariharan, Belongie. "Feature Pyramid Networks for Object
    Detection." CVPR 2017.
    He, Chen, Xie, Li, Dollár, Girshick. "Masked Autoencoders Are Scalable Vision Learners."
    CVPR 2022.
    Bountos et al. "Kuro Siwo: 33 billion m² under the water. A global multi-temporal satellite
    dataset for rapid flood mapping." NeurIPS 2024 Datasets and Benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ChangeFusion",
    "DenseHead",
    "DenseHeadKind",
    "FeaturePyramid",
    "FusionMode",
    "LinearDenseHead",
    "LinearHead",
    "UPerNet",
    "check_features",
]

DenseHeadKind = Literal["upernet", "linear"]
FusionMode = Literal["diff", "concat"]


def _shapes(features: Sequence[Tensor]) -> str:
    return ", ".join(str(tuple(f.shape)) for f in features)


def check_features(
    features: Sequence[Tensor], in_channels: Sequence[int], where: str
) -> list[Tensor]:
    """Check that ``features`` are ``[B, C_i, h, w]`` maps with the expected channels.

    Raises:
        ValueError: For a wrong number of maps, a map that is not 4-D, a channel count that
            differs from ``in_channels`` or batch sizes that differ; the message lists the shapes.
    """
    maps = list(features)
    if len(maps) != len(in_channels):
        raise ValueError(
            f"{where} expects {len(in_channels)} feature maps with channels {tuple(in_channels)}; "
            f"got {len(maps)}: {_shapes(maps)}"
        )
    for i, (f, c) in enumerate(zip(maps, in_channels, strict=True)):
        if not isinstance(f, Tensor) or f.ndim != 4 or f.shape[1] != c:
            got = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
            raise ValueError(
                f"{where}: feature map {i} must be [B, {c}, h, w]; got {got} "
                f"(all maps: {_shapes(maps)})"
            )
    if len({f.shape[0] for f in maps}) > 1:
        raise ValueError(f"{where}: feature maps differ in batch size: {_shapes(maps)}")
    return maps


def _conv_bn_relu(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class LinearHead(nn.Module):
    """Linear classifier on pooled features ``[B, D]`` → logits ``[B, K]``.

    Args:
        in_features: Width ``D`` of the features.
        num_outputs: Number of classes (or labels, or regression outputs).
        norm: Put a BatchNorm without affine parameters before the linear layer, as MAE's linear
            probe does (He et al. 2022): it evens out feature scales at no cost in expressiveness.
    """

    def __init__(self, in_features: int, num_outputs: int, norm: bool = True) -> None:
        """Build the head."""
        super().__init__()
        self.in_features = int(in_features)
        self.norm = nn.BatchNorm1d(in_features, affine=False) if norm else nn.Identity()
        self.linear = nn.Linear(in_features, num_outputs)
        nn.init.trunc_normal_(self.linear.weight, std=0.01)
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: Tensor) -> Tensor:
        """Logits ``[B, K]``."""
        if features.ndim != 2 or features.shape[1] != self.in_features:
            raise ValueError(
                f"LinearHead expects pooled features [B, {self.in_features}]; "
                f"got {tuple(features.shape)}"
            )
        return self.linear(self.norm(features))


class LinearDenseHead(nn.Module):
    """Per-pixel linear layer on the last feature map, upsampled to the output size.

    Args:
        in_channels: Channels of every level (only the last is used).
        num_outputs: Classes (or regression outputs) per pixel.
    """

    def __init__(self, in_channels: Sequence[int], num_outputs: int) -> None:
        """Build the head."""
        super().__init__()
        self.in_channels = tuple(int(c) for c in in_channels)
        c = self.in_channels[-1]
        self.norm = nn.BatchNorm2d(c, affine=False)
        self.classifier = nn.Conv2d(c, num_outputs, 1)

    def forward(self, features: Sequence[Tensor], size: Sequence[int] | None = None) -> Tensor:
        """Logits ``[B, K, H, W]`` (``size`` = ``(H, W)``, default: the last map's size)."""
        maps = check_features(features, self.in_channels, "LinearDenseHead")
        out = self.classifier(self.norm(maps[-1]))
        return out if size is None else _resize(out, size)


class FeaturePyramid(nn.Module):
    """Four scales from single-scale ViT maps: ×4, ×2, ×1 and ×½ (UPerNet for ViT).

    ×4 is two stride-2 transposed convolutions with BatchNorm and GELU between them, ×2 one
    transposed convolution, ×1 the identity and ×½ a 2×2 max pooling (ceil mode, so a 1×1 map
    stays 1×1), as mmsegmentation's ``Feature2Pyramid`` for BEiT and MAE.

    Args:
        channels: Channels ``D`` of each input map (all equal for a ViT).
        levels: Number of input maps (4).
    """

    def __init__(self, channels: int, levels: int = 4) -> None:
        """Build the neck."""
        super().__init__()
        if levels != 4:
            raise ValueError(f"FeaturePyramid makes 4 scales from 4 maps; got levels={levels}")
        d = int(channels)
        self.channels = d
        self.up4 = nn.Sequential(
            nn.ConvTranspose2d(d, d, 2, stride=2),
            nn.BatchNorm2d(d),
            nn.GELU(),
            nn.ConvTranspose2d(d, d, 2, stride=2),
        )
        self.up2 = nn.ConvTranspose2d(d, d, 2, stride=2)
        self.down2 = nn.MaxPool2d(2, stride=2, ceil_mode=True)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Maps at strides ×4, ×2, ×1, ×½ of the input maps' resolution."""
        maps = check_features(features, (self.channels,) * 4, "FeaturePyramid")
        if len({tuple(f.shape[-2:]) for f in maps}) > 1:
            raise ValueError(
                "FeaturePyramid expects ViT maps of one resolution; got " + _shapes(maps)
            )
        return [self.up4(maps[0]), self.up2(maps[1]), maps[2], self.down2(maps[3])]


class UPerNet(nn.Module):
    """UPerNet decoder (Xiao et al. 2018): PPM on the coarsest level + FPN, fused at the finest.

    Args:
        in_channels: Channels of each input level, finest first.
        num_outputs: Classes (or regression outputs) per pixel.
        channels: Width of the decoder.
        pool_scales: Output sizes of the pyramid pooling module.
        dropout: Dropout before the classifier.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_outputs: int,
        channels: int = 128,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
    ) -> None:
        """Build the decoder."""
        super().__init__()
        self.in_channels = tuple(int(c) for c in in_channels)
        if len(self.in_channels) < 2:
            raise ValueError(f"UPerNet needs at least 2 levels; got {self.in_channels}")
        last = self.in_channels[-1]
        self.ppm = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), _conv_bn_relu(last, channels, 1))
            for s in pool_scales
        )
        self.ppm_bottleneck = _conv_bn_relu(last + len(pool_scales) * channels, channels, 3)
        self.lateral = nn.ModuleList(_conv_bn_relu(c, channels, 1) for c in self.in_channels[:-1])
        self.fpn = nn.ModuleList(
            _conv_bn_relu(channels, channels, 3) for _ in self.in_channels[:-1]
        )
        self.fuse = _conv_bn_relu(len(self.in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_outputs, 1)

    def forward(self, features: Sequence[Tensor], size: Sequence[int] | None = None) -> Tensor:
        """Logits ``[B, K, H, W]`` (``size`` = ``(H, W)``, default: the finest map's size)."""
        maps = check_features(features, self.in_channels, "UPerNet")
        top = maps[-1]
        pooled = [top] + [_resize(branch(top), top.shape[-2:]) for branch in self.ppm]
        laterals = [conv(x) for conv, x in zip(self.lateral, maps[:-1], strict=True)]
        laterals.append(self.ppm_bottleneck(torch.cat(pooled, dim=1)))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[-2:])
        outs = [conv(x) for conv, x in zip(self.fpn, laterals[:-1], strict=True)]
        outs.append(laterals[-1])
        fine = outs[0].shape[-2:]
        fused = self.fuse(torch.cat([_resize(x, fine) for x in outs], dim=1))
        out = self.classifier(self.dropout(fused))
        return out if size is None else _resize(out, size)


class DenseHead(nn.Module):
    """A dense decoder for any backbone: UPerNet (with the ViT neck where needed) or linear.

    Args:
        in_channels: Channels of the backbone's levels, finest first.
        strides: Input pixels per feature pixel of each level. When all are equal (a plain ViT),
            :class:`FeaturePyramid` first makes four scales of them (UPerNet only).
        num_outputs: Classes (or regression outputs) per pixel.
        kind: ``"upernet"`` or ``"linear"`` (:class:`LinearDenseHead`).
        channels: UPerNet width.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        num_outputs: int,
        kind: DenseHeadKind = "upernet",
        channels: int = 128,
    ) -> None:
        """Build the head."""
        super().__init__()
        if kind not in get_args(DenseHeadKind):
            raise ValueError(
                f"unknown dense head {kind!r}; expected one of: {', '.join(get_args(DenseHeadKind))}"
            )
        if len(in_channels) != len(strides):
            raise ValueError(
                f"got {len(in_channels)} level channels but {len(strides)} strides; one each"
            )
        self.kind = kind
        self.in_channels = tuple(int(c) for c in in_channels)
        self.neck: FeaturePyramid | None = None
        self.decoder: nn.Module
        if kind == "linear":
            self.decoder = LinearDenseHead(self.in_channels, num_outputs)
            return
        if len(set(strides)) == 1 and len(self.in_channels) == 4:
            if len(set(self.in_channels)) != 1:
                raise ValueError(
                    f"single-scale features must share one width; got {self.in_channels}"
                )
            self.neck = FeaturePyramid(self.in_channels[0])
        self.decoder = UPerNet(self.in_channels, num_outputs, channels=channels)

    def forward(self, features: Sequence[Tensor], size: Sequence[int] | None = None) -> Tensor:
        """Logits ``[B, K, H, W]`` at ``size``."""
        maps = list(features)
        if self.neck is not None:
            maps = self.neck(maps)
        return self.decoder(maps, size)


class ChangeFusion(nn.Module):
    """Fuse per-level features of pre- and post-event acquisitions (Kuro Siwo change detection).

    ``"diff"``: post − mean(pre), per level (same widths). ``"concat"``: ``[mean(pre), post]``
    concatenated along channels (twice the widths). Averaging the pre-event acquisitions (Kuro
    Siwo has two, SL2 and SL1) keeps the fused width independent of their number.

    Args:
        mode: ``"diff"`` or ``"concat"``.
    """

    def __init__(self, mode: FusionMode = "diff") -> None:
        """Choose the fusion."""
        super().__init__()
        if mode not in get_args(FusionMode):
            raise ValueError(
                f"unknown fusion {mode!r}; expected one of: {', '.join(get_args(FusionMode))}"
            )
        self.mode = mode

    def out_channels(self, in_channels: Sequence[int]) -> tuple[int, ...]:
        """Widths of the fused levels."""
        factor = 2 if self.mode == "concat" else 1
        return tuple(int(c) * factor for c in in_channels)

    def forward(self, pre: Sequence[Sequence[Tensor]], post: Sequence[Tensor]) -> list[Tensor]:
        """Fuse ``pre`` (one list of level maps per pre-event acquisition) with ``post``."""
        if len(pre) == 0:
            raise ValueError("ChangeFusion needs at least one pre-event acquisition")
        for i, levels in enumerate(pre):
            if len(levels) != len(post) or any(
                a.shape != b.shape for a, b in zip(levels, post, strict=True)
            ):
                raise ValueError(
                    f"ChangeFusion: pre-event acquisition {i} has maps {_shapes(levels)}; "
                    f"expected the post-event shapes {_shapes(post)}"
                )
        fused = []
        for level, after in enumerate(post):
            before = torch.stack([levels[level] for levels in pre]).mean(dim=0)
            fused.append(after - before if self.mode == "diff" else torch.cat((before, after), 1))
        return fused
