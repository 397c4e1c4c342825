"""Trained task checkpoints: a dense task module (encoder + head) saved for scene prediction.

A task checkpoint is two files side by side, as our encoder checkpoints
(:mod:`thinkingearth.models.weights`):

* ``<path>.safetensors``: every tensor of the task module (encoder, fusion, head, BatchNorm
  statistics) under its ``state_dict`` name, plus the encoder's language table if it has one;
* ``<path>.json``: what rebuilds the module and runs it: format marker, the encoder
  configuration, the backbone settings (patch size, block indices, metadata use), the head
  (``upernet``/``linear``, width, fusion for change tasks), the task (``flood``, ``water`` or
  ``landcover``) and its class names, the sensor, band names and number of acquisitions the
  module was trained with, the :class:`~thinkingearth.data.transforms.Normaliser`
  (``to_dict``) that turns raw stored values into its inputs, and the tile size.

Only safetensors are read; nothing is unpickled. Supported modules are
:class:`~thinkingearth.tasks.segmentation.SegmentationTask` (single images) and
:class:`~thinkingearth.tasks.change.ChangeTask` (image series) on an
:class:`~thinkingearth.tasks.protocols.EncoderBackbone`.

This module writes and rebuilds the module; :func:`thinkingearth.infer.task_model.load_task`
wraps it as a :class:`~thinkingearth.infer.model.SceneModel` (infer reads tasks, never the
other way round).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from thinkingearth.data.transforms import Normaliser
from thinkingearth.errors import UserInputError
from thinkingearth.fileio import atomic_file
from thinkingearth.models.encoder import Encoder, EncoderConfig
from thinkingearth.models.heads import DenseHead, UPerNet
from thinkingearth.models.weights import CheckpointFormatError
from thinkingearth.sensors import get_sensor
from thinkingearth.tasks.change import ChangeTask
from thinkingearth.tasks.protocols import EncoderBackbone
from thinkingearth.tasks.segmentation import SegmentationTask

__all__ = ["TASK_FORMAT", "TASK_KINDS", "TaskCheckpoint", "load_task_module", "save_task"]

#: Format marker of the JSON file.
TASK_FORMAT: str = "thinkingearth.task"
_FORMAT_VERSION = 1
#: The tasks a checkpoint can hold (the scene predictor's tasks).
TASK_KINDS: tuple[str, ...] = ("flood", "water", "landcover")
_TABLE_KEY = "__language_table__"


def _paths(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    base = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


@dataclass
class TaskCheckpoint:
    """A rebuilt task module (eval mode) and the facts stored with it."""

    module: SegmentationTask
    task: str
    classes: tuple[str, ...]
    sensor: str
    bands: tuple[str, ...]
    acquisitions: int
    normaliser: Normaliser
    tile: int
    path: Path


def save_task(
    module: SegmentationTask,
    path: str | Path,
    *,
    task: str,
    classes: Sequence[str],
    sensor: str,
    bands: Sequence[str],
    normaliser: Normaliser,
    tile: int,
    acquisitions: int | None = None,
) -> Path:
    """Save a trained dense task module as ``<path>.safetensors`` + ``<path>.json``.

    Args:
        module: A :class:`SegmentationTask` or :class:`ChangeTask` on an
            :class:`EncoderBackbone`.
        path: Target path, with or without the ``.safetensors`` suffix.
        task: ``flood``, ``water`` or ``landcover``.
        classes: One name per output class of the module.
        sensor: Registry name of the input sensor.
        bands: Input bands in the module's channel order.
        normaliser: The normalisation the module was trained with.
        tile: Tile side in pixels to predict with.
        acquisitions: Acquisitions per input (default: 1 for segmentation, 3 for change).

    Returns:
        The path of the ``.safetensors`` file.

    Raises:
        UserInputError: For a module, task, class list, sensor or band list that does not fit.
    """
    if task not in TASK_KINDS:
        raise UserInputError(f"unknown task {task!r}; expected one of: {', '.join(TASK_KINDS)}")
    if not isinstance(module, SegmentationTask) or not isinstance(module.backbone, EncoderBackbone):
        raise UserInputError(
            "save_task saves a SegmentationTask or ChangeTask on an EncoderBackbone; got "
            f"{type(module).__name__} on {type(module.backbone).__name__}"
        )
    assert isinstance(module.head, DenseHead)
    change = isinstance(module, ChangeTask)
    classes = tuple(str(c) for c in classes)
    if len(classes) != module.num_classes:
        raise UserInputError(
            f"the module has {module.num_classes} classes; {len(classes)} names were given"
        )
    spec = get_sensor(sensor)
    band_names = [b.name for b in spec.select(list(bands))]
    normaliser.mean_std(spec.name, band_names)  # fails now if statistics are missing
    steps = int(acquisitions if acquisitions is not None else (3 if change else 1))
    if (change and steps < 2) or (not change and steps != 1):
        raise UserInputError(
            f"{type(module).__name__} takes {'2 or more' if change else 'one'} acquisition(s); "
            f"got {steps}"
        )
    if tile <= 0:
        raise UserInputError(f"tile must be positive, got {tile}")
    backbone = module.backbone
    encoder = backbone.encoder
    head = module.head
    decoder = head.decoder
    channels = decoder.classifier.in_channels if isinstance(decoder, UPerNet) else 128
    tensors_path, config_path = _paths(path)
    tensors_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    keys = sorted(encoder.language_table)
    if keys:
        tensors[_TABLE_KEY] = torch.stack([encoder.language_table[k] for k in keys])
    header: dict[str, Any] = {
        "format": TASK_FORMAT,
        "format_version": _FORMAT_VERSION,
        "task": task,
        "module": "change" if change else "segmentation",
        "classes": list(classes),
        "sensor": spec.name,
        "bands": band_names,
        "acquisitions": steps,
        "normaliser": normaliser.to_dict(),
        "tile": int(tile),
        "encoder": {"config": encoder.config.to_dict(), "language_keys": keys},
        "backbone": {
            "patch_size": backbone.patch_size,
            "indices": list(backbone.indices),
            "use_meta": backbone.use_meta,
        },
        "head": {
            "kind": head.kind,
            "channels": int(channels),
            "num_classes": module.num_classes,
            "ignore_index": module.ignore_index,
            "fusion": module.fusion_mode if isinstance(module, ChangeTask) else None,
        },
    }
    # Tensors first, the JSON that names them last, each complete or absent (no half files).
    with atomic_file(tensors_path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": TASK_FORMAT})
    with atomic_file(config_path) as tmp:
        tmp.write_text(json.dumps(header, indent=2) + "\n", encoding="utf-8")
    return tensors_path


def _header(config_path: Path) -> dict[str, Any]:
    try:
        header = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointFormatError(f"{config_path}: not a readable JSON file ({error})") from None
    if not isinstance(header, dict) or header.get("format") != TASK_FORMAT:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise CheckpointFormatError(
            f"{config_path}: expected a task checkpoint (format {TASK_FORMAT!r}), found {found!r}"
        )
    return header


def load_task_module(path: str | Path) -> TaskCheckpoint:
    """Rebuild the task module saved by :func:`save_task` (eval mode, CPU).

    Raises:
        CheckpointFormatError: For missing files, a JSON that is not a task checkpoint, or
            tensors that are unreadable or do not fit the stored configuration (one line).
    """
    tensors_path, config_path = _paths(path)
    for p in (config_path, tensors_path):
        if not p.is_file():
            raise CheckpointFormatError(
                f"{path}: a task checkpoint is a .safetensors file with a .json beside it; "
                f"missing {p}"
            )
    header = _header(config_path)
    try:
        head = header["head"]
        backbone_cfg = header["backbone"]
        encoder = Encoder(EncoderConfig.from_dict(header["encoder"]["config"]))
        backbone = EncoderBackbone(
            encoder,
            patch_size=backbone_cfg["patch_size"],
            indices=backbone_cfg["indices"],
            use_meta=backbone_cfg["use_meta"],
        )
        classes = tuple(str(c) for c in header["classes"])
        common: dict[str, Any] = dict(
            ignore_index=head["ignore_index"],
            protocol="finetune",
            head=head["kind"],
            decoder_channels=head["channels"],
            class_names=classes,
        )
        module: SegmentationTask
        if header["module"] == "change":
            module = ChangeTask(
                backbone,
                head["num_classes"],
                fusion=head["fusion"],
                metrics="segmentation",
                **common,
            )
        elif header["module"] == "segmentation":
            module = SegmentationTask(backbone, head["num_classes"], **common)
        else:
            raise KeyError(f"module kind {header['module']!r}")
        normaliser = Normaliser.from_dict(header["normaliser"])
        facts = (
            str(header["task"]),
            str(header["sensor"]),
            tuple(str(b) for b in header["bands"]),
            int(header["acquisitions"]),
            int(header["tile"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointFormatError(
            f"{config_path}: incomplete task checkpoint ({error})"
        ) from None
    try:
        tensors = load_file(str(tensors_path))
    except Exception as error:  # safetensors raises its own error type for damaged files
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointFormatError(
            f"{tensors_path}: not a readable safetensors file ({message})"
        ) from None
    table = tensors.pop(_TABLE_KEY, None)
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError:
        expected = set(module.state_dict())
        missing = sorted(expected - set(tensors))[:3]
        unexpected = sorted(set(tensors) - expected)[:3]
        raise CheckpointFormatError(
            f"{tensors_path}: tensors do not match the stored configuration (missing {missing}, "
            f"unexpected {unexpected}, or shapes differ)"
        ) from None
    keys = header["encoder"].get("language_keys") or []
    if table is not None and keys:
        encoder.set_language_embeddings(dict(zip(keys, table, strict=True)))
    task, sensor, bands, steps, tile = facts
    return TaskCheckpoint(
        module=module.eval(),
        task=task,
        classes=classes,
        sensor=sensor,
        bands=bands,
        acquisitions=steps,
        normaliser=normaliser,
        tile=tile,
        path=tensors_path,
    )
