"""Supervised baselines, trained by the same harness as the foundation-model encoders.

Two kinds of network take part in a task (:mod:`thinkingearth.tasks`):

* a :class:`Backbone` gives pooled features ``[B, D]`` (:meth:`Backbone.pooled`) and, for dense
  tasks, feature maps per level (:meth:`Backbone.levels`); the task puts its head on top
  (:mod:`thinkingearth.models.heads`). ResNet-18/50, the Wide-ResNet with ECA and the ViT from
  scratch are backbones, and so is the foundation-model encoder
  (:class:`thinkingearth.tasks.protocols.EncoderBackbone`);
* a :class:`DenseModel` maps an image (``[B, C, H, W]``, or ``[B, T, C, H, W]`` for change
  detection) straight to logits ``[B, K, H, W]``: U-Net and the Siamese change networks.

Baselines, by name (:data:`BASELINES`):

* ``wrn-eca``: Wide-ResNet (Zagoruyko and Komodakis 2016) with Efficient Channel Attention
  (Wang et al. 2020) after each block, the lightweight BigEarthNet classifier of Papoutsis et al.
  (2023); classification only;
* ``resnet18``, ``resnet50`` (He et al. 2016, timm), any task: classification on pooled
  features, UPerNet on the four stages for dense tasks, Siamese features for change detection;
* ``unet`` (Ronneberger et al. 2015): segmentation and regression; change detection by early
  fusion (the acquisitions stacked as channels, FC-EF of Daudt et al. 2018);
* ``siamese-diff``, ``siamese-concat``: FC-Siam-diff / FC-Siam-conc (Daudt et al. 2018), a U-Net
  encoder shared by all acquisitions whose skip connections carry |post − mean(pre)| or every
  acquisition's features; change detection only;
* ``vit-scratch``: a plain supervised ViT (Dosovitskiy et al. 2021, timm) with fixed input
  channels, trained from scratch; any task (UPerNet over four blocks for dense tasks).

A baseline asked for a task it cannot do raises :class:`UnsupportedTaskError` with the reason.

References:
    Papoutsis, Bountos, Zavras, Michail, Tryfonopoulos. "Benchmarking and scaling of deep
    learning models for land cover image classification." ISPRS Journal of Photogrammetry and
    Remote Sensing 195, 2023.
    Wang, Wu, Zhu, Li, Zuo, Hu. "ECA-Net: Efficient Channel Attention for Deep Convolutional
    Neural Networks." CVPR 2020.
    Zagoruyko, Komodakis. "Wide Residual Networks." BMVC 2016.
    He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition." CVPR 2016.
    Ronneberger, Fischer, Brox. "U-Net: Convolutional Networks for Biomedical Image
    Segmentation." MICCAI 2015.
    Daudt, Le Saux, Boulch. "Fully Convolutional Siamese Networks for Change Detection." ICIP
    2018.
    Dosovitskiy et al. "An Image is Worth 16x16 Words: Transformers for Image Recognition at
    Scale." ICLR 2021.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import timm
import torch
import torch.nn.functional as F
from timm.layers import EcaModule
from torch import Tensor, nn

from thinkingearth.errors import UserInputError

__all__ = [
    "BASELINES",
    "Backbone",
    "BaselineName",
    "BaselineSpec",
    "DenseModel",
    "SiameseUNet",
    "TaskKind",
    "TimmResNet",
    "UNet",
    "UnsupportedTaskError",
    "ViTScratch",
    "WideResNetECA",
    "build_baseline",
    "check_image",
    "level_indices",
]

TaskKind = Literal["classification", "multilabel", "segmentation", "change", "regression"]
BaselineName = Literal[
    "wrn-eca", "resnet18", "resnet50", "unet", "siamese-diff", "siamese-concat", "vit-scratch"
]
Batch = Mapping[str, Any]


class UnsupportedTaskError(UserInputError):
    """A model asked for a task it cannot do (the message says why)."""


def check_image(image: Tensor, channels: int, where: str, time_steps: int | None = None) -> None:
    """Check an image batch: ``[B, C, H, W]``, or ``[B, T, C, H, W]`` when ``time_steps`` is set.

    Raises:
        ValueError: Naming the expected and the received shape.
    """
    if time_steps is None:
        if image.ndim != 4 or image.shape[1] != channels:
            raise ValueError(
                f"{where} expects images [B, {channels}, H, W]; got {tuple(image.shape)}"
            )
        return
    if image.ndim != 5 or image.shape[2] != channels or image.shape[1] != time_steps:
        raise ValueError(
            f"{where} expects image series [B, {time_steps}, {channels}, H, W]; "
            f"got {tuple(image.shape)}"
        )


class Backbone(nn.Module):
    """A feature extractor for task heads.

    Attributes:
        embed_dim: Width ``D`` of :meth:`pooled`.
        level_channels: Channels of each map of :meth:`levels`, finest first (empty if the
            backbone has no dense features).
        level_strides: Input pixels per feature pixel of each level.
    """

    embed_dim: int
    level_channels: tuple[int, ...] = ()
    level_strides: tuple[int, ...] = ()

    def pooled(self, image: Tensor, batch: Batch | None = None) -> Tensor:
        """Pooled features ``[B, D]``; ``batch`` carries bands, sensor and metadata."""
        raise NotImplementedError

    def levels(self, image: Tensor, batch: Batch | None = None) -> list[Tensor]:
        """Feature maps ``[B, C_i, h_i, w_i]``, finest first."""
        raise NotImplementedError(f"{type(self).__name__} has no dense features")

    def forward(self, image: Tensor, batch: Batch | None = None) -> Tensor:
        """Same as :meth:`pooled`."""
        return self.pooled(image, batch)


class DenseModel(nn.Module):
    """A complete dense network: image (series) → logits ``[B, K, H, W]``.

    Attributes:
        num_outputs: ``K``.
        time_steps: Acquisitions per sample for change detection (``None``: single images).
    """

    num_outputs: int
    time_steps: int | None = None

    def forward(self, image: Tensor, batch: Batch | None = None) -> Tensor:
        """Logits ``[B, K, H, W]``."""
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------
# ResNet (timm)
# ----------------------------------------------------------------------------------------------


class TimmResNet(Backbone):
    """A timm ResNet with random weights: four stages (strides 4, 8, 16, 32) and global pooling.

    Args:
        name: timm model name (``"resnet18"``, ``"resnet50"``).
        in_channels: Input channels.
    """

    def __init__(self, name: str, in_channels: int) -> None:
        """Build the network (no weights are downloaded)."""
        super().__init__()
        self.in_channels = int(in_channels)
        self.net = timm.create_model(
            name,
            pretrained=False,
            in_chans=in_channels,
            features_only=True,
            out_indices=(1, 2, 3, 4),
        )
        info = self.net.feature_info
        self.level_channels = tuple(int(c) for c in info.channels())
        self.level_strides = tuple(int(r) for r in info.reduction())
        self.embed_dim = self.level_channels[-1]

    def levels(self, image: Tensor, batch: Batch | None = None) -> list[Tensor]:
        """The four stage outputs."""
        check_image(image, self.in_channels, type(self).__name__)
        return list(self.net(image))

    def pooled(self, image: Tensor, batch: Batch | None = None) -> Tensor:
        """Global average of the last stage."""
        return self.levels(image, batch)[-1].mean(dim=(2, 3))


# ----------------------------------------------------------------------------------------------
# Wide-ResNet with ECA
# ----------------------------------------------------------------------------------------------


class _WideBlock(nn.Module):
    """Pre-activation wide residual block with ECA on the residual branch."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.eca = EcaModule(cout)  # kernel size from the channels: |log2(C)/2 + 1/2|, odd
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if not isinstance(self.shortcut, nn.Identity) else x
        out = self.conv1(out)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return self.eca(out) + skip


