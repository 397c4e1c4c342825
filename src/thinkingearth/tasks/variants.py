"""Task-module variants from other packages: uncertainty heads, test-split evaluations and
domain adaptation.

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

Domain adaptation (:mod:`thinkingearth.adapt`, which ``tasks`` never imports either) plugs in
the same way: group ``thinkingearth.adaptation`` maps each :data:`AdaptMethod` to a
zero-argument callable returning an :class:`Adaptation` (:func:`get_adaptation`);
:class:`AdaptSection` is the ``adapt:`` section of a fine-tuning config.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, get_args

from thinkingearth.errors import UserInputError

if TYPE_CHECKING:
    import lightning as L
    from torch.utils.data import DataLoader

    from thinkingearth.tasks.protocols import TaskModule

__all__ = [
    "ADAPT_GROUP",
    "ADAPT_METHODS",
    "ENTRY_POINT_GROUP",
    "TEST_EVALUATION_GROUP",
    "UNCERTAINTY_METHODS",
    "AdaptMethod",
    "AdaptSection",
    "Adaptation",
    "TaskBuilder",
    "TestEvaluation",
    "UncertaintyHead",
    "UncertaintyMethod",
    "adaptation_methods",
    "get_adaptation",
    "get_uncertainty_builder",
    "register_adaptation",
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
_Section = TypeVar("_Section")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _section(cls: type[_Section], name: str, values: dict[str, Any] | None) -> _Section:
    """A config section dataclass from a stored mapping (``None``: its defaults); unknown keys
    and a non-mapping are one-line errors naming the section."""
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise UserInputError(f"{name} must be a mapping; got {type(values).__name__}")
    known = set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserInputError(
            f"unknown {name} key(s): {', '.join(unknown)}; expected: {', '.join(sorted(known))}"
        )
    return cls(**values)


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
        return _section(cls, "head", values)


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


# ---------------------------------------------------------------------------- domain adaptation

AdaptMethod = Literal["none", "dann", "deep_coral", "mmd", "adabn", "self_training", "tent"]
#: Every adaptation method a config may name (``none``: source-only training).
ADAPT_METHODS: tuple[str, ...] = get_args(AdaptMethod)
#: Entry-point group of adaptation methods (name -> zero-argument callable -> Adaptation).
ADAPT_GROUP = "thinkingearth.adaptation"
#: Methods that change training itself (the rest adapt a trained model to the target).
_DURING_TRAINING = ("dann", "deep_coral", "mmd", "self_training")


@dataclass(frozen=True)
class AdaptSection:
    """How a model adapts to an unlabelled target domain (the ``adapt:`` section of finetune
    configs), and how it generalises without one.

    Attributes:
        method: ``none`` (source-only), ``dann`` (gradient reversal and a domain
            discriminator; Ganin et al. 2016), ``deep_coral`` (covariance alignment; Sun &
            Saenko 2016), ``mmd`` (multi-kernel MMD; Long et al. 2015), ``adabn`` (BatchNorm
            statistics re-estimated on the target; Li et al. 2016), ``self_training``
            (confidence-filtered pseudo-labels on target batches) or ``tent`` (entropy
            minimisation of the normalisation parameters after training; Wang et al. 2021).
        weight: Weight of the alignment or pseudo-label loss (DANN: the largest gradient
            reversal coefficient), ``>= 0``.
        threshold: Self-training: probability a pseudo-label needs, in ``(0, 1]``.
        steps: TENT: optimisation steps over target batches (``>= 1``); AdaBN: target batches
            the statistics are estimated on (``0``: all of them).
        lr: TENT's learning rate (Adam), ``> 0``.
        band_dropout: Probability that a band is dropped from a source batch, in ``[0, 1)``.
        spectral_jitter: Standard deviation of a per-sample, per-band gain ``~ N(1, σ)``.
        metadata_dropout: Probability that a source sample's lon/lat/time/gsd become unknown
            (NaN), in ``[0, 1]``.

    Raises:
        UserInputError: One line naming the bad value.
    """

    method: AdaptMethod = "none"
    weight: float = 1.0
    threshold: float = 0.9
    steps: int = 10
    lr: float = 1e-4
    band_dropout: float = 0.0
    spectral_jitter: float = 0.0
    metadata_dropout: float = 0.0

    def __post_init__(self) -> None:
        """Check every value (the messages name the config key)."""
        if self.method not in ADAPT_METHODS:
            raise UserInputError(
                f"adapt.method is {self.method!r}; expected one of: {', '.join(ADAPT_METHODS)}"
            )
        if not (_is_number(self.weight) and math.isfinite(self.weight) and self.weight >= 0):
            raise UserInputError(f"adapt.weight must be >= 0; got {self.weight!r}")
        if not (_is_number(self.threshold) and 0.0 < self.threshold <= 1.0):
            raise UserInputError(f"adapt.threshold must be in (0, 1]; got {self.threshold!r}")
        if not (_is_int(self.steps) and self.steps >= 0):
            raise UserInputError(f"adapt.steps must be an integer >= 0; got {self.steps!r}")
        if self.method == "tent" and self.steps < 1:
            raise UserInputError("adapt.steps must be >= 1 for tent (its optimisation steps)")
        if not (_is_number(self.lr) and math.isfinite(self.lr) and self.lr > 0):
            raise UserInputError(f"adapt.lr must be > 0; got {self.lr!r}")
        if not (_is_number(self.band_dropout) and 0.0 <= self.band_dropout < 1.0):
            raise UserInputError(f"adapt.band_dropout must be in [0, 1); got {self.band_dropout!r}")
        if not (
            _is_number(self.spectral_jitter)
            and math.isfinite(self.spectral_jitter)
            and self.spectral_jitter >= 0
        ):
            raise UserInputError(
                f"adapt.spectral_jitter must be >= 0; got {self.spectral_jitter!r}"
            )
        if not (_is_number(self.metadata_dropout) and 0.0 <= self.metadata_dropout <= 1.0):
            raise UserInputError(
                f"adapt.metadata_dropout must be in [0, 1]; got {self.metadata_dropout!r}"
            )
        for name in ("weight", "threshold", "lr", "band_dropout", "spectral_jitter"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "metadata_dropout", float(self.metadata_dropout))

    @property
    def augments(self) -> bool:
        """True when source batches are augmented (band, spectral or metadata dropout)."""
        return self.band_dropout > 0 or self.spectral_jitter > 0 or self.metadata_dropout > 0

    @property
    def plain(self) -> bool:
        """True for plain source-only training: method ``none`` and no augmentation."""
        return self.method == "none" and not self.augments

    @property
    def needs_target(self) -> bool:
        """True when the method needs unlabelled target data (every method but ``none``)."""
        return self.method != "none"

    @property
    def during_training(self) -> bool:
        """True for methods that change training (dann, deep_coral, mmd, self_training)."""
        return self.method in _DURING_TRAINING

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON/YAML), every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> AdaptSection:
        """The section of :meth:`to_dict` output (``None``: source-only training).

        Raises:
            UserInputError: For unknown keys or bad values.
        """
        return _section(cls, "adapt", values)


class Adaptation(Protocol):
    """What an entry point of group ``thinkingearth.adaptation`` returns (zero-argument call).

    Attributes:
        name: The method (an :data:`AdaptMethod`).
        during_training: True when the method changes training (:meth:`wrap` adds a loss);
            False when it adapts the trained model (:meth:`after_training`).
    """

    name: str
    during_training: bool

    def wrap(self, module: TaskModule, section: AdaptSection) -> L.LightningModule:
        """The LightningModule to fit: its ``training_step`` takes ``{"source": batch,
        "target": batch | None}`` (or a plain source batch); ``.task`` is ``module`` (save and
        test it); validation and test delegate to ``module``."""
        ...

    def after_training(
        self, module: TaskModule, section: AdaptSection, target: DataLoader
    ) -> TaskModule:
        """``module`` adapted to the unlabelled ``target`` batches (identity for methods that
        act during training)."""
        ...


_ADAPTATIONS: dict[str, Callable[[], Adaptation]] = {}
_ADAPTATIONS_LOADED: dict[str, Adaptation] = {}


def register_adaptation(name: str, factory: Callable[[], Adaptation] | None) -> None:
    """Register (or with ``None`` remove) the factory of adaptation ``name`` in this process.

    A registered factory takes precedence over an installed entry point (tests, notebooks).
    """
    with _LOCK:
        _ADAPTATIONS_LOADED.pop(name, None)
        if factory is None:
            _ADAPTATIONS.pop(name, None)
        else:
            _ADAPTATIONS[name] = factory


def adaptation_methods() -> list[str]:
    """Every adaptation method available (registered or installed), ``none`` first."""
    names = set(_ADAPTATIONS) | set(_entry_points(ADAPT_GROUP))
    return ["none", *sorted(names - {"none"})]


def get_adaptation(name: str) -> Adaptation:
    """The adaptation method ``name`` (registered first, then entry points; cached).

    ``none`` is source-only training; its adaptation still augments source batches when the
    section asks for band, spectral or metadata dropout.

    Raises:
        UserInputError: For a method that is not installed (naming those that are), or whose
            entry point cannot be loaded.
    """
    with _LOCK:
        if name in _ADAPTATIONS_LOADED:
            return _ADAPTATIONS_LOADED[name]
        factory = _ADAPTATIONS.get(name)
        if factory is None:
            found = _entry_points(ADAPT_GROUP).get(name)
            if found is None:
                names = set(_ADAPTATIONS) | set(_entry_points(ADAPT_GROUP))
                raise UserInputError(
                    f"no adaptation method {name!r}; installed: "
                    f"{', '.join(sorted(names)) or 'nothing'}"
                )
            try:
                factory = found.load()
            except ImportError as error:
                raise UserInputError(
                    f"adaptation method {name} ({found.value}) cannot be loaded: {error}"
                ) from None
        adaptation = factory()
        for attribute in ("name", "during_training", "wrap", "after_training"):
            if not hasattr(adaptation, attribute):
                raise TypeError(f"adaptation {name!r} has no {attribute!r}; see Adaptation")
        _ADAPTATIONS_LOADED[name] = adaptation
        return adaptation
