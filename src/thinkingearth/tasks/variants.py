"""Task-module variants from other packages: uncertainty heads and test-split evaluations.

``tasks`` builds the plain (deterministic) task modules itself. Modules that also estimate their
uncertainty (heteroscedastic heads, MC dropout, deep ensembles) live in
:mod:`thinkingearth.uncertainty`, which ``tasks`` never imports: they plug in through entry
points, as pretraining recipes do (:mod:`thinkingearth.pretrain.plugins`)::

    [project.entry-points."thinkingearth.uncertainty"]
    heteroscedastic = "thinkingearth.uncertainty.heads:heteroscedastic"

    [project.entry-points."thinkingearth.test_evaluations"]
    uncertainty = "thinkingearth.uncertainty.evaluation:test_evaluation"

* group ``thinkingearth.uncertainty``: each name (an :data:`UncertaintyMethod`) is a zero-argument
  callable returning a :data:`TaskBuilder`, called by
  :func:`thinkingearth.tasks.training.build_task_module` as
  ``builder(kind, net, head=UncertaintyHead, **the keyword arguments build_task_module got)``;
* group ``thinkingearth.test_evaluations``: each is a callable
  ``(module, loader, kind, *, ignore_index, out) -> TestEvaluation`` that ``finetune`` runs on
  the test split after scoring it, merging its metrics into ``metrics.json`` and its markdown
  into ``report.md``.

:class:`UncertaintyHead` is the ``head:`` section of a fine-tuning config and is stored in task
checkpoints (``model.json``, key ``uncertainty``).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from thinkingearth.errors import UserInputError

if TYPE_CHECKING:
    from thinkingearth.tasks.protocols import TaskModule

__all__ = [
    "ENTRY_POINT_GROUP",
    "TEST_EVALUATION_GROUP",
    "UNCERTAINTY_METHODS",
    "TaskBuilder",
    "TestEvaluation",
    "UncertaintyHead",
    "UncertaintyMethod",
    "get_uncertainty_builder",
    "register_test_evaluation",
    "register_uncertainty",
    "test_evaluations",
    "uncertainty_methods",
]

log = logging.getLogger(__name__)

UncertaintyMethod = Literal["none", "heteroscedastic", "mc_dropout", "ensemble"]
#: Every uncertainty method a config may name (``none`` is the plain module).
UNCERTAINTY_METHODS: tuple[str, ...] = get_args(UncertaintyMethod)
#: Entry-point group of uncertainty builders (name -> zero-argument callable -> builder).
ENTRY_POINT_GROUP = "thinkingearth.uncertainty"
#: Entry-point group of test-split evaluations run by ``finetune``.
TEST_EVALUATION_GROUP = "thinkingearth.test_evaluations"

#: ``builder(kind, net, head=UncertaintyHead, **build_task_module's keyword arguments)``.
TaskBuilder = Callable[..., "TaskModule"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class UncertaintyHead:
    """How a task module estimates its uncertainty (the ``head:`` section of finetune configs).

    Attributes:
        uncertainty: ``none`` (the plain deterministic module), ``heteroscedastic`` (the head
            predicts a per-class scale, or a variance for regression; Kendall & Gal 2017,
            Collier et al. 2021), ``mc_dropout`` (dropout on the head's inputs, kept on when
            predicting) or ``ensemble`` (independently initialised members).
        samples: Heteroscedastic: noisy-logit samples per training step and per prediction.
        temperature: Heteroscedastic: softmax (sigmoid) temperature, ``> 0``.
        mc_samples: MC dropout: forward passes when evaluating or predicting (``>= 2``).
        dropout: MC dropout: dropout rate on the head's inputs, in ``(0, 1)``.
        members: Ensemble: number of members (``>= 2`` for an ensemble).

    Raises:
        UserInputError: One line naming the bad value.
    """

    uncertainty: UncertaintyMethod = "none"
    samples: int = 100
    temperature: float = 1.0
    mc_samples: int = 20
    dropout: float = 0.2
    members: int = 5

    def __post_init__(self) -> None:
        """Check every value (the messages name the config key)."""
        if self.uncertainty not in UNCERTAINTY_METHODS:
            raise UserInputError(
                f"head.uncertainty is {self.uncertainty!r}; expected one of: "
                f"{', '.join(UNCERTAINTY_METHODS)}"
            )
        if not (_is_int(self.samples) and self.samples >= 1):
            raise UserInputError(f"head.samples must be an integer >= 1; got {self.samples!r}")
        if not (
            _is_number(self.temperature)
            and math.isfinite(self.temperature)
            and self.temperature > 0
        ):
            raise UserInputError(f"head.temperature must be > 0; got {self.temperature!r}")
        if not (_is_int(self.mc_samples) and self.mc_samples >= 2):
            raise UserInputError(
                f"head.mc_samples must be an integer >= 2; got {self.mc_samples!r}"
            )
        if not (_is_number(self.dropout) and 0.0 < self.dropout < 1.0):
            raise UserInputError(f"head.dropout must be in (0, 1); got {self.dropout!r}")
        if self.uncertainty == "ensemble" and not (_is_int(self.members) and self.members >= 2):
            raise UserInputError(
                f"an ensemble needs at least 2 members; got head.members {self.members!r}"
            )
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "dropout", float(self.dropout))

    @property
    def plain(self) -> bool:
        """True for the deterministic module (``uncertainty: none``)."""
        return self.uncertainty == "none"

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON/YAML), every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> UncertaintyHead:
        """The head of :meth:`to_dict` output (``None``: the plain head).

        Raises:
            UserInputError: For unknown keys or bad values.
        """
        if values is None:
            return cls()
        if not isinstance(values, dict):
            raise UserInputError(f"head must be a mapping; got {type(values).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserInputError(
                f"unknown head key(s): {', '.join(unknown)}; expected: {', '.join(sorted(known))}"
            )
        return cls(**values)


# ---------------------------------------------------------------------------- builders

_LOCK = threading.Lock()
_REGISTERED: dict[str, TaskBuilder] = {}
_LOADED: dict[str, TaskBuilder] = {}


def register_uncertainty(name: str, builder: TaskBuilder | None) -> None:
    """Register (or with ``None`` remove) the builder of method ``name`` in this process.

    A registered builder takes precedence over an installed entry point (tests, notebooks).
    """
    with _LOCK:
        _LOADED.pop(name, None)
        if builder is None:
            _REGISTERED.pop(name, None)
        else:
            _REGISTERED[name] = builder


def _entry_points(group: str) -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=group)}


def _builder_names() -> list[str]:
    return sorted((set(_REGISTERED) | set(_entry_points(ENTRY_POINT_GROUP))) - {"none"})


def uncertainty_methods() -> list[str]:
    """Every method with a builder (registered or installed), ``none`` first."""
    return ["none", *_builder_names()]


def get_uncertainty_builder(name: str) -> TaskBuilder:
    """The builder of uncertainty method ``name`` (registered first, then entry points; cached).

    Raises:
        UserInputError: For ``none`` (the plain module needs no builder), an unknown method, or
            a method whose entry point cannot be loaded.
    """
    with _LOCK:
        if name in _REGISTERED:
            return _REGISTERED[name]
        if name in _LOADED:
            return _LOADED[name]
        found = _entry_points(ENTRY_POINT_GROUP).get(name)
        if name == "none" or found is None:
            methods = ", ".join(_builder_names())
            raise UserInputError(
                f"no builder for uncertainty method {name!r}; installed: {methods or 'nothing'}"
            )
        try:
            factory = found.load()
            builder = factory()
        except ImportError as error:
            raise UserInputError(
                f"uncertainty method {name} ({found.value}) cannot be loaded: {error}"
            ) from None
        if not callable(builder):
            raise TypeError(f"entry point {name!r} ({found.value}) must return a callable builder")
        _LOADED[name] = builder
        return builder


# ---------------------------------------------------------------------------- test evaluations


@dataclass
class TestEvaluation:
    """What a test-split evaluation adds to a fine-tuning run.

    Attributes:
        metrics: Flat metric values merged into ``metrics.json`` (same keys as ``bench``).
        markdown: A section appended to ``report.md`` (may reference ``files`` by name).
        files: Files the evaluation wrote in the run folder (figures).
    """

    __test__ = False  # not a pytest test class, despite its name

    metrics: dict[str, float]
    markdown: str = ""
    files: tuple[Path, ...] = field(default_factory=tuple)


TestEvaluationFn = Callable[..., TestEvaluation]
_EVALUATIONS: dict[str, TestEvaluationFn] = {}


def register_test_evaluation(name: str, evaluation: TestEvaluationFn | None) -> None:
    """Register (or with ``None`` remove) a test-split evaluation in this process."""
    with _LOCK:
        if evaluation is None:
            _EVALUATIONS.pop(name, None)
        else:
            _EVALUATIONS[name] = evaluation


def test_evaluations() -> dict[str, TestEvaluationFn]:
    """Every test-split evaluation, by name: registered ones, then installed entry points.

    An entry point whose module cannot be imported is skipped with a logged warning (the run
    goes on without it).
    """
    with _LOCK:
        found: dict[str, TestEvaluationFn] = dict(_EVALUATIONS)
    for name, ep in sorted(_entry_points(TEST_EVALUATION_GROUP).items()):
        if name in found:
            continue
        try:
            found[name] = ep.load()
        except (ImportError, AttributeError) as error:  # a module or its attribute is missing
            log.warning(
                "test evaluation %s (%s) skipped: cannot be loaded: %s", name, ep.value, error
            )
    return found


test_evaluations.__test__ = False  # type: ignore[attr-defined]
