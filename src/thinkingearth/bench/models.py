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
  random-init counterpart of a pretrained encoder;
* a vision-language model (:mod:`thinkingearth.vl`): the folder a VL ``pretrain`` run wrote, or
  its ``vl_model.safetensors`` / ``.json``. It runs the ``zero-shot`` protocol
  (:mod:`thinkingearth.bench.zeroshot`), and its image encoder every encoder protocol
  (``linear-probe``: the linear probe of the same encoder);
* the name of a shipped vision-language pretrain config (``tiny-vl-synthetic``): a VL model
  pretrained by the benchmark itself, one per seed (the seed of the run is the config's seed),
  in ``OUT/models/<config>-seed<S>/``; a finished one is reused, an interrupted one resumed.
  ``Suite.vl_pretrain_steps`` shortens its schedule;
* ``chance``: scores drawn uniformly at random, the chance level of the ``zero-shot`` protocol's
  metrics (it runs no other protocol).

Encoders are evaluated with the suite's protocols for each task kind.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from thinkingearth.bench.suites import Suite, TaskSpec
from thinkingearth.errors import UserInputError
from thinkingearth.models.baselines import BASELINES, Backbone, DenseModel, build_baseline
from thinkingearth.models.encoder import Encoder

__all__ = ["ModelSpec", "build_network", "resolve_model", "resolve_models"]

_CHECKPOINT_SUFFIXES = (".safetensors", ".json", ".pth", ".pt")
_RANDOM = "random:"
#: The pseudo-model of the chance level (``zero-shot`` protocol only).
CHANCE = "chance"
_VL_FORMAT = "thinkingearth.vl_model"  # thinkingearth.vl.model.VL_FORMAT (not imported here)
_VL_STEM = "vl_model"
_VL_RECIPES = ("image_text",)


def _label(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}" if path.parent.name else path.stem


@dataclass
class ModelSpec:
    """A model named on the command line.

    Attributes:
        name: The name as given (the key of its rows in ``results.csv``).
        kind: ``"baseline"``, ``"registry"`` (random-init encoder), ``"checkpoint"``,
            ``"random"`` (a checkpoint's architecture with random weights), ``"vl"`` (a
            vision-language model file), ``"vl-config"`` (a VL pretrain config, trained per
            seed) or ``"chance"``.
        label: Short name for tables and plots (a checkpoint's folder and file stem).
        description: One line for the report.
        workdir: Where ``vl-config`` models are trained (``OUT/models``; set by the runner).
        pretrain_steps: ``trainer.max_steps`` of ``vl-config`` pretraining (``None``: the
            config's).
        log: Where ``vl-config`` pretraining reports progress.
    """

    name: str
    kind: Literal["baseline", "registry", "checkpoint", "random", "vl", "vl-config", "chance"]
    label: str
    description: str
    _encoder: Encoder | None = field(default=None, repr=False)
    workdir: Path | None = None
    pretrain_steps: int | None = None
    log: Callable[[str], None] | None = field(default=None, repr=False)
    _vl: dict[int | None, Any] = field(default_factory=dict, repr=False)

    @property
    def is_encoder(self) -> bool:
        """True for the foundation-model encoder (registry, checkpoint or a VL model's)."""
        return self.kind not in ("baseline", "chance")

    @property
    def is_vl(self) -> bool:
        """True for a vision-language model (file or config)."""
        return self.kind in ("vl", "vl-config")

    def vl_model(self, seed: int = 0) -> Any:
        """The :class:`~thinkingearth.vl.model.VLModel` (loaded once; ``vl-config``: the one of
        ``seed``, pretrained first if needed).

        Raises:
            UserInputError: Not a vision-language model; an unreadable model file.
        """
        if not self.is_vl:
            raise UserInputError(f"{self.name} is not a vision-language model")
        slot = None if self.kind == "vl" else int(seed)
        if slot not in self._vl:
            from thinkingearth.vl.model import load_vl_model

            path = Path(self.name) if self.kind == "vl" else self._pretrained(int(seed))
            self._vl.clear()  # one model in memory at a time (seeds run one after another)
            self._vl[slot] = load_vl_model(path)
        return self._vl[slot]

    def _pretrained(self, seed: int) -> Path:
        """The folder of this config's VL model for ``seed``, pretrained now if not finished."""
        from thinkingearth.pretrain.config import load_config
        from thinkingearth.pretrain.run import run_pretrain
        from thinkingearth.runs import list_checkpoints

        if self.workdir is None:
            raise UserInputError(f"{self.name}: no folder to pretrain in (bench sets OUT/models)")
        folder = self.workdir / f"{self.name}-seed{seed}"
        if (folder / f"{_VL_STEM}.safetensors").is_file() and (
            folder / f"{_VL_STEM}.json"
        ).is_file():
            return folder
        overrides: dict[str, Any] = {"seed": int(seed)}
        if self.pretrain_steps is not None:
            overrides["trainer"] = {"max_steps": int(self.pretrain_steps)}
        config = load_config(self.name, overrides)
        found = list_checkpoints(folder / "checkpoints")
        # An interrupted run resumes; one that ended before writing its model starts again.
        resume = bool(found) and found[-1][0] < config.trainer.max_steps
        say = self.log or (lambda _m: None)
        say(f"[bench] pretraining {self.name} (seed {seed}) into {folder} …")
        run_pretrain(
            config, folder, resume=resume, overwrite=not resume and folder.exists(), log=self.log
        )
        return folder

    def encoder(self, seed: int = 0, overrides: Mapping[str, Any] | None = None) -> Encoder:
        """A fresh encoder: random weights (drawn now), a copy of the loaded checkpoint, or a
        copy of a vision-language model's image encoder (``vl-config``: of ``seed``'s).

        ``overrides`` change configuration fields of a registry encoder (random weights, e.g.
        ``depth=2``; ``Suite.encoder_overrides``); loaded weights keep their architecture.
        """
        from thinkingearth.models import create_encoder, load

        if self.is_vl:
            return copy.deepcopy(self.vl_model(seed).encoder)
        if self.kind == "chance":
            raise UserInputError("chance has no encoder")
        if self.kind == "registry":
            return create_encoder(self.name, **dict(overrides or {}))
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
    if name == CHANCE:
        return ModelSpec(name, "chance", name, "scores drawn uniformly at random (chance level)")
    vl = _vl_model_path(name)
    if vl is not None:
        return ModelSpec(name, "vl", _label(vl), f"vision-language model {vl}")
    if _is_vl_config(name):
        return ModelSpec(
            name,
            "vl-config",
            name,
            f"vision-language model pretrained with config {name}, one per seed",
        )
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
        f"name ({', '.join(list_models())}), a checkpoint path (.safetensors, .pth), "
        "random:<checkpoint path>, a vision-language model (folder or vl_model.safetensors), "
        "a VL pretrain config name or chance"
    )


