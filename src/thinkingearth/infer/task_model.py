"""A trained task checkpoint as a :class:`~thinkingearth.infer.model.SceneModel`.

:func:`load_task` reads a checkpoint written by
:func:`thinkingearth.tasks.checkpoint.save_task` (safetensors + JSON, nothing unpickled),
rebuilds the task module and wraps it: the scene predictor hands it tiles ``[B, T, C, h, w]`` in
stored units (SAR as linear sigma0, no-data pixels as NaN); the network normalises them with the
stored :class:`~thinkingearth.data.transforms.Normaliser` (exactly as in training: registry
statistics, SAR in dB, no-data to 0), runs the module's
:meth:`~thinkingearth.tasks.protocols.TaskModule.predictive_samples` (``[S, B, K, h, w]`` class
probabilities, one entry per weight sample: ``S = 1`` for plain and heteroscedastic heads,
``head.mc_samples`` for MC dropout, ``head.members`` for an ensemble) and returns their mean over
the samples ``[B, K, h, w]``. Its split twin (:attr:`SceneModel.split_network`, for
``predict --uncertainty split``) appends the expected entropy over the samples (nats,
:func:`thinkingearth.uncertainty.decompose.entropy`) as channel ``K``.

A module whose backbone was trained with metadata (``use_meta``) gets it as in training: the
scene model is marked :attr:`~thinkingearth.infer.model.SceneModel.metadata`, the predictor hands
the network each tile's ``lon``, ``lat``, ``gsd`` ``[B]`` and ``time`` ``[B, T]``, and they go
into the batch the module reads (a single-image module gets ``time`` as ``[B]``, one date per
sample, as collated Samples carry it). The acquisitions are those it was trained with, no fewer
and no more: a change module trained on three refuses two, and the reverse.

``precision="int8"`` (``predict --precision int8``) runs the encoder's transformer blocks as a
dynamically quantised ONNX Runtime graph on the CPU (:class:`Int8EncoderBackbone`, over
:class:`~thinkingearth.models.int8.Int8Levels`): the dense heads get the same feature maps as in
fp32, from int8 weight products; the hypernetwork patch embedding, the head and the fusion stay
fp32 in PyTorch. Only a module on the any-sensor encoder has that path; one on a supervised
baseline (U-Net, ResNet, ...) is refused in one line.

The writer lives with the tasks (:mod:`thinkingearth.tasks.checkpoint`); this adapter lives
here because the data flow runs one way, tasks → infer.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from thinkingearth.data.transforms import Normaliser
from thinkingearth.errors import UserInputError
from thinkingearth.infer.model import TASK_CLASSES, TASKS, SceneModel
from thinkingearth.models.int8 import Int8Levels
from thinkingearth.tasks.checkpoint import TaskCheckpoint, load_task_module
from thinkingearth.tasks.protocols import EncoderBackbone
from thinkingearth.tasks.segmentation import SegmentationTask
from thinkingearth.tasks.variants import UncertaintyHead
from thinkingearth.uncertainty.decompose import entropy
from thinkingearth.viz import LANDCOVER_COLOURS

__all__ = [
    "CACHE_ENV",
    "PRECISIONS",
    "Int8EncoderBackbone",
    "Precision",
    "TaskNetwork",
    "default_int8_cache",
    "load_task",
    "weight_samples",
]

Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


class Int8EncoderBackbone(EncoderBackbone):
    """An :class:`EncoderBackbone` whose inference runs the blocks in int8 (ONNX Runtime).

    In eval mode without autograd, :meth:`levels` embeds the image in PyTorch
    (:meth:`~thinkingearth.models.encoder.Encoder.embed`: hypernetwork kernels, position and
    metadata encodings) and runs the blocks up to the deepest level through
    :class:`~thinkingearth.models.int8.Int8Levels`; :meth:`pooled` uses the encoder's own int8
    trunk (:meth:`~thinkingearth.models.encoder.Encoder.set_precision`). With autograd or in
    training mode both run the fp32 modules, as the encoder does. The weights (and their names in
    the state dict) are those of the backbone it replaces.

    Args:
        backbone: The fp32 backbone (its encoder is shared, not copied).
        cache_dir: Directory for the quantised graphs (reused across runs, named by a digest of
            the weights); default a temporary directory removed with the backbone.

    Raises:
        OnnxRuntimeUnavailableError: Without onnxruntime / onnx (a one-line
            :class:`~thinkingearth.errors.UserInputError` naming the install command).
    """

    def __init__(self, backbone: EncoderBackbone, cache_dir: str | Path | None = None) -> None:
        """Share the backbone's encoder and settings; set up the int8 graphs."""
        super().__init__(
            backbone.encoder,
            patch_size=backbone.patch_size,
            indices=backbone.indices,
            use_meta=backbone.use_meta,
        )
        self.training = backbone.training
        self.int8_levels = Int8Levels(cache_dir, indices=self.indices)
        self.encoder.set_precision("int8", cache_dir=cache_dir)

    def levels(self, image: Tensor, batch: Mapping[str, Any] | None = None) -> list[Tensor]:
        """Patch-token maps ``[B, D, h, w]`` after the chosen blocks (int8 at inference)."""
        if self.training or torch.is_grad_enabled():
            return super().levels(image, batch)
        tokens, grid = self.encoder.embed(image, **self._inputs(batch))
        return self.int8_levels(self.encoder, tokens, grid)