class WideResNetECA(Backbone):
    """Wide-ResNet-``depth``-``width`` with Efficient Channel Attention (Papoutsis et al. 2023).

    Three groups of ``(depth - 4) / 6`` pre-activation residual blocks of widths ``16w``, ``32w``,
    ``64w`` (strides 1, 2, 2) after a 3×3 stem, an ECA module (Wang et al. 2020) on each block's
    residual branch, then BatchNorm, ReLU and global average pooling. Papoutsis et al. scale depth,
    width and resolution together (EfficientNet-style compound scaling) from a WRN-10-2 base; the
    default WRN-16-4 suits small tiles.

    Args:
        in_channels: Input channels.
        depth: ``6n + 4``.
        width: Widening factor.
        dropout: Dropout between the convolutions of a block.
    """

    def __init__(
        self, in_channels: int, depth: int = 16, width: int = 4, dropout: float = 0.0
    ) -> None:
        """Build the network."""
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4 with n >= 1; got {depth}")
        n = (depth - 4) // 6
        self.in_channels = int(in_channels)
        widths = (16 * width, 32 * width, 64 * width)
        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        cin = 16
        for cout, stride in zip(widths, (1, 2, 2), strict=True):
            for i in range(n):
                blocks.append(_WideBlock(cin, cout, stride if i == 0 else 1, dropout))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.BatchNorm2d(cin)
        self.embed_dim = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def pooled(self, image: Tensor, batch: Batch | None = None) -> Tensor:
        """Global average of the last group, ``[B, 64 * width]``."""
        check_image(image, self.in_channels, "WideResNetECA")
        x = F.relu(self.norm(self.blocks(self.stem(image))))
        return x.mean(dim=(2, 3))


