"""Checkpoints of pretraining runs: written atomically, read safely, found for ``--resume``.

* Files are ``OUT/checkpoints/step-00000100.ckpt`` (Lightning checkpoints: weights, optimiser,
  scheduler, loop progress, the data-order position, our configuration).
* Writing goes through :class:`AtomicCheckpointIO`: the checkpoint is written to a temporary
  sibling, flushed to disk (``fsync``) and renamed into place (:func:`thinkingearth.fileio.atomic_file`),
  so a run killed while saving (even with SIGKILL) leaves the previous checkpoints intact and never
  a half-written file under a checkpoint's name. (Lightning's own writer is also atomic on local
  disks, through an fsspec transaction; this one states it, fsyncs, and is tested.)
* Reading uses ``torch.load(weights_only=True)`` (no arbitrary unpickling) and turns a corrupt,
  truncated or foreign file into a one-line :class:`~thinkingearth.errors.UserInputError`, never a
  silent fresh start.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from thinkingearth.errors import UserInputError
from thinkingearth.fileio import atomic_file
from thinkingearth.pretrain.modules import CHECKPOINT_FORMAT

__all__ = [
    "AtomicCheckpointIO",
    "checkpoint_path",
    "list_checkpoints",
    "read_checkpoint",
]

_NAME = re.compile(r"^step-(\d+)\.ckpt$")


def checkpoint_path(folder: str | Path, step: int) -> Path:
    """``folder/step-XXXXXXXX.ckpt``."""
    return Path(folder) / f"step-{int(step):08d}.ckpt"


def list_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the checkpoints in ``folder``, oldest first (temporary files skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


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
    if not path.is_file():
        raise UserInputError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        text = str(error).strip()
        first = text.splitlines()[0] if text else type(error).__name__
        raise UserInputError(
            f"checkpoint {path} is corrupt or truncated ({first}); delete it to resume from the "
            "previous checkpoint, or start a new run in another --out"
        ) from None
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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O: atomic, fsynced writes; ``weights_only`` reads with clear errors."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` through a temporary sibling and a rename."""
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        with atomic_file(path) as tmp, open(tmp, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Read with ``weights_only=True`` (see :func:`read_checkpoint`; ``ddp_spawn`` also passes
        the final weights back to the main process through this)."""
        return read_checkpoint(path, require_format=False)