def weight_samples(head: UncertaintyHead) -> int:
    """Weight samples ``S`` a module with this uncertainty head averages per prediction.

    As :meth:`~thinkingearth.tasks.protocols.TaskModule.predictive_samples` draws them: 1 for
    plain and heteroscedastic heads (each prediction already averages its noisy logits),
    ``mc_samples`` for MC dropout, ``members`` for an ensemble.
    """
    if head.uncertainty == "mc_dropout":
        return int(head.mc_samples)
    if head.uncertainty == "ensemble":
        return int(head.members)
    return 1


class TaskNetwork(nn.Module):
    """``[B, T, C, h, w]`` raw stored values → normalise → task module → probabilities.

    Args:
        module: The task module (segmentation takes ``T = 1``, change detection ``T >= 2``).
        normaliser: The normalisation it was trained with.
        sensor: Registry sensor name of the inputs.
        bands: Band names of the ``C`` channels.
        change: True for a change-detection module (keeps the time axis).
        metadata: Put the metadata given to :meth:`forward` into the module's batch (the
            backbone was trained with it).
        split: Also return the expected entropy over the weight samples as a last channel
            (``[B, K + 1, h, w]``).
    """

    def __init__(
        self,
        module: SegmentationTask,
        normaliser: Normaliser,
        sensor: str,
        bands: tuple[str, ...],
        change: bool,
        metadata: bool = False,
        split: bool = False,
    ) -> None:
        """Keep the module and what normalises its inputs."""
        super().__init__()
        self.module = module
        self.normaliser = normaliser
        self.sensor = sensor
        self.bands = bands
        self.change = change
        self.metadata = metadata
        self.split = split

    def forward(self, x: Tensor, meta: Mapping[str, Tensor] | None = None) -> Tensor:
        """Class probabilities ``[B, K, h, w]`` (with :attr:`split`: ``[B, K + 1, h, w]``).

        The probabilities are the mean over the module's weight samples; with :attr:`split`
        channel ``K`` is the mean over the samples of their entropy (nats): the expected
        entropy, the aleatoric part of the predictive entropy.

        Args:
            x: Tiles ``[B, T, C, h, w]`` in stored units, no-data as NaN.
            meta: ``lon``, ``lat``, ``gsd`` ``[B]`` and ``time`` ``[B, T]`` (NaN: unknown); used
                when :attr:`metadata` is set, else ignored. Without it a metadata module sees
                every field as unknown.
        """
        if x.ndim != 5:
            raise ValueError(f"expected tiles [B, T, C, h, w]; got {tuple(x.shape)}")
        image = self.normaliser(x, self.sensor, self.bands)
        if not self.change:
            image = image[:, -1]
        batch: dict[str, Any] = {"image": image, "bands": list(self.bands), "sensor": self.sensor}
        if self.metadata and meta is not None:
            batch.update(_batch_metadata(meta, x.shape[0], x.shape[1], self.change))
        samples = self.module.predictive_samples(batch).float()  # [S, B, K, h, w]
        if samples.ndim != 5 or samples.shape[1] != x.shape[0]:
            raise ValueError(
                f"predictive_samples returned {tuple(samples.shape)}; expected "
                f"[S, {x.shape[0]}, K, h, w]"
            )
        probs = samples[0] if samples.shape[0] == 1 else samples.mean(dim=0)
        if not self.split:
            return probs
        expected = entropy(samples, dim=2).mean(dim=0)  # [B, h, w]
        return torch.cat([probs, expected.unsqueeze(1).to(probs.dtype)], dim=1)