# ----------------------------------------------------------------------------------------------
# ViT from scratch (timm)
# ----------------------------------------------------------------------------------------------


class ViTScratch(Backbone):
    """A plain supervised ViT (timm ``VisionTransformer``), fixed input channels, random weights.

    Any image size works (``dynamic_img_size``); dense tasks read four evenly spaced blocks.

    Args:
        in_channels: Input channels.
        img_size: Image size of the position-embedding grid.
        patch_size: Patch size.
        embed_dim: Token width.
        depth: Number of blocks.
        num_heads: Attention heads.
    """

    def __init__(
        self,
        in_channels: int,
        img_size: int = 64,
        patch_size: int = 8,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
    ) -> None:
        """Build the network."""
        super().__init__()
        self.in_channels = int(in_channels)
        self.net = timm.models.vision_transformer.VisionTransformer(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_channels,
            num_classes=0,
            global_pool="avg",
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            dynamic_img_size=True,
        )
        self.embed_dim = embed_dim
        self.indices = level_indices(depth)
        self.level_channels = (embed_dim,) * 4
        self.level_strides = (patch_size,) * 4

    def pooled(self, image: Tensor, batch: Batch | None = None) -> Tensor:
        """Mean of the patch tokens after the final norm, ``[B, D]``."""
        check_image(image, self.in_channels, "ViTScratch")
        return self.net(image)

    def levels(self, image: Tensor, batch: Batch | None = None) -> list[Tensor]:
        """Patch-token maps after four evenly spaced blocks."""
        check_image(image, self.in_channels, "ViTScratch")
        unique = sorted(set(self.indices))
        maps = self.net.forward_intermediates(
            image, indices=unique, intermediates_only=True, output_fmt="NCHW"
        )
        found = dict(zip(unique, maps, strict=True))
        return [found[i] for i in self.indices]


def level_indices(depth: int) -> tuple[int, ...]:
    """Four evenly spaced block indices ending with the last: 12 → (2, 5, 8, 11), 2 → (0, 0, 1, 1)."""
    return tuple(max(0, math.ceil(depth * k / 4) - 1) for k in (1, 2, 3, 4))


# ----------------------------------------------------------------------------------------------
# U-Net and Siamese U-Nets
# ----------------------------------------------------------------------------------------------


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _UNetEncoder(nn.Module):
    def __init__(self, in_channels: int, widths: Sequence[int]) -> None:
        super().__init__()
        self.stages = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.stages.append(_double_conv(cin, w))
            cin = w

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = stage(x)
            feats.append(x)
        return feats


