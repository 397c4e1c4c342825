"""Checkpoints of pretraining runs: written atomically, read safely, found for ``--resume``.

The mechanics are every run's (:mod:`thinkingearth.runs`: atomic, fsynced
``OUT/checkpoints/step-XXXXXXXX.ckpt``, ``weights_only`` reads with one-line errors); this module
adds what a pretraining checkpoint must hold (:func:`read_checkpoint`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from thinkingearth.errors import UserInputError
from thinkingearth.pretrain.modules import CHECKPOINT_FORMAT
from thinkingearth.runs import (
    AtomicCheckpointIO,
    checkpoint_path,
    list_checkpoints,
    read_checkpoint_file,
)

__all__ = [
    "AtomicCheckpointIO",
    "checkpoint_path",
    "list_checkpoints",
    "read_checkpoint",
]


def read_checkpoint(path: str | Path, *, require_format: bool = True) -> dict[str, Any]:
    """Load a pretraining checkpoint with ``weights_only=True`` and check what it is.

    Args:
        path: The checkpoint file.
        require_format: Check that it is a complete ThinkingEarth pretraining checkpoint (not
            only a readable file of tensors).

    Raises:
        UserInputError: The file is missing, corrupt or truncated, or not a ThinkingEarth
            pretraining checkpoint. The message is one line and names the file.
    """
    path = Path(path)
    checkpoint = read_checkpoint_file(path)
    if not require_format:
        return checkpoint
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get(CHECKPOINT_FORMAT), dict):
        raise UserInputError(
            f"checkpoint {path} is not a ThinkingEarth pretraining checkpoint (no "
            f"{CHECKPOINT_FORMAT!r} record)"
        )
    for key in ("state_dict", "optimizer_states", "lr_schedulers", "loops", "global_step"):
        if key not in checkpoint:
            raise UserInputError(f"checkpoint {path} is incomplete: it has no {key!r}")
    return checkpoint
