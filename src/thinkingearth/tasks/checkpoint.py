"""Trained task checkpoints: a task module (backbone + head) saved for prediction.

A task checkpoint is two files side by side, as our encoder checkpoints
(:mod:`thinkingearth.models.weights`):

* ``<path>.safetensors``: every tensor of the task module (backbone, fusion, head, BatchNorm
  statistics) under its ``state_dict`` name, plus the encoder's language table if it has one;
* ``<path>.json``: what rebuilds the module and runs it: format marker, the module kind
  (``classification``, ``multilabel``, ``segmentation``, ``change``, ``regression``), the
  backbone (the any-sensor encoder's configuration with its patch size, block indices and
  whether it reads metadata; or a supervised baseline by name with the arguments that build
  it), the head (``upernet``/``linear``, width, fusion for change tasks, target statistics for
  regression), the task name (``flood``, ``water``, ``landcover`` for the scene predictor, or
  the name of the task it was trained on) and its class names, the sensor, band names and number
  of acquisitions the module was trained with, the
  :class:`~thinkingearth.data.transforms.Normaliser` (``to_dict``) that turns raw stored values
  (SAR as linear sigma0) into its inputs, the tile size, and how the module estimates its
  uncertainty (``uncertainty``: :meth:`~thinkingearth.tasks.variants.UncertaintyHead.to_dict`;
  absent in checkpoints before format version 3, which load as ``none``).

Only safetensors are read; nothing is unpickled. Every task module of
:mod:`thinkingearth.tasks` is supported (and the uncertainty variants built through
:func:`~thinkingearth.tasks.training.build_task_module`, rebuilt the same way), on an
:class:`~thinkingearth.tasks.protocols.EncoderBackbone` or on a baseline of
:mod:`thinkingearth.models.baselines` (for which ``save_task`` takes the ``baseline`` arguments,
since a built network does not remember them).

This module writes and rebuilds the module; :func:`thinkingearth.infer.task_model.load_task`
wraps it as a :class:`~thinkingearth.infer.model.SceneModel` (infer reads tasks, never the
other way round).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from thinkingearth.data.transforms import Normaliser
from thinkingearth.errors import UserInputError
from thinkingearth.fileio import atomic_file
from thinkingearth.models.baselines import build_baseline
from thinkingearth.models.encoder import Encoder, EncoderConfig
from thinkingearth.models.heads import DenseHead, UPerNet
from thinkingearth.models.weights import (
    LANGUAGE_TABLE_KEY,
    CheckpointFormatError,
    pack_language_table,
    unpack_language_table,
)
from thinkingearth.sensors import get_sensor
from thinkingearth.tasks.change import ChangeTask
from thinkingearth.tasks.classification import ClassificationTask
from thinkingearth.tasks.protocols import EncoderBackbone, TaskModule
from thinkingearth.tasks.regression import RegressionTask
from thinkingearth.tasks.segmentation import SegmentationTask
from thinkingearth.tasks.training import build_task_module
from thinkingearth.tasks.variants import UncertaintyHead, get_uncertainty_builder

__all__ = [
    "MODULE_KINDS",
    "TASK_FORMAT",
    "TASK_KINDS",
    "TaskCheckpoint",
    "load_task_module",
    "module_kind",
    "save_task",
]

#: Format marker of the JSON file.
TASK_FORMAT: str = "thinkingearth.task"
_FORMAT_VERSION = 3  # 3: the "uncertainty" key
#: The scene predictor's tasks (a checkpoint may also name the task it was trained on).
TASK_KINDS: tuple[str, ...] = ("flood", "water", "landcover")
#: Module kinds a checkpoint can hold.
MODULE_KINDS: tuple[str, ...] = (
    "classification",
    "multilabel",
    "segmentation",
    "change",
    "regression",
)


def _paths(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    base = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


@dataclass
class TaskCheckpoint:
    """A rebuilt task module (eval mode) and the facts stored with it.

    Attributes:
        module: The task module, eval mode, on the CPU.
        kind: Module kind (:data:`MODULE_KINDS`).
        task: Task name (a scene task of :data:`TASK_KINDS`, or the training task's name).
        classes: Class names (empty for regression).
        sensor: Registry name of the input sensor.
        bands: Input bands in channel order.
        acquisitions: Acquisitions per input (change detection: 2 or more).
        normaliser: The normalisation of stored values (SAR as linear sigma0).
        tile: Tile side in pixels to predict with.
        uses_metadata: The backbone reads ``lon``, ``lat``, ``time`` and ``gsd`` of its inputs.
        path: The ``.safetensors`` file.
    """

    module: TaskModule
    kind: str
    task: str
    classes: tuple[str, ...]
    sensor: str
    bands: tuple[str, ...]
    acquisitions: int
    normaliser: Normaliser
    tile: int
    uses_metadata: bool
    path: Path


def module_kind(module: Any) -> str | None:
    """The kind (:data:`MODULE_KINDS`) of a task module, or ``None`` for anything else.

    Variants that wrap task modules (deep ensembles) declare it as ``task_kind``; the plain
    modules are known by their class.
    """
    declared = getattr(module, "task_kind", None)
    if declared in MODULE_KINDS:
        return str(declared)
    if isinstance(module, ChangeTask):
        return "change"
    if isinstance(module, SegmentationTask):
        return "segmentation"
    if isinstance(module, RegressionTask):
        return "regression"
    if isinstance(module, ClassificationTask):
        return "multilabel" if module.multilabel else "classification"
    return None


def _module_kind(module: TaskModule) -> str:
    kind = module_kind(module)
    if kind is None:
        raise UserInputError(f"save_task saves task modules of thinkingearth.tasks; got {module!r}")
    return kind


def save_task(
    module: TaskModule,
    path: str | Path,
    *,
    task: str,
    classes: Sequence[str],
    sensor: str,
    bands: Sequence[str],
    normaliser: Normaliser,
    tile: int,
    acquisitions: int | None = None,
    baseline: Mapping[str, Any] | None = None,
) -> Path:
    """Save a trained task module as ``<path>.safetensors`` + ``<path>.json``.

    Args:
        module: A task module of :mod:`thinkingearth.tasks` on an :class:`EncoderBackbone`, or
            on a baseline (then pass ``baseline``).
        path: Target path, with or without the ``.safetensors`` suffix.
        task: ``flood``, ``water`` or ``landcover`` for the scene predictor, or the name of the
            task it was trained on (letters, digits, ``-`` and ``_``).
        classes: One name per output class of the module (empty for regression).
        sensor: Registry name of the input sensor.
        bands: Input bands in the module's channel order.
        normaliser: The normalisation the module was trained with.
        tile: Tile side in pixels to predict with.
        acquisitions: Acquisitions per input (default: 1, or 3 for change detection).
        baseline: For a baseline network, the arguments of
            :func:`thinkingearth.models.baselines.build_baseline` that rebuild it (``name``,
            ``in_channels`` and the keyword arguments it was built with; the task kind, number
            of outputs and acquisitions are added here).

    Returns:
        The path of the ``.safetensors`` file.

    Raises:
        UserInputError: For a module, task, class list, sensor or band list that does not fit.
    """
    if not task or not all(c.isalnum() or c in "-_" for c in task):
        raise UserInputError(f"task name {task!r}: expected letters, digits, '-' and '_'")
    kind = _module_kind(module)
    change = kind == "change"
    classes = tuple(str(c) for c in classes)
    outputs = 1 if kind == "regression" else int(module.num_classes)  # type: ignore[attr-defined]
    if kind != "regression" and len(classes) != outputs:
        raise UserInputError(f"the module has {outputs} classes; {len(classes)} names were given")
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
    # A clone per name: safetensors refuses tensors that share memory, and a module may hold one
    # parameter under two names (e.g. an ensemble's shared frozen backbone); loading fills both.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    backbone_header: dict[str, Any]
    encoder_header: dict[str, Any] | None = None
    if isinstance(backbone, EncoderBackbone):
        if baseline is not None:
            raise UserInputError("baseline arguments were given for an encoder backbone")
        encoder = backbone.encoder
        keys, table = pack_language_table(encoder)
        tensors.update(table)
        encoder_header = {"config": encoder.config.to_dict(), "language_keys": keys}
        backbone_header = {
            "kind": "encoder",
            "patch_size": backbone.patch_size,
            "indices": list(backbone.indices),
            "use_meta": backbone.use_meta,
        }
    else:
        if baseline is None or "name" not in baseline or "in_channels" not in baseline:
            raise UserInputError(
                f"{type(backbone).__name__} is a baseline: save_task needs baseline={{'name': "
                "..., 'in_channels': ..., ...}, the arguments that built it"
            )
        backbone_header = {"kind": "baseline", **{k: _plain(v) for k, v in baseline.items()}}
    head = getattr(module, "head", None)
    head_header: dict[str, Any] = {
        "num_classes": outputs,
        "ignore_index": getattr(module, "ignore_index", None),
        "protocol": module.protocol,
    }
    if isinstance(head, DenseHead):
        decoder = head.decoder
        head_header["kind"] = head.kind
        head_header["channels"] = int(
            decoder.classifier.in_channels if isinstance(decoder, UPerNet) else 128
        )
    # By kind, not class: a wrapper such as an ensemble declares its kind and carries these.
    if kind == "change":
        head_header["fusion"] = module.fusion_mode
    if kind == "regression":
        head_header["target_mean"] = module.target_mean
        head_header["target_std"] = module.target_std
    tensors_path, config_path = _paths(path)
    tensors_path.parent.mkdir(parents=True, exist_ok=True)
    header: dict[str, Any] = {
        "format": TASK_FORMAT,
        "format_version": _FORMAT_VERSION,
        "task": task,
        "module": kind,
        "classes": list(classes),
        "sensor": spec.name,
        "bands": band_names,
        "acquisitions": steps,
        "normaliser": normaliser.to_dict(),
        "tile": int(tile),
        "uses_metadata": bool(isinstance(backbone, EncoderBackbone) and backbone.use_meta),
        "encoder": encoder_header,
        "backbone": backbone_header,
        "head": head_header,
        "uncertainty": module.uncertainty_head.to_dict(),
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
        uncertainty = UncertaintyHead.from_dict(header.get("uncertainty"))
    except UserInputError as error:
        raise CheckpointFormatError(f"{config_path}: {error}") from None
    if not uncertainty.plain:  # a missing plugin is named, not reported as a damaged file
        try:
            get_uncertainty_builder(uncertainty.uncertainty)
        except UserInputError as error:
            raise UserInputError(f"{config_path}: {error}") from None
    try:
        module, encoder = _rebuild(header, uncertainty)
        normaliser = Normaliser.from_dict(header["normaliser"])
        classes = tuple(str(c) for c in header["classes"])
        facts = (
            str(header["task"]),
            str(header["sensor"]),
            tuple(str(b) for b in header["bands"]),
            int(header["acquisitions"]),
            int(header["tile"]),
        )
    except (KeyError, TypeError, ValueError, UserInputError) as error:
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
    table = tensors.pop(LANGUAGE_TABLE_KEY, None)
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
    if encoder is not None:
        unpack_language_table(encoder, table, (header.get("encoder") or {}).get("language_keys"))
    task, sensor, bands, steps, tile = facts
    return TaskCheckpoint(
        module=module.eval(),
        kind=str(header["module"]),
        task=task,
        classes=classes,
        sensor=sensor,
        bands=bands,
        acquisitions=steps,
        normaliser=normaliser,
        tile=tile,
        uses_metadata=bool(header.get("uses_metadata", False)),
        path=tensors_path,
    )


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _rebuild(
    header: Mapping[str, Any], uncertainty: UncertaintyHead
) -> tuple[TaskModule, Encoder | None]:
    """The module a header describes, with fresh weights (format versions 1 to 3)."""
    head = header["head"]
    backbone_cfg = header["backbone"]
    kind = str(header["module"])
    if kind not in MODULE_KINDS:
        raise ValueError(f"module kind {kind!r}")
    encoder: Encoder | None = None
    net: Any
    if backbone_cfg.get("kind", "encoder") == "encoder":
        encoder = Encoder(EncoderConfig.from_dict(header["encoder"]["config"]))
        net = EncoderBackbone(
            encoder,
            patch_size=backbone_cfg["patch_size"],
            indices=backbone_cfg["indices"],
            use_meta=backbone_cfg["use_meta"],
        )
    else:
        options = {k: v for k, v in backbone_cfg.items() if k not in ("kind", "name")}
        in_channels = int(options.pop("in_channels"))
        if "unet_widths" in options:
            options["unet_widths"] = tuple(options["unet_widths"])
        steps = int(header["acquisitions"])
        net = build_baseline(
            backbone_cfg["name"],
            kind,  # type: ignore[arg-type]
            in_channels,
            int(head["num_classes"]),
            time_steps=steps if kind == "change" else None,
            **options,
        )
    module = build_task_module(
        kind,  # type: ignore[arg-type]
        net,
        num_classes=int(head["num_classes"]),
        # Version 1 stored no protocol: its modules were dense heads, rebuilt as fine-tuned.
        protocol=head.get("protocol", "finetune"),
        lr=1e-3,
        class_names=tuple(str(c) for c in header["classes"]) or None,
        ignore_index=head.get("ignore_index"),
        decoder_channels=int(head.get("channels", 128)),
        fusion=head.get("fusion") or "diff",
        target_stats=(float(head.get("target_mean", 0.0)), float(head.get("target_std", 1.0))),
        head=head.get("kind"),
        uncertainty=uncertainty,
    )
    return module, encoder