def _batch_metadata(
    meta: Mapping[str, Tensor], batch: int, steps: int, change: bool
) -> dict[str, Tensor]:
    """The metadata entries of a module batch: float64 ``[B]``; ``time`` ``[B, T]`` for series."""
    out: dict[str, Tensor] = {}
    for key in ("lon", "lat", "gsd"):
        value = torch.as_tensor(meta[key], dtype=torch.float64).reshape(-1)
        if value.shape != (batch,):
            raise ValueError(f"meta[{key!r}] has shape {tuple(value.shape)}; expected [{batch}]")
        out[key] = value
    time = torch.as_tensor(meta["time"], dtype=torch.float64)
    if time.shape != (batch, steps):
        raise ValueError(f"meta['time'] has shape {tuple(time.shape)}; expected [{batch}, {steps}]")
    out["time"] = time if change else time[:, -1]
    return out


def _colours(task: str, classes: tuple[str, ...]) -> tuple[str, ...]:
    names, colours = TASK_CLASSES[task]
    if tuple(classes) == tuple(names):
        return tuple(colours)
    palette = LANDCOVER_COLOURS
    return tuple(palette[i % len(palette)] for i in range(len(classes)))


#: Environment variable naming the toolkit's cache folder (int8 graphs go in its ``int8/``).
CACHE_ENV = "THINKINGEARTH_CACHE"


def default_int8_cache() -> Path:
    """Where ``predict --precision int8`` keeps its quantised graphs between runs.

    ``$THINKINGEARTH_CACHE/int8``, else ``$XDG_CACHE_HOME/thinkingearth/int8``, else
    ``~/.cache/thinkingearth/int8``. A graph's file name is a digest of the encoder's weights,
    its configuration and the torch and ONNX Runtime versions, so a file found there is the
    graph of exactly these weights: the export and quantisation (seconds for a ViT-S) are paid
    once per checkpoint instead of once per run.
    """
    from thinkingearth.fileio import user_cache_dir

    root = os.environ.get(CACHE_ENV)
    return (Path(root).expanduser() if root else user_cache_dir()) / "int8"


