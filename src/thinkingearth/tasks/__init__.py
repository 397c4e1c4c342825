"""Downstream tasks: classification, segmentation, change detection and regression as
LightningModules, the protocols that decide what trains (linear probe, frozen encoder + UPerNet,
fine-tune; label fractions), their metrics (:mod:`thinkingearth.tasks.metrics`), and
:func:`finetune`, which turns labelled data into a saved model
(:mod:`thinkingearth.tasks.finetuning`)."""

from __future__ import annotations

# Task LightningModules and protocols, imported on first use so that importing
# ``thinkingearth.tasks.metrics`` stays light (no Lightning, no encoder).
_LAZY: dict[str, str] = {
    "ClassificationTask": "thinkingearth.tasks.classification",
    "SegmentationTask": "thinkingearth.tasks.segmentation",
    "ChangeTask": "thinkingearth.tasks.change",
    "RegressionTask": "thinkingearth.tasks.regression",
    "EncoderBackbone": "thinkingearth.tasks.protocols",
    "PROTOCOLS": "thinkingearth.tasks.protocols",
    "Protocol": "thinkingearth.tasks.protocols",
    "TaskModule": "thinkingearth.tasks.protocols",
    "label_fraction_indices": "thinkingearth.tasks.protocols",
    "save_task": "thinkingearth.tasks.checkpoint",
    "load_task_module": "thinkingearth.tasks.checkpoint",
    "finetune": "thinkingearth.tasks.finetuning",
    "FinetuneResult": "thinkingearth.tasks.finetuning",
    "FinetuneConfig": "thinkingearth.tasks.finetune_config",
    "load_finetune_config": "thinkingearth.tasks.finetune_config",
    "list_finetune_configs": "thinkingearth.tasks.finetune_config",
}


def __getattr__(name: str) -> object:
    """Import the task modules lazily (``from thinkingearth.tasks import ChangeTask``)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
