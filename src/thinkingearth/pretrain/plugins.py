"""Pretraining recipes from other packages: the entry-point group ``thinkingearth.recipes``.

The built-in recipes (``mae``, ``softcon``, ``supcon``, ``simclr``, ``cross_sensor``,
``distill``) live in :mod:`thinkingearth.pretrain.modules`. Other recipes (the vision-language
ones of :mod:`thinkingearth.vl`) plug in without ``pretrain`` importing them: a package declares
an entry point in the group ``thinkingearth.recipes``::

    [project.entry-points."thinkingearth.recipes"]
    image_text = "thinkingearth.vl.recipes:image_text"

whose object is a zero-argument callable returning a :class:`RecipePlugin`. The plugin builds the
recipe's LightningModule (a :class:`~thinkingearth.pretrain.modules.PretrainModule`, so it shares
the data sources, augmentations, DDP, checkpoints and resume of every recipe), validates and
resolves its own config section (``vl:``, read into the recipe's dataclass with
:func:`thinkingearth.configfile.build`), and writes its extra outputs after training.
:func:`register_recipe` adds one in-process (tests).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from thinkingearth.errors import UserInputError

__all__ = [
    "BUILTIN_RECIPES",
    "ENTRY_POINT_GROUP",
    "RecipePlugin",
    "get_recipe",
    "recipe_names",
    "register_recipe",
]

#: Entry-point group of plugin recipes.
ENTRY_POINT_GROUP = "thinkingearth.recipes"
#: The recipes of :mod:`thinkingearth.pretrain.modules`.
BUILTIN_RECIPES: tuple[str, ...] = ("mae", "softcon", "supcon", "simclr", "cross_sensor", "distill")

_LOCK = threading.Lock()
_REGISTERED: dict[str, Callable[[], RecipePlugin]] = {}
_LOADED: dict[str, RecipePlugin] = {}


@dataclass(frozen=True)
class RecipePlugin:
    """A pretraining recipe provided by another package.

    Attributes:
        name: The recipe's name in configs (``recipe: NAME``).
        build_module: ``(config, normaliser, encoder or None) -> PretrainModule``.
        validate: ``config -> resolved section`` (a plain mapping with every default filled
            in, stored in the run's ``config.yaml``), raising
            :class:`~thinkingearth.errors.UserInputError` for what is wrong; it may also check
            the data source (e.g. captions needed).
        section: The top-level config key the recipe reads (``vl``), or ``None``.
        export: ``(module, out) -> {name: path}``, called on rank 0 after training (and after
            ``OUT/encoder.safetensors`` is written); the names go into ``summary.json``.
        outputs: File names the recipe writes in ``OUT`` (deleted by ``--overwrite``).
        summary: One line for ``thinkingearth pretrain -h`` and the docs.
        paired: The recipe trains on co-registered ``data.pair`` samples (batches
            ``{"a": ..., "b": ...}``, as ``cross_sensor``): ``modality_gap``.
    """

    name: str
    build_module: Callable[[Any, Any, Any], Any]
    validate: Callable[[Any], Mapping[str, Any] | None] | None = None
    section: str | None = "vl"
    export: Callable[[Any, Path], Mapping[str, Path]] | None = None
    outputs: tuple[str, ...] = ()
    summary: str = ""
    paired: bool = False


def register_recipe(name: str, factory: Callable[[], RecipePlugin] | None) -> None:
    """Register (or with ``None`` remove) a plugin recipe in this process, before entry points."""
    with _LOCK:
        _LOADED.pop(name, None)
        if factory is None:
            _REGISTERED.pop(name, None)
        else:
            _REGISTERED[name] = factory


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def recipe_names() -> list[str]:
    """Every recipe name: the built-in ones, then the plugins (registered and installed)."""
    plugins = sorted(set(_REGISTERED) | set(_entry_points()))
    return [*BUILTIN_RECIPES, *(p for p in plugins if p not in BUILTIN_RECIPES)]


def is_plugin(name: str) -> bool:
    """True for a recipe that is not built in."""
    return name not in BUILTIN_RECIPES


def get_recipe(name: str) -> RecipePlugin:
    """The plugin recipe ``name``.

    Raises:
        UserInputError: No recipe of that name (the message lists every recipe), or its entry
            point cannot be loaded (e.g. an optional package is missing).
    """
    with _LOCK:
        if name in _LOADED:
            return _LOADED[name]
        factory = _REGISTERED.get(name)
        if factory is None:
            found = _entry_points().get(name)
            if found is None or name in BUILTIN_RECIPES:
                raise UserInputError(
                    f"recipe is {name!r}; expected one of: {', '.join(recipe_names())}"
                )
            try:
                factory = found.load()
            except ImportError as error:
                raise UserInputError(
                    f"recipe {name} ({found.value}) cannot be loaded: {error}"
                ) from None
        plugin = factory()
        if not isinstance(plugin, RecipePlugin) or plugin.name != name:
            raise TypeError(f"entry point {name!r} must return RecipePlugin(name={name!r}, ...)")
        _LOADED[name] = plugin
        return plugin