def load_task(
    path: str | Path,
    *,
    overlap: int | None = None,
    precision: Precision = "fp32",
    cache_dir: str | Path | None = None,
) -> SceneModel:
    """Load a task checkpoint as a :class:`SceneModel` for :func:`predict_scene`.

    The scene model takes exactly the number of acquisitions the module was trained with
    (``steps``), and metadata when its backbone was trained with it (``metadata``).

    Args:
        path: ``<path>.safetensors`` or ``<path>.json`` (or the path without suffix).
        overlap: Tile overlap in pixels (default: an eighth of the stored tile).
        precision: ``fp32`` (exact) or ``int8``: the encoder's blocks as a dynamically quantised
            ONNX Runtime graph on the CPU (:class:`Int8EncoderBackbone`; modules on the
            any-sensor encoder only).
        cache_dir: For ``int8``: directory for the quantised graphs (default: a temporary one).

    Raises:
        UserInputError: (a :class:`~thinkingearth.models.weights.CheckpointFormatError`) for a
            missing, damaged or foreign file, one line; for ``int8`` on a module without the
            encoder, or without onnxruntime installed, one line.
    """
    from thinkingearth.models.weights import CheckpointFormatError, training_checkpoint_error

    if precision not in PRECISIONS:
        raise UserInputError(
            f"unknown precision {precision!r}; expected one of: {', '.join(PRECISIONS)}"
        )
    if Path(path).suffix == ".ckpt":  # a run's checkpoints/step-*.ckpt, an easy mix-up
        raise training_checkpoint_error(
            path,
            expected="a task model",
            written_by="a finetune run's model",
            file="model.safetensors",
        )
    ckpt: TaskCheckpoint = load_task_module(path)
    if ckpt.kind not in ("segmentation", "change"):
        raise CheckpointFormatError(
            f"{ckpt.path} holds a {ckpt.kind} model ({ckpt.task}); predict maps scenes with "
            "segmentation and change-detection models"
        )
    if ckpt.task not in TASKS:
        raise CheckpointFormatError(
            f"{ckpt.path}: a {ckpt.task} model; predict maps the tasks {', '.join(TASKS)} "
            "(finetune with task.name set to one of them)"
        )
    from thinkingearth.models.published import sha256_of

    # Provenance written into every map predicted with it.
    tags = {
        "WEIGHTS": ckpt.path.name,
        "WEIGHTS_SHA256": sha256_of(ckpt.path),
        "PRECISION": precision,
    }
    if precision == "int8":
        # A module without one backbone (an ensemble's are in its members) has no int8 path.
        backbone = getattr(ckpt.module, "backbone", None)
        if backbone is None:
            raise UserInputError(
                f"{ckpt.path.name} is a {type(ckpt.module).__name__} without one encoder "
                "backbone; int8 precision quantises a single encoder's blocks: use fp32"
            )
        if not isinstance(backbone, EncoderBackbone):
            raise UserInputError(
                f"{ckpt.path.name} is a {type(backbone).__name__} baseline; int8 precision "
                "quantises the any-sensor encoder's blocks and has no path for baselines: "
                "use fp32"
            )
        ckpt.module.backbone = Int8EncoderBackbone(backbone, cache_dir)
        tags["PRECISION"] = "int8 (encoder blocks: ONNX Runtime dynamic quantisation)"
    change = ckpt.acquisitions > 1
    metadata = ckpt.uses_metadata
    network = TaskNetwork(
        ckpt.module, ckpt.normaliser, ckpt.sensor, ckpt.bands, change, metadata=metadata
    )
    # The same module and normaliser (shared, not copied), also returning the expected entropy.
    split_network = TaskNetwork(
        ckpt.module, ckpt.normaliser, ckpt.sensor, ckpt.bands, change, metadata=metadata, split=True
    )
    head = getattr(ckpt.module, "uncertainty_head", None) or UncertaintyHead()
    # Exactly the acquisitions it was trained with: the fused features of two acquisitions are
    # not those of three, so a model trained on three would silently mis-predict on two.
    steps = (ckpt.acquisitions,)
    return SceneModel(
        network=network,
        task=ckpt.task,  # type: ignore[arg-type]
        classes=ckpt.classes,
        colours=_colours(ckpt.task, ckpt.classes),
        sensor=ckpt.sensor,
        bands=ckpt.bands,
        steps=steps,
        tile=ckpt.tile,
        overlap=ckpt.tile // 8 if overlap is None else overlap,
        sar_units="linear",
        outputs="probabilities",
        fill=(math.nan,) * len(ckpt.bands),
        name=ckpt.path.stem,
        tags=tags,
        metadata=metadata,
        uncertainty_method=head.uncertainty,
        weight_samples=weight_samples(head),
        split_network=split_network,
    )
