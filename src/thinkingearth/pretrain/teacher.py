"""Frozen teachers for feature distillation: any torch module, or any checkpoint we can load.

A teacher is called on the student's augmented view (before band dropping) and must give one
feature vector per sample:

* a :class:`thinkingearth.models.Encoder` (ours, or an imported Copernicus-FM / DOFA) is called
  with the view's bands, sensor and metadata and returns pooled features ``[B, D]``;
* any other module is called as ``teacher(image)``; ``[B, D]`` is used as is, ``[B, D, h, w]``
  maps and ``[B, N, D]`` tokens are averaged over space (a tuple/list output: its first item).

The teacher is put in eval mode, its parameters frozen, and it is not saved in checkpoints: a
resumed run rebuilds it from the configuration.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from thinkingearth.errors import UserInputError
from thinkingearth.models import Encoder, load
from thinkingearth.pretrain.config import TeacherSpec

__all__ = ["Teacher", "build_teacher"]


def _import_factory(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UserInputError(
            f"distill.teacher.factory: cannot import {module_name} ({error})"
        ) from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise UserInputError(f"distill.teacher.factory: {module_name} has no {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise UserInputError(f"distill.teacher.factory: {path} is not callable")
    return target


def build_teacher(spec: TeacherSpec) -> nn.Module:
    """Build the frozen teacher a :class:`~thinkingearth.pretrain.config.TeacherSpec` names.

    Raises:
        UserInputError: An unimportable factory, a factory that does not return a module, or a
            checkpoint that cannot be read (``weights_only=True``) or does not fit.
    """
    if spec.factory is None:
        if spec.checkpoint is None:
            raise UserInputError("distill.teacher needs a checkpoint or a factory")
        return load(spec.checkpoint)
    module = _import_factory(spec.factory)(**spec.kwargs)
    if not isinstance(module, nn.Module):
        raise UserInputError(
            f"distill.teacher.factory {spec.factory} returned {type(module).__name__}; expected a "
            "torch.nn.Module"
        )
    if spec.checkpoint is not None:
        path = Path(spec.checkpoint)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            first = (
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            )
            raise UserInputError(
                f"distill.teacher.checkpoint {path}: cannot read it ({first})"
            ) from None
        if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
            state = state["state_dict"]
        try:
            module.load_state_dict(state)
        except (RuntimeError, TypeError) as error:
            first = str(error).strip().splitlines()[0]
            raise UserInputError(
                f"distill.teacher.checkpoint {path} does not fit the factory's module ({first})"
            ) from None
    return module


class Teacher:
    """A frozen teacher and how to call it (not an ``nn.Module``: never trained, never saved).

    Args:
        module: Any torch module (see the module docstring for the calling convention).
        bands: Bands fed to the teacher (``None`` = the view's full band set).
    """

    def __init__(self, module: nn.Module, bands: Sequence[str] | None = None) -> None:
        """Freeze the module."""
        self.module = module.eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.bands = tuple(bands) if bands is not None else None

    def to(self, device: torch.device) -> Teacher:
        """Move the teacher to ``device``."""
        self.module.to(device)
        return self

    def select(
        self, image: Tensor, bands: Sequence[str], sensor: str
    ) -> tuple[Tensor, tuple[str, ...]]:
        """The channels of ``image`` the teacher takes, and their names."""
        if self.bands is None:
            return image, tuple(bands)
        from thinkingearth.sensors import get_sensor

        spec = get_sensor(sensor)
        names = [spec.band(b).name for b in bands]
        wanted = [spec.band(b).name for b in self.bands]
        missing = [b for b in wanted if b not in names]
        if missing:
            raise UserInputError(
                f"distill.teacher_bands {missing} are not in the {sensor} batch (bands: "
                f"{', '.join(names)})"
            )
        index = [names.index(b) for b in wanted]
        return image[:, index], tuple(wanted)

    @torch.no_grad()
    def __call__(
        self, image: Tensor, bands: Sequence[str], sensor: str, meta: Mapping[str, Tensor] | None
    ) -> Tensor:
        """Pooled teacher features ``[B, D]`` (float32)."""
        x, names = self.select(image, bands, sensor)
        if isinstance(self.module, Encoder):
            return self.module(x, bands=list(names), sensor=sensor, meta=meta).float()
        out = self.module(x)
        if isinstance(out, tuple | list):
            out = out[0]
        if not isinstance(out, Tensor):
            raise UserInputError(
                f"the teacher returned {type(out).__name__}; expected a tensor [B, D], "
                "[B, D, h, w] or [B, N, D]"
            )
        if out.ndim == 4:
            out = out.mean(dim=(-2, -1))
        elif out.ndim == 3:
            out = out.mean(dim=1)
        if out.ndim != 2 or out.shape[0] != image.shape[0]:
            raise UserInputError(
                f"the teacher returned shape {tuple(out.shape)}; expected [B, D], [B, D, h, w] or "
                "[B, N, D]"
            )
        return out.float()

    def feature_dim(self, channels: int, size: int, sensor: str, bands: Sequence[str]) -> int:
        """Width of the teacher's features (one dry run for non-encoder teachers)."""
        if isinstance(self.module, Encoder):
            return int(self.module.embed_dim)
        device = next((p.device for p in self.module.parameters()), torch.device("cpu"))
        dummy = torch.zeros(1, channels, size, size, device=device)
        return int(self(dummy, bands, sensor, None).shape[1])
