"""What the scene predictor needs to know about a model: :class:`SceneModel`.

A scene model wraps a network, any ``torch.nn.Module`` or callable, that maps an input batch
``[B, T, C, h, w]`` (``T`` acquisitions oldest first, ``C`` bands in :attr:`SceneModel.bands`
order, already converted to :attr:`SceneModel.sar_units` and normalised with
:attr:`SceneModel.mean`/:attr:`SceneModel.std` where given) to class probabilities or logits
``[B, K, h, w]``, with the facts the predictor needs around it: the task and its classes, the
sensor and bands, how many acquisitions it takes, tile size and overlap.

A network trained with metadata sets :attr:`SceneModel.metadata`; the predictor then calls it
as ``network(x, meta)``, ``meta`` a dict of CPU float64 tensors, one value per tile: ``lon``,
``lat`` (WGS84 degrees of the tile's centre) and ``gsd`` (metres, see
:meth:`thinkingearth.data.scene.Grid.gsd_metres`) as ``[B]``, and ``time`` (days since
1970-01-01 UTC of each acquisition, oldest first) as ``[B, T]``; NaN marks what is unknown, as
in the Sample contract. Networks without the flag (the threshold model, any callable) are called
with the tiles alone.

A model whose predictions average several weight samples (a task checkpoint with MC dropout or
a deep ensemble, :attr:`SceneModel.weight_samples` > 1) also gives a
:attr:`SceneModel.split_network`: the same inputs to ``[B, K + 1, h, w]``, the class
probabilities averaged over the weight samples and, last, the expected entropy over the samples
(nats), which ``predict --uncertainty split`` blends beside them to separate the aleatoric from
the epistemic uncertainty (:func:`~thinkingearth.infer.predictor.predict_scene`).

A model that must look at the whole scene first (the Otsu thresholds of
:mod:`thinkingearth.infer.threshold`) gives a ``calibrate`` function: the predictor reads the
scene once at reduced resolution (at most ``calibration_side`` px a side), hands it over, and
predicts with the network ``calibrate`` returns, so one :class:`SceneModel` serves many scenes
(and many Dask workers) without shared state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
from torch import Tensor

from thinkingearth.data.scene import SAR_UNITS, SarUnits
from thinkingearth.data.synthetic import FLOOD_CLASSES, LANDCOVER_CLASSES
from thinkingearth.errors import UserInputError
from thinkingearth.sensors import get_sensor
from thinkingearth.viz import FLOOD_COLOURS, LANDCOVER_COLOURS

__all__ = [
    "FLOOD_CLASSES",
    "INPUT_OPTIONS",
    "LANDCOVER_CLASSES",
    "TASKS",
    "WATER_CLASSES",
    "WATER_COLOURS",
    "MetaNetwork",
    "Network",
    "OutputKind",
    "SceneModel",
    "ScenePreview",
    "Task",
]

Task = Literal["flood", "water", "landcover", "zeroshot"]
#: The tasks ``predict --task`` maps; ``zeroshot`` (classes named by the user, mapped with a
#: vision-language model) has its own command, ``thinkingearth zeroshot``.
TASKS: tuple[str, ...] = ("flood", "water", "landcover")
OutputKind = Literal["probabilities", "logits"]

#: Single-date water mapping classes.
WATER_CLASSES: tuple[str, ...] = ("land", "water")
WATER_COLOURS: tuple[str, ...] = (FLOOD_COLOURS[0], FLOOD_COLOURS[1])

#: ``[B, T, C, h, w]`` float32 -> ``[B, K, h, w]`` probabilities or logits.
Network = Callable[[Tensor], Tensor]
#: ``([B, T, C, h, w], {"lon", "lat", "gsd": [B], "time": [B, T]})`` -> ``[B, K, h, w]``.
MetaNetwork = Callable[[Tensor, Mapping[str, Tensor]], Tensor]


@dataclass(frozen=True)
class ScenePreview:
    """A whole scene read at reduced resolution, for scene-wide calibration.

    Attributes:
        x: float32 ``[T, C, h, w]`` in the model's SAR units, not normalised; each pixel is the
            average of ``factor`` × ``factor`` scene pixels (nodata excluded); invalid pixels 0.
        valid: bool ``[h, w]``, pixels with data in every band of every acquisition.
        factor: scene pixels per preview pixel along each axis (1 = full resolution).
    """

    x: np.ndarray
    valid: np.ndarray
    factor: int


#: ``preview -> network`` for one scene.
Calibrate = Callable[[ScenePreview], Network | MetaNetwork]

#: Class names and colours of each task's output (land cover: the synthetic world's default).
TASK_CLASSES: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "flood": (FLOOD_CLASSES, FLOOD_COLOURS[: len(FLOOD_CLASSES)]),
    "water": (WATER_CLASSES, WATER_COLOURS),
    "landcover": (LANDCOVER_CLASSES, LANDCOVER_COLOURS),
}


#: The CLI options of the acquisitions (oldest first), by task and number of acquisitions.
INPUT_OPTIONS: Mapping[tuple[str, int], tuple[str, ...]] = {
    ("flood", 2): ("--pre", "--post"),
    ("flood", 3): ("--pre2", "--pre", "--post"),
    ("water", 1): ("--image",),
    ("landcover", 1): ("--image",),
    ("zeroshot", 1): ("--image",),
}


@dataclass(frozen=True)
class SceneModel:
    """A network and the facts the scene predictor needs to run it over a whole scene.

    Attributes:
        network: ``[B, T, C, h, w]`` -> ``[B, K, h, w]``, or ``(x, meta)`` -> ``[B, K, h, w]``
            with :attr:`metadata` (see the module docstring).
        task: ``flood`` (0 no water, 1 permanent water, 2 flood), ``water`` (0 land, 1 water),
            ``landcover``, or ``zeroshot`` (classes the user named, :mod:`thinkingearth.vl`).
        classes: the ``K`` class names; class id ``k`` is ``classes[k]`` (at most 255).
        colours: one colour per class, for the quicklook.
        sensor: registry name of the input sensor.
        bands: the ``C`` input bands, registry names, in the network's order.
        steps: accepted numbers of acquisitions ``T`` (flood: ``(2, 3)`` = pre [+ pre2] + post).
        tile: tile side in pixels.
        overlap: pixels shared by neighbouring tiles (blended with a smooth ramp).
        sar_units: the SAR units the network takes (``db`` or ``linear``); files are converted.
        outputs: whether the network returns ``probabilities`` or ``logits`` (softmax applied).
        mean, std: per-band normalisation in ``sar_units``; ``None`` feeds values as they are.
        fill: value per band (in ``sar_units``, before normalisation) put in no-data pixels;
            default: ``mean`` where given, else 0.
        batch_size: tiles per forward pass.
        name: how reports and file metadata name the model.
        calibrate: optional scene-wide calibration (see the module docstring).
        calibration_side: side in pixels of the reduced-resolution read given to ``calibrate``.
        tags: extra ``key=value`` metadata written into the output file.
        metadata: the network takes per-tile metadata (location, ground sample distance,
            acquisition dates) as a second argument.
        uncertainty_method: how the network's weights estimate uncertainty (a task
            checkpoint's ``head.uncertainty``: ``none``, ``heteroscedastic``, ``mc_dropout``,
            ``ensemble``); ``None`` for models without trained weight samples (the threshold
            models, zero-shot), which cannot split the entropy.
        weight_samples: weight samples ``S`` each prediction averages (1: deterministic or
            heteroscedastic weights; the epistemic part is then not modelled).
        split_network: like :attr:`network`, but returning ``[B, K + 1, h, w]``: the class
            probabilities averaged over the weight samples, then the expected entropy over the
            samples in nats; needed when :attr:`weight_samples` > 1.
    """

    network: Network | MetaNetwork
    task: Task
    classes: tuple[str, ...]
    colours: tuple[str, ...]
    sensor: str
    bands: tuple[str, ...]
    steps: tuple[int, ...] = (1,)
    tile: int = 256
    overlap: int = 32
    sar_units: SarUnits = "db"
    outputs: OutputKind = "logits"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    fill: tuple[float, ...] | None = None
    batch_size: int = 8
    name: str = "model"
    calibrate: Calibrate | None = None
    calibration_side: int = 1024
    tags: Mapping[str, str] = field(default_factory=dict)
    metadata: bool = False
    uncertainty_method: str | None = None
    weight_samples: int = 1
    split_network: Network | MetaNetwork | None = None

    def __post_init__(self) -> None:
        if self.task not in get_args(Task):
            raise UserInputError(
                f"unknown task {self.task!r}; expected one of: {', '.join(get_args(Task))}"
            )
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "colours", tuple(self.colours))
        object.__setattr__(self, "steps", tuple(int(s) for s in self.steps))
        sensor = get_sensor(self.sensor)
        object.__setattr__(self, "sensor", sensor.name)
        object.__setattr__(self, "bands", tuple(b.name for b in sensor.select(list(self.bands))))
        if not 1 <= len(self.classes) <= 255:
            raise UserInputError(f"a scene model needs 1 to 255 classes, got {len(self.classes)}")
        if len(self.colours) != len(self.classes):
            raise UserInputError(
                f"give one colour per class: {len(self.classes)} classes, "
                f"{len(self.colours)} colours"
            )
        if not self.steps or min(self.steps) < 1:
            raise UserInputError(f"steps must be positive numbers of acquisitions: {self.steps}")
        if self.tile <= 0 or not 0 <= self.overlap < self.tile:
            raise UserInputError(
                f"tile must be positive and overlap in [0, tile): tile {self.tile}, "
                f"overlap {self.overlap}"
            )
        if self.batch_size <= 0:
            raise UserInputError(f"batch size must be positive, got {self.batch_size}")
        if self.sar_units not in SAR_UNITS:
            raise UserInputError(
                f"unknown SAR units {self.sar_units!r}; expected one of: {', '.join(SAR_UNITS)}"
            )
        if self.outputs not in get_args(OutputKind):
            raise UserInputError(
                f"outputs must be one of: {', '.join(get_args(OutputKind))}; got {self.outputs!r}"
            )
        if (self.mean is None) != (self.std is None):
            raise UserInputError("give both mean and std for normalisation, or neither")
        for what, values in (("mean", self.mean), ("std", self.std), ("fill", self.fill)):
            if values is not None and len(values) != len(self.bands):
                raise UserInputError(
                    f"{what} needs one value per band ({len(self.bands)}), got {len(values)}"
                )
        if self.std is not None and not all(s > 0 for s in self.std):
            raise UserInputError(f"std must be positive, got {self.std}")
        if self.weight_samples < 1:
            raise UserInputError(f"weight samples must be at least 1, got {self.weight_samples}")
        if self.weight_samples > 1 and self.split_network is None:
            raise UserInputError(
                f"a model averaging {self.weight_samples} weight samples needs a split_network "
                "(probabilities and expected entropy) to split its uncertainty"
            )

    @property
    def splits_uncertainty(self) -> bool:
        """Whether ``predict --uncertainty split`` can separate aleatoric from epistemic.

        True for trained weights (:attr:`uncertainty_method` set), whose weight samples the
        split is defined over; with one sample the epistemic part is 0 (not modelled).
        """
        return self.uncertainty_method is not None

    @property
    def inputs_needed(self) -> str:
        """The inputs the model takes, in words, e.g. ``--pre2, --pre, --post``."""
        choices = []
        for n in self.steps:
            options = INPUT_OPTIONS.get((self.task, n))
            choices.append(", ".join(options) if options else f"{n} acquisitions, oldest first")
        return " or ".join(choices)

    @property
    def fill_values(self) -> tuple[float, ...]:
        """The value per band put in no-data pixels (see :attr:`fill`)."""
        if self.fill is not None:
            return tuple(self.fill)
        if self.mean is not None:
            return tuple(self.mean)
        return (0.0,) * len(self.bands)