class _UNetDecoder(nn.Module):
    def __init__(self, widths: Sequence[int], skip_factor: int, num_outputs: int) -> None:
        super().__init__()
        self.ups = nn.ModuleList()
        cin = widths[-1]
        for w in reversed(widths[:-1]):
            self.ups.append(_double_conv(cin + skip_factor * w, w))
            cin = w
        self.classifier = nn.Conv2d(cin, num_outputs, 1)

    def forward(self, bottom: Tensor, skips: Sequence[Tensor]) -> Tensor:
        x = bottom
        for up, skip in zip(self.ups, reversed(skips), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = up(torch.cat((x, skip), dim=1))
        return self.classifier(x)


def _pad_to(image: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    h, w = image.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        flat = image.reshape(-1, *image.shape[-3:])
        mode = "reflect" if ph < h and pw < w else "replicate"
        flat = F.pad(flat, (0, pw, 0, ph), mode=mode)
        image = flat.reshape(*image.shape[:-2], h + ph, w + pw)
    return image, (h, w)


class UNet(DenseModel):
    """U-Net (Ronneberger et al. 2015) with BatchNorm and bilinear upsampling.

    Images whose sides are not a multiple of ``2**(len(widths) - 1)`` are reflect-padded and the
    output cropped back. With ``time_steps`` set, the acquisitions ``[B, T, C, H, W]`` are stacked
    as ``T * C`` channels (early fusion, FC-EF of Daudt et al. 2018).

    Args:
        in_channels: Channels of one acquisition.
        num_outputs: Classes (or regression outputs) per pixel.
        widths: Channels of the encoder stages.
        time_steps: Acquisitions per sample for early-fusion change detection.
    """

    def __init__(
        self,
        in_channels: int,
        num_outputs: int,
        widths: Sequence[int] = (32, 64, 128, 256),
        time_steps: int | None = None,
    ) -> None:
        """Build the network."""
        super().__init__()
        self.in_channels = int(in_channels)
        self.num_outputs = int(num_outputs)
        self.time_steps = time_steps
        self.widths = tuple(int(w) for w in widths)
        self.encoder = _UNetEncoder(in_channels * (time_steps or 1), self.widths)
        self.decoder = _UNetDecoder(self.widths, 1, num_outputs)

    def forward(self, image: Tensor, batch: Batch | None = None) -> Tensor:
        """Logits ``[B, K, H, W]``."""
        check_image(image, self.in_channels, "UNet", self.time_steps)
        if self.time_steps is not None:
            image = image.flatten(1, 2)
        x, (h, w) = _pad_to(image, 2 ** (len(self.widths) - 1))
        feats = self.encoder(x)
        return self.decoder(feats[-1], feats[:-1])[..., :h, :w]


class SiameseUNet(DenseModel):
    """FC-Siam-diff / FC-Siam-conc (Daudt et al. 2018) for ``T`` acquisitions, the last post-event.

    One U-Net encoder is shared by all acquisitions. The decoder starts from the post-event
    bottleneck; its skip connections carry ``|post − mean(pre)|`` (``"diff"``) or every
    acquisition's features concatenated (``"concat"``).

    Args:
        in_channels: Channels of one acquisition.
        num_outputs: Classes per pixel.
        time_steps: Acquisitions per sample (pre-event ones first, post-event last).
        fusion: ``"diff"`` or ``"concat"``.
        widths: Channels of the encoder stages.
    """

    def __init__(
        self,
        in_channels: int,
        num_outputs: int,
        time_steps: int,
        fusion: Literal["diff", "concat"] = "diff",
        widths: Sequence[int] = (32, 64, 128, 256),
    ) -> None:
        """Build the network."""
        super().__init__()
        if time_steps < 2:
            raise ValueError(f"a Siamese change network needs 2+ acquisitions; got {time_steps}")
        if fusion not in ("diff", "concat"):
            raise ValueError(f"unknown fusion {fusion!r}; expected 'diff' or 'concat'")
        self.in_channels = int(in_channels)
        self.num_outputs = int(num_outputs)
        self.time_steps = int(time_steps)
        self.fusion = fusion
        self.widths = tuple(int(w) for w in widths)
        self.encoder = _UNetEncoder(in_channels, self.widths)
        factor = 1 if fusion == "diff" else time_steps
        self.decoder = _UNetDecoder(self.widths, factor, num_outputs)

    def forward(self, image: Tensor, batch: Batch | None = None) -> Tensor:
        """Logits ``[B, K, H, W]`` of ``[B, T, C, H, W]`` inputs."""
        check_image(image, self.in_channels, "SiameseUNet", self.time_steps)
        x, (h, w) = _pad_to(image, 2 ** (len(self.widths) - 1))
        b, t = x.shape[:2]
        feats = self.encoder(x.flatten(0, 1))  # every acquisition through the shared encoder
        per_time = [f.reshape(b, t, *f.shape[1:]) for f in feats]
        skips = []
        for f in per_time[:-1]:
            post, pre = f[:, -1], f[:, :-1]
            if self.fusion == "diff":
                skips.append((post - pre.mean(dim=1)).abs())
            else:
                skips.append(f.flatten(1, 2))
        return self.decoder(per_time[-1][:, -1], skips)[..., :h, :w]


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

_ALL_TASKS: frozenset[str] = frozenset(get_args(TaskKind))


@dataclass(frozen=True)
class BaselineSpec:
    """What a baseline is and which tasks it does.

    Attributes:
        name: Registry name.
        tasks: Task kinds it can do.
        description: One line for reports.
        reason: Why the other task kinds are not done (recorded for skipped runs).
    """

    name: str
    tasks: frozenset[str]
    description: str
    reason: str = ""


BASELINES: Mapping[str, BaselineSpec] = {
    s.name: s
    for s in (
        BaselineSpec(
            "wrn-eca",
            frozenset({"classification", "multilabel"}),
            "Wide-ResNet with ECA (Papoutsis et al. 2023), supervised from scratch",
            "WRN-ECA is a scene classifier (no dense decoder in Papoutsis et al. 2023)",
        ),
        BaselineSpec("resnet18", _ALL_TASKS, "ResNet-18 (timm), supervised from scratch"),
        BaselineSpec("resnet50", _ALL_TASKS, "ResNet-50 (timm), supervised from scratch"),
        BaselineSpec(
            "unet",
            frozenset({"segmentation", "regression", "change"}),
            "U-Net (Ronneberger et al. 2015); early fusion for change detection",
            "U-Net is a dense model; it has no scene-level output",
        ),
        BaselineSpec(
            "siamese-diff",
            frozenset({"change"}),
            "FC-Siam-diff (Daudt et al. 2018)",
            "a Siamese change network needs a multi-temporal change-detection task",
        ),
        BaselineSpec(
            "siamese-concat",
            frozenset({"change"}),
            "FC-Siam-conc (Daudt et al. 2018)",
            "a Siamese change network needs a multi-temporal change-detection task",
        ),
        BaselineSpec("vit-scratch", _ALL_TASKS, "ViT-Tiny (timm), supervised from scratch"),
    )
}
assert tuple(BASELINES) == get_args(BaselineName)


def build_baseline(
    name: str,
    task: TaskKind,
    in_channels: int,
    num_outputs: int,
    *,
    time_steps: int | None = None,
    img_size: int = 64,
    patch_size: int = 8,
    unet_widths: Sequence[int] = (32, 64, 128, 256),
    vit_depth: int = 12,
    wrn_depth: int = 16,
    wrn_width: int = 4,
) -> Backbone | DenseModel:
    """Build a baseline for a task.

    Args:
        name: One of :data:`BASELINES`.
        task: The task kind.
        in_channels: Channels of one acquisition.
        num_outputs: Classes, labels or regression outputs.
        time_steps: Acquisitions per sample (change detection).
        img_size: Image size (ViT position grid).
        patch_size: ViT patch size.
        unet_widths: U-Net stage widths.
        vit_depth: ViT blocks.
        wrn_depth: Wide-ResNet depth (``6n + 4``).
        wrn_width: Wide-ResNet widening factor.

    Returns:
        A :class:`Backbone` (the task adds its head) or a :class:`DenseModel`.

    Raises:
        UserInputError: For an unknown name.
        UnsupportedTaskError: If the baseline cannot do the task (the reason is in the message).
    """
    spec = BASELINES.get(name)
    if spec is None:
        raise UserInputError(f"unknown baseline {name!r}; expected one of: {', '.join(BASELINES)}")
    if task not in spec.tasks:
        raise UnsupportedTaskError(f"{name} cannot do {task}: {spec.reason}")
    if name == "wrn-eca":
        return WideResNetECA(in_channels, depth=wrn_depth, width=wrn_width)
    if name in ("resnet18", "resnet50"):
        return TimmResNet(name, in_channels)
    if name == "vit-scratch":
        return ViTScratch(in_channels, img_size=img_size, patch_size=patch_size, depth=vit_depth)
    if name == "unet":
        steps = time_steps if task == "change" else None
        return UNet(in_channels, num_outputs, widths=unet_widths, time_steps=steps)
    if time_steps is None:
        raise ValueError(f"{name} needs time_steps (acquisitions per sample)")
    fusion: Literal["diff", "concat"] = "diff" if name == "siamese-diff" else "concat"
    return SiameseUNet(in_channels, num_outputs, time_steps, fusion, widths=unet_widths)