def _vl_model_path(name: str) -> Path | None:
    """The ``.safetensors`` of a vision-language model named by folder, file or stem; else None."""
    path = Path(name)
    if path.is_dir():
        path = path / _VL_STEM
    base = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    header = base.with_name(base.name + ".json")
    if not header.is_file():
        return None
    try:
        data = json.loads(header.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != _VL_FORMAT:
        return None
    return base.with_name(base.name + ".safetensors")


def _is_vl_config(name: str) -> bool:
    """True for a shipped pretrain config whose recipe trains a vision-language model."""
    from thinkingearth.pretrain.config import list_configs, load_config

    if name not in list_configs():
        return False
    try:
        return load_config(name).recipe in _VL_RECIPES
    except UserInputError:
        return False


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
    spec: ModelSpec,
    task: TaskSpec,
    suite: Suite,
    in_channels: int,
    time_steps: int | None,
    seed: int = 0,
) -> Backbone | DenseModel:
    """Build the network of a model for a task (random init or checkpoint weights; a VL
    pretrain config's model of ``seed``).

    Raises:
        thinkingearth.models.baselines.UnsupportedTaskError: If a baseline cannot do the task.
    """
    if spec.is_encoder:
        from thinkingearth.tasks.protocols import EncoderBackbone

        encoder = spec.encoder(seed, suite.encoder_overrides)
        return EncoderBackbone(encoder, patch_size=suite.patch_size)
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
