"""Models of a benchmark run, by the name given to ``--models``.

* a baseline name (:data:`thinkingearth.models.baselines.BASELINES`): ``wrn-eca``,
  ``resnet18``, ``resnet50``, ``unet``, ``siamese-diff``, ``siamese-concat``, ``vit-scratch``;
  supervised from scratch, always with the ``finetune`` protocol;
* a registry name of :func:`thinkingearth.models.list_models` (``thinkingearth_vit_tiny`` …):
  the encoder with random weights (the random-init encoder baseline; each seed draws its own);
* a path to a checkpoint :func:`thinkingearth.models.load` reads: our ``.safetensors`` (e.g. an
  encoder from ``thinkingearth pretrain``), or a published Copernicus-FM / DOFA ``.pth``; or a
  published weights name (``copernicusfm_base``, :mod:`thinkingearth.models.published`);
* ``random:PATH``: the architecture of that checkpoint with random weights, the fair
  random-init counterpart of a pretrained encoder.

Encoders are evaluated with the suite's protocols for each task kind.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from thinkingearth.bench.suites import Suite, TaskSpec
from thinkingearth.errors import UserInputError
from thinkingearth.models.baselines import BASELINES, Backbone, DenseModel, build_baseline
from thinkingearth.models.encoder import Encoder

__all__ = ["ModelSpec", "build_network", "resolve_model", "resolve_models"]

_CHECKPOINT_SUFFIXES = (".safetensors", ".json", ".pth", ".pt")
_RANDOM = "random:"


def _label(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}" if path.parent.name else path.stem


@dataclass
class ModelSpec:
    """A model named on the command line.

    Attributes:
        name: The name as given (the key of its rows in ``results.csv``).
        kind: ``"baseline"``, ``"registry"`` (random-init encoder), ``"checkpoint"`` or
            ``"random"`` (a checkpoint's architecture with random weights).
        label: Short name for tables and plots (a checkpoint's folder and file stem).
        description: One line for the report.
    """

    name: str
    kind: Literal["baseline", "registry", "checkpoint", "random"]
    label: str
    description: str
    _encoder: Encoder | None = field(default=None, repr=False)

    @property
    def is_encoder(self) -> bool:
        """True for the foundation-model encoder (registry or checkpoint)."""
        return self.kind != "baseline"

    def encoder(self) -> Encoder:
        """A fresh encoder: random weights (drawn now) or a copy of the loaded checkpoint."""
        from thinkingearth.models import create_encoder, load

        if self.kind == "registry":
            return create_encoder(self.name)
        if self._encoder is None:
            self._encoder = load(self.name.removeprefix(_RANDOM))
        if self.kind == "random":
            return Encoder(self._encoder.config)
        return copy.deepcopy(self._encoder)


def resolve_model(name: str) -> ModelSpec:
    """Recognise a model name (see the module docstring).

    Raises:
        UserInputError: For a name that is none of these, or a checkpoint that does not exist.
    """
    from thinkingearth.models import list_models

    name = name.strip()
    if name in BASELINES:
        return ModelSpec(name, "baseline", name, BASELINES[name].description)
    if name in list_models():
        return ModelSpec(name, "registry", name, f"{name} encoder with random weights")
    if name.startswith(_RANDOM):
        path = Path(name.removeprefix(_RANDOM))
        if not path.is_file():
            raise UserInputError(f"{name}: checkpoint {path} does not exist")
        return ModelSpec(
            name,
            "random",
            f"random-init {_label(path)}",
            f"the architecture of {path} with random weights",
        )
    path = Path(name)
    if not path.exists():
        from thinkingearth.models.published import WEIGHTS

        if name in WEIGHTS:  # published weights by name, loaded (and fetched) on first use
            return ModelSpec(name, "checkpoint", name, f"published weights {name}")
    if path.suffix in _CHECKPOINT_SUFFIXES or path.exists():
        if not path.is_file():
            raise UserInputError(f"checkpoint {path} does not exist")
        return ModelSpec(name, "checkpoint", _label(path), f"encoder checkpoint {path}")
    raise UserInputError(
        f"unknown model {name!r}; expected a baseline ({', '.join(BASELINES)}), an encoder "
        f"name ({', '.join(list_models())}), a checkpoint path (.safetensors, .pth) or "
        "random:<checkpoint path>"
    )


def resolve_models(names: str | list[str] | tuple[str, ...]) -> list[ModelSpec]:
    """Resolve a comma-separated list (or a list) of model names; duplicates are dropped.

    Raises:
        UserInputError: For an empty list or any unknown name.
    """
    items = names.split(",") if isinstance(names, str) else list(names)
    unique = list(dict.fromkeys(n.strip() for n in items if n.strip()))
    if not unique:
        raise UserInputError("--models needs at least one model name")
    specs = [resolve_model(n) for n in unique]
    labels = [s.label for s in specs]
    for spec in specs:
        if labels.count(spec.label) > 1:
            spec.label = spec.name  # two checkpoints with one stem: show the paths
    return specs


def build_network(
    spec: ModelSpec, task: TaskSpec, suite: Suite, in_channels: int, time_steps: int | None
) -> Backbone | DenseModel:
    """Build the network of a model for a task (random init or checkpoint weights).

    Raises:
        thinkingearth.models.baselines.UnsupportedTaskError: If a baseline cannot do the task.
    """
    if spec.is_encoder:
        from thinkingearth.tasks.protocols import EncoderBackbone

        return EncoderBackbone(spec.encoder(), patch_size=suite.patch_size)
    return build_baseline(
        spec.name,
        task.kind,
        in_channels,
        task.num_classes,
        time_steps=time_steps,
        img_size=suite.img_size,
        patch_size=suite.patch_size or 16,
        unet_widths=suite.unet_widths,
        vit_depth=suite.vit_depth,
        wrn_depth=suite.wrn_depth,
        wrn_width=suite.wrn_width,
    )
