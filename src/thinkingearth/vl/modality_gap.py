"""Mind the Modality Gap: patching an image-text model, and aligning a new sensor with it.

Zavras et al. 2024, "Mind the Modality Gap: Towards a Remote Sensing Vision-Language Model via
Cross-modal Alignment" (arXiv:2402.09816), in two stages:

* **(a) patching** (after PAINT, Ilharco et al. 2022): the image tower of an image-text model is
  fine-tuned on a labelled task through its *frozen* class-prompt head (the class text
  embeddings times the model's logit scale, :func:`prompt_logits`), then the weights are
  interpolated, ``θ(α) = (1 − α)·θ_zero-shot + α·θ_fine-tuned``
  (:func:`interpolate_state_dicts`), and every ``α`` is scored on the task and on a control task
  the fine-tuning never saw (:func:`patch`, :func:`run_patching`: a JSON and a Markdown table).
  The user picks the ``α`` that gains on the task without losing the control.
* **(b) alignment**: a student image tower learns a new sensor from co-registered pairs, by
  regressing the frozen teacher image tower's features of the same place (the teacher sees the
  sensor it was trained on) while classifying through the teacher's frozen prompt head,
  :func:`alignment_loss`: ``MSE(student, teacher) + λ·BCE(prompt logits of the student,
  targets)``, ``λ = 0.05``. As in the authors' code, the MSE compares the projected image
  features before L2 normalisation and the BCE takes the data set's labels (multi-hot, or one-hot
  for a single-label task); ``targets: teacher`` uses the teacher's softmax over the same head
  instead, for pairs without labels (our addition). No captions are needed. The recipe
  ``modality_gap`` runs it on the pretraining machinery (:class:`ModalityGapAlign`), so any
  source with co-registered pairs works (the synthetic world, BigEarthNet S1 + S2, SSL4EO-S12,
  Copernicus-Pretrain, folders, shards); the released code covers Sentinel-2 only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thinkingearth.errors import UserInputError
from thinkingearth.pretrain.modules import PretrainModule
from thinkingearth.pretrain.transforms import View

__all__ = [
    "DEFAULT_ALPHAS",
    "PATCHING_OUTPUTS",
    "SEASONS",
    "SYNTHETIC_SCENE_TASKS",
    "LabelledSamples",
    "ModalityGapAlign",
    "ModalityGapSettings",
    "PatchingConfig",
    "PatchingResult",
    "SceneTask",
    "alignment_loss",
    "check_settings",
    "class_head",
    "dominant_landcover",
    "finetune_through_head",
    "image_tower_parameters",
    "image_tower_state",
    "interpolate_state_dicts",
    "list_patching_configs",
    "load_image_tower_state",
    "load_patching_config",
    "modality_gap",
    "modality_gap_settings",
    "patch",
    "prompt_logits",
    "run_patching",
    "season_of",
    "soft_targets",
    "source_classes",
    "synthetic_scene_samples",
    "write_patching_report",
    "zero_shot_accuracy",
]

#: The interpolation coefficients scored by default: 0 (zero-shot), 0.1, ..., 1 (fine-tuned).
DEFAULT_ALPHAS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))
#: Weight of the BCE term of the alignment loss (the authors' ``0.05``).
DEFAULT_BCE_WEIGHT = 0.05

AlignTargets = Literal["labels", "teacher"]


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------


def prompt_logits(features: Tensor, class_embeddings: Tensor, logit_scale: Tensor) -> Tensor:
    """CLIP's zero-shot head: ``exp(logit_scale) · cos(features, class embeddings)``.

    Args:
        features: ``[B, D]`` image features (any norm; normalised here, as the head does).
        class_embeddings: ``[K, D]`` class text embeddings (the prompt ensemble).
        logit_scale: The model's log inverse temperature (a scalar tensor).

    Returns:
        ``[B, K]`` logits.
    """
    image = F.normalize(features.float(), dim=-1)
    text = F.normalize(class_embeddings.float().to(image.device), dim=-1)
    return logit_scale.float().exp() * image @ text.T


def soft_targets(teacher_logits: Tensor) -> Tensor:
    """Targets for the BCE term from the teacher's prompt-head logits: their softmax ``[B, K]``.

    The sigmoid of CLIP-scaled logits (``exp(logit_scale)`` ≈ 100) is close to 1 for every class
    with a positive cosine, so it is no target; the softmax keeps the teacher's ranking and sums
    to one, as a one-hot label does.
    """
    return torch.softmax(teacher_logits.float(), dim=-1)


def alignment_loss(
    student: Tensor,
    teacher: Tensor,
    logits: Tensor,
    targets: Tensor,
    bce_weight: float = DEFAULT_BCE_WEIGHT,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The alignment loss of Mind the Modality Gap.

    ``mean((student − teacher)²) + bce_weight · mean(BCE-with-logits(logits, targets))``: both
    means run over every element (``torch.nn.MSELoss`` and ``BCEWithLogitsLoss`` defaults).

    Args:
        student: ``[B, D]`` the student's projected image features (before L2 normalisation).
        teacher: ``[B, D]`` the teacher's projected image features of the co-registered inputs.
        logits: ``[B, K]`` the student's logits through the frozen prompt head
            (:func:`prompt_logits` of ``student``).
        targets: ``[B, K]`` multi-hot labels, one-hot labels, or soft targets in ``[0, 1]``.
        bce_weight: ``λ``.

    Returns:
        ``(loss, {"mse": ..., "bce": ...})`` (the parts detached).

    Raises:
        ValueError: Shapes that do not match.
    """
    if student.shape != teacher.shape:
        raise ValueError(
            f"student features {tuple(student.shape)} and teacher features "
            f"{tuple(teacher.shape)} differ in shape"
        )
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
    mse = F.mse_loss(student.float(), teacher.float().detach())
    bce = F.binary_cross_entropy_with_logits(logits.float(), targets.float().detach())
    return mse + bce_weight * bce, {"mse": mse.detach(), "bce": bce.detach()}


# ----------------------------------------------------------------------------------------------
# Weight interpolation
# ----------------------------------------------------------------------------------------------


def interpolate_state_dicts(
    zero_shot: Mapping[str, Tensor], fine_tuned: Mapping[str, Tensor], alpha: float
) -> dict[str, Tensor]:
    """``θ(α) = (1 − α)·θ_zero-shot + α·θ_fine-tuned``, tensor by tensor (PAINT).

    Floating-point tensors are interpolated (in float64, then cast back); other tensors (integer
    buffers) must be equal in both and are copied.

    Args:
        zero_shot: The state before fine-tuning.
        fine_tuned: The state after, with the same keys and shapes.
        alpha: The coefficient, in ``[0, 1]`` (0 gives ``zero_shot``, 1 ``fine_tuned``).

    Raises:
        ValueError: ``alpha`` outside ``[0, 1]``; keys, shapes or dtypes that differ; integer
            tensors that differ.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if set(zero_shot) != set(fine_tuned):
        only = sorted(set(zero_shot) ^ set(fine_tuned))
        raise ValueError(f"the two states have different keys, e.g. {only[0]!r}")
    out: dict[str, Tensor] = {}
    for key, a in zero_shot.items():
        b = fine_tuned[key]
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ValueError(
                f"{key}: {tuple(a.shape)} {a.dtype} against {tuple(b.shape)} {b.dtype}"
            )
        if a.is_floating_point():
            mixed = (1.0 - alpha) * a.detach().double() + alpha * b.detach().double().to(a.device)
            out[key] = mixed.to(a.dtype)
        else:
            if not torch.equal(a, b.to(a.device)):
                raise ValueError(f"{key}: non-floating tensors differ and cannot be interpolated")
            out[key] = a.detach().clone()
    return out


def _tower(model: nn.Module) -> dict[str, nn.Module]:
    """The image tower of a VL model: its encoder and projection (the text side is excluded)."""
    parts = {name: getattr(model, name, None) for name in ("encoder", "projection")}
    missing = [name for name, part in parts.items() if not isinstance(part, nn.Module)]
    if missing:
        raise TypeError(f"expected a VL model with encoder and projection modules; no {missing}")
    return parts  # type: ignore[return-value]


def image_tower_state(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy of the image tower's state (``encoder.*`` and ``projection.*``)."""
    return {
        f"{name}.{key}": value.detach().clone()
        for name, part in _tower(model).items()
        for key, value in part.state_dict().items()
    }


def load_image_tower_state(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Load an :func:`image_tower_state` back into ``model`` (strictly: every key, no other)."""
    for name, part in _tower(model).items():
        prefix = f"{name}."
        part.load_state_dict(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        )


def image_tower_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters fine-tuned by patching: the encoder's and the projection's."""
    return [p for part in _tower(model).values() for p in part.parameters()]


# ----------------------------------------------------------------------------------------------
# Scene-level classification tasks of the synthetic world
# ----------------------------------------------------------------------------------------------

#: Seasons by day of year, as the synthetic world's captions name them: ``(first day after the
#: season, name)`` (winter wraps around the year's end).
SEASONS: tuple[tuple[int, str], ...] = (
    (80, "winter"),
    (172, "spring"),
    (266, "summer"),
    (355, "autumn"),
    (367, "winter"),
)
_SEASON_NAMES: tuple[str, ...] = ("winter", "spring", "summer", "autumn")


def season_of(sample: Mapping[str, Any]) -> int:
    """The season (index into ``winter, spring, summer, autumn``) of a Sample's acquisition.

    Read from the Sample's ``time`` (days since 1970-01-01; the last step of a time series).

    Raises:
        UserInputError: The Sample has no acquisition time.
    """
    value = sample.get("time", math.nan)
    days = float(torch.as_tensor(value, dtype=torch.float64).reshape(-1)[-1])
    if not math.isfinite(days):
        raise UserInputError("the season task needs each Sample's acquisition time ('time')")
    doy = (date(1970, 1, 1) + timedelta(days=math.floor(days))).timetuple().tm_yday
    name = next(name for limit, name in SEASONS if doy < limit)
    return _SEASON_NAMES.index(name)


def dominant_landcover(sample: Mapping[str, Any]) -> int:
    """The land-cover class covering most of a Sample's ``mask`` (the synthetic ``landcover``)."""
    mask = sample.get("mask")
    if not isinstance(mask, Tensor):
        raise UserInputError("the land-cover task needs Samples with a land-cover 'mask'")
    from thinkingearth.data.synthetic import LANDCOVER_CLASSES

    counts = torch.bincount(mask.reshape(-1).long(), minlength=len(LANDCOVER_CLASSES))
    return int(torch.argmax(counts[: len(LANDCOVER_CLASSES)]))


@dataclass(frozen=True)
class SceneTask:
    """A scene-level classification task: class names and the label of a Sample.

    Attributes:
        name: Short name (report keys).
        classnames: The class names the prompt head is built from, in label order.
        label: Returns the class index of a Sample.
    """

    name: str
    classnames: tuple[str, ...]
    label: Callable[[Mapping[str, Any]], int]


def _landcover_classes() -> tuple[str, ...]:
    from thinkingearth.data.synthetic import LANDCOVER_CLASSES

    return LANDCOVER_CLASSES


#: The synthetic world's scene tasks: the dominant land cover (the captions' first class) and
#: the season (the captions' "Seen in ..."), two independent axes of one scene.
SYNTHETIC_SCENE_TASKS: dict[str, SceneTask] = {
    "landcover": SceneTask("landcover", _landcover_classes(), dominant_landcover),
    "season": SceneTask("season", _SEASON_NAMES, season_of),
}


@dataclass
class LabelledSamples:
    """Samples of one sensor and band set with one class index each.

    Attributes:
        task: The task the labels belong to.
        samples: Raw Samples (stored units; normalised when encoded).
        labels: ``[N]`` int64 class indices.
    """

    task: SceneTask
    samples: list[dict[str, Any]]
    labels: Tensor

    def __post_init__(self) -> None:
        """Check the lengths and the label range."""
        if len(self.samples) != len(self.labels) or not self.samples:
            raise UserInputError(
                f"{self.task.name}: expected as many labels as samples (at least one), got "
                f"{len(self.labels)} labels for {len(self.samples)} samples"
            )
        if int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.task.classnames):
            raise UserInputError(
                f"{self.task.name}: labels must be class indices below {len(self.task.classnames)}"
            )


def synthetic_scene_samples(
    task: str | SceneTask,
    sensor: str = "sentinel-2-l2a",
    split: Literal["train", "val", "test"] = "train",
    n: int = 64,
    size: int = 32,
    seed: int = 0,
    bands: Sequence[str] | None = None,
) -> LabelledSamples:
    """Labelled Samples of a synthetic scene task (:data:`SYNTHETIC_SCENE_TASKS`).

    Raises:
        UserInputError: An unknown task name.
    """
    from thinkingearth.data.synthetic import SyntheticCopernicus

    if isinstance(task, str):
        if task not in SYNTHETIC_SCENE_TASKS:
            raise UserInputError(
                f"unknown synthetic scene task {task!r}; expected one of: "
                + ", ".join(SYNTHETIC_SCENE_TASKS)
            )
        task = SYNTHETIC_SCENE_TASKS[task]
    data = SyntheticCopernicus(
        task="landcover", sensor=sensor, split=split, n=n, size=size, seed=seed, bands=bands
    )
    samples = [data[i] for i in range(len(data))]
    labels = torch.tensor([task.label(s) for s in samples], dtype=torch.int64)
    return LabelledSamples(task, samples, labels)


# ----------------------------------------------------------------------------------------------
# Stage (a): patching
# ----------------------------------------------------------------------------------------------


def _normaliser(model: nn.Module) -> Any:
    from thinkingearth.data.transforms import Normaliser

    found = getattr(model, "normaliser", None)
    return found if found is not None else Normaliser()


def _batch(model: nn.Module, samples: Sequence[Mapping[str, Any]]) -> tuple[Tensor, dict[str, Any]]:
    """Normalised images ``[B, C, H, W]`` of one sensor and band set, and their metadata."""
    from thinkingearth.data.sample import collate

    first = samples[0]
    sensor, bands = first["sensor"], tuple(first["bands"])
    if any(s["sensor"] != sensor or tuple(s["bands"]) != bands for s in samples):
        raise UserInputError("patching expects Samples of one sensor and one band set")
    normalise = _normaliser(model)
    if normalise.needs_fit(sensor, bands):  # no published statistics, none in the model
        normalise.fit(sensor, bands, [s["image"] for s in samples])
    batch = collate([{k: v for k, v in s.items() if k not in ("mask", "label")} for s in samples])
    units = first.get("units")
    image = normalise(batch["image"], sensor, bands, units)
    meta = {k: batch[k] for k in ("lon", "lat", "time", "gsd")}
    return image, {"sensor": sensor, "bands": list(bands), "meta": meta}


def _encode(model: nn.Module, samples: Sequence[Mapping[str, Any]]) -> Tensor:
    image, where = _batch(model, samples)
    device = next(model.parameters()).device
    meta = {k: v.to(device) for k, v in where["meta"].items()}
    return model.encode_image(  # type: ignore[operator]
        image.to(device), where["bands"], sensor=where["sensor"], meta=meta
    )


def class_head(
    model: nn.Module, classnames: Sequence[str], templates: Sequence[str] | None
) -> Tensor:
    """The frozen prompt head of ``classnames``: class embeddings ``[K, D]`` (no gradient)."""
    from thinkingearth.vl.prompts import DEFAULT_TEMPLATES, class_embeddings

    with torch.no_grad():
        return class_embeddings(
            model.text,  # type: ignore[arg-type]
            list(classnames),
            tuple(templates) if templates is not None else DEFAULT_TEMPLATES,
        ).detach()


@torch.no_grad()
def zero_shot_accuracy(
    model: nn.Module,
    data: LabelledSamples,
    head: Tensor,
    batch_size: int = 64,
) -> float:
    """Top-1 accuracy of ``model`` on ``data`` through the prompt head ``head`` ``[K, D]``."""
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for start in range(0, len(data.samples), batch_size):
            chunk = data.samples[start : start + batch_size]
            scores = _encode(model, chunk) @ head.to(next(model.parameters()).device).T
            predicted = scores.argmax(dim=-1).cpu()
            correct += int((predicted == data.labels[start : start + batch_size]).sum())
    finally:
        model.train(was_training)
    return correct / len(data.samples)


def finetune_through_head(
    model: nn.Module,
    data: LabelledSamples,
    head: Tensor,
    *,
    steps: int = 100,
    batch_size: int = 16,
    lr: float = 1e-4,
    weight_decay: float = 0.1,
    warmup_steps: int = 10,
    grad_clip: float = 1.0,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> list[float]:
    """Fine-tune the image tower on ``data`` with cross-entropy through the frozen prompt head.

    The head (class text embeddings) and the logit scale stay fixed; only the encoder and the
    projection learn (AdamW, linear warm-up then cosine decay, as the authors' patching).
    ``log`` gets a progress line about every tenth of the steps.

    Returns:
        The training loss of every step.
    """
    if steps <= 0 or batch_size <= 0 or lr <= 0:
        raise UserInputError("steps, batch_size and lr of the fine-tuning must be positive")
    parameters = image_tower_parameters(model)
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    logit_scale = model.logit_scale.detach()  # type: ignore[union-attr]
    generator = np.random.default_rng(seed)
    device = next(model.parameters()).device
    n = len(data.samples)
    order: list[int] = []
    losses: list[float] = []
    model.train()
    every = max(1, steps // 10)
    for step in range(steps):
        if len(order) < min(batch_size, n):
            order.extend(generator.permutation(n).tolist())
        picked, order = order[: min(batch_size, n)], order[min(batch_size, n) :]
        features = _encode(model, [data.samples[i] for i in picked])
        logits = prompt_logits(features, head.to(device), logit_scale)
        loss = F.cross_entropy(logits, data.labels[picked].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if log is not None and ((step + 1) % every == 0 or step + 1 == steps):
            log(f"fine-tuning step {step + 1}/{steps} · loss {losses[-1]:.4f}")
    model.eval()
    return losses


@dataclass
class PatchingResult:
    """What :func:`patch` measured.

    Attributes:
        task: The fine-tuning task's name.
        control: The control tasks' names.
        alphas: The coefficients scored.
        accuracy: ``accuracy[task name][i]``: top-1 accuracy at ``alphas[i]`` (the fine-tuning
            task is scored on its held-out samples).
        chance: Accuracy of always answering the most frequent class, per task.
        losses: The fine-tuning loss of every step.
        settings: The fine-tuning settings.
    """

    task: str
    control: tuple[str, ...]
    alphas: tuple[float, ...]
    accuracy: dict[str, list[float]]
    chance: dict[str, float]
    losses: list[float] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: one row per ``α``, plus the settings and the fine-tuning losses."""
        rows = [
            {"alpha": alpha, **{name: acc[i] for name, acc in self.accuracy.items()}}
            for i, alpha in enumerate(self.alphas)
        ]
        return {
            "task": self.task,
            "control": list(self.control),
            "metric": "top-1 accuracy through the frozen class-prompt head",
            "rows": rows,
            "chance": dict(self.chance),
            "settings": dict(self.settings),
            "finetune_loss_first_last": (
                [self.losses[0], self.losses[-1]] if self.losses else None
            ),
        }

    def to_markdown(self) -> str:
        """A Markdown table: one row per ``α``, one column per task, and the chance row."""
        names = [self.task, *self.control]
        header = "| α | " + " | ".join(
            f"{n} (task)" if n == self.task else f"{n} (control)" for n in names
        )
        lines = [
            f"# Patching: fine-tuned on {self.task}, interpolated θ(α) = (1−α)·θ_zero-shot + "
            "α·θ_fine-tuned",
            "",
            "Top-1 accuracy through the frozen class-prompt head.",
            "",
            header + " |",
            "|" + "---|" * (len(names) + 1),
        ]
        for i, alpha in enumerate(self.alphas):
            cells = " | ".join(f"{self.accuracy[n][i]:.3f}" for n in names)
            lines.append(f"| {alpha:g} | {cells} |")
        cells = " | ".join(f"{self.chance[n]:.3f}" for n in names)
        lines.append(f"| chance (majority class) | {cells} |")
        return "\n".join(lines) + "\n"


def _majority(data: LabelledSamples) -> float:
    counts = torch.bincount(data.labels, minlength=len(data.task.classnames))
    return float(counts.max()) / len(data.labels)


def patch(
    model: nn.Module,
    train: LabelledSamples,
    evaluate: Mapping[str, LabelledSamples],
    *,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    templates: Sequence[str] | None = None,
    steps: int = 100,
    batch_size: int = 16,
    lr: float = 1e-4,
    weight_decay: float = 0.1,
    warmup_steps: int = 10,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> tuple[PatchingResult, dict[str, Tensor], dict[str, Tensor]]:
    """Stage (a): fine-tune through the frozen prompt head, then score every interpolation.

    Args:
        model: A VL model (``encoder``, ``projection``, ``text``, ``logit_scale``,
            ``encode_image``); fine-tuned in place and left at ``θ(alphas[-1])``.
        train: The labelled task to fine-tune on.
        evaluate: Held-out sets by name: the task's own (under ``train.task.name``) and the
            control tasks (any other names); each scored through its own prompt head.
        alphas: Coefficients to score (each in ``[0, 1]``).
        templates: Prompt templates of the heads (default: the prompt ensemble of
            :mod:`thinkingearth.vl.prompts`).
        steps, batch_size, lr, weight_decay, warmup_steps, seed: The fine-tuning.
        log: Where progress lines go (``None``: nowhere).

    Returns:
        ``(result, zero-shot image-tower state, fine-tuned image-tower state)``; any ``α`` is
        :func:`interpolate_state_dicts` of the two, loaded with :func:`load_image_tower_state`.

    Raises:
        UserInputError: No held-out set of the task, an ``α`` outside ``[0, 1]``, or no ``α``.
    """
    name = train.task.name
    if name not in evaluate:
        raise UserInputError(f"patching needs a held-out set of its task {name!r} to score")
    alphas = tuple(float(a) for a in alphas)
    if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas):
        raise UserInputError(f"alphas must be values in [0, 1], got {list(alphas)}")
    heads = {
        key: class_head(model, data.task.classnames, templates) for key, data in evaluate.items()
    }
    train_head = class_head(model, train.task.classnames, templates)
    zero_shot = image_tower_state(model)
    losses = finetune_through_head(
        model,
        train,
        train_head,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        seed=seed,
        log=log,
    )
    fine_tuned = image_tower_state(model)
    accuracy: dict[str, list[float]] = {key: [] for key in evaluate}
    for alpha in alphas:
        load_image_tower_state(model, interpolate_state_dicts(zero_shot, fine_tuned, alpha))
        for key, data in evaluate.items():
            accuracy[key].append(zero_shot_accuracy(model, data, heads[key]))
        if log is not None:
            log(f"α = {alpha:g}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in accuracy.items()))
    result = PatchingResult(
        task=name,
        control=tuple(k for k in evaluate if k != name),
        alphas=alphas,
        accuracy=accuracy,
        chance={key: _majority(data) for key, data in evaluate.items()},
        losses=losses,
        settings={
            "steps": steps,
            "batch_size": batch_size,
            "lr": lr,
            "weight_decay": weight_decay,
            "warmup_steps": warmup_steps,
            "seed": seed,
            "train_samples": len(train.samples),
            "eval_samples": {k: len(v.samples) for k, v in evaluate.items()},
        },
    )
    return result, zero_shot, fine_tuned


def write_patching_report(result: PatchingResult, out: str | Path) -> tuple[Path, Path]:
    """Write ``OUT/patching.json`` and ``OUT/patching.md`` (each atomically)."""
    from thinkingearth.fileio import atomic_file

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = (folder / "patching.json", folder / "patching.md")
    with atomic_file(paths[0]) as tmp:
        tmp.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    with atomic_file(paths[1]) as tmp:
        tmp.write_text(result.to_markdown(), encoding="utf-8")
    return paths


@dataclass(frozen=True)
class PatchingConfig:
    """A patching run on the synthetic world's scene tasks, from YAML (:func:`load_patching_config`).

    Attributes:
        name: Name of the configuration.
        weights: The VL model to patch (a VL ``pretrain`` run's folder or its model file).
        task: The scene task fine-tuned on (:data:`SYNTHETIC_SCENE_TASKS`).
        controls: Scene tasks only scored (never trained on).
        sensor: The input sensor.
        bands: Its bands (default: every band the world makes).
        size: Pixels per side of the samples.
        n_train: Training samples (the world's ``train`` stream).
        n_eval: Held-out samples per task (the ``val`` stream).
        seed: World seed and the fine-tuning's sample order.
        templates: Prompt templates of the heads (default: the prompt ensemble).
        steps: Fine-tuning steps.
        batch_size: Samples per step.
        lr: Peak learning rate (AdamW; warm-up, then cosine).
        weight_decay: AdamW's decoupled weight decay.
        warmup_steps: Linear warm-up steps.
        alphas: The interpolation coefficients scored.
        save_alpha: Also write the model at this ``α`` (``OUT/vl_model.*``); ``None``: only the
            report.
        threads: Torch intra-op threads (``None``: torch's default).
    """

    name: str = "patching"
    weights: str | None = None
    task: str = "landcover"
    controls: tuple[str, ...] = ("season",)
    sensor: str = "sentinel-2-l2a"
    bands: tuple[str, ...] | None = None
    size: int = 32
    n_train: int = 256
    n_eval: int = 128
    seed: int = 0
    templates: tuple[str, ...] | None = None
    steps: int = 200
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.1
    warmup_steps: int = 20
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    save_alpha: float | None = None
    threads: int | None = None

    def validate(self) -> PatchingConfig:
        """Check every value that can be checked without data; returns ``self``.

        Raises:
            UserInputError: No weights, an unknown task, a control that is the task, a value
                out of range.
        """
        from thinkingearth.sensors import get_sensor

        if not self.weights:
            raise UserInputError("weights: the VL model to patch is missing (--set weights=PATH)")
        for key in (self.task, *self.controls):
            if key not in SYNTHETIC_SCENE_TASKS:
                raise UserInputError(
                    f"unknown scene task {key!r}; expected one of: "
                    + ", ".join(SYNTHETIC_SCENE_TASKS)
                )
        if self.task in self.controls:
            raise UserInputError(
                f"controls lists the task {self.task!r}; a control is another task"
            )
        spec = get_sensor(self.sensor)
        if self.bands is not None:
            spec.select(self.bands)
        for key in ("size", "n_train", "n_eval", "steps", "batch_size"):
            if getattr(self, key) <= 0:
                raise UserInputError(f"{key} must be positive, got {getattr(self, key)}")
        if not self.lr > 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise UserInputError("lr must be > 0, weight_decay and warmup_steps >= 0")
        if not self.alphas or any(not 0.0 <= a <= 1.0 for a in self.alphas):
            raise UserInputError(f"alphas must be values in [0, 1], got {list(self.alphas)}")
        if self.save_alpha is not None and not 0.0 <= self.save_alpha <= 1.0:
            raise UserInputError(f"save_alpha must be in [0, 1], got {self.save_alpha}")
        return self


_PATCHING_FOLDER = "configs/patching"


def list_patching_configs() -> list[str]:
    """Names of the patching configurations shipped in the package."""
    from thinkingearth.configfile import shipped_configs

    return sorted(shipped_configs(_PATCHING_FOLDER))


def load_patching_config(
    name_or_file: str | Path, overrides: Mapping[str, Any] | None = None
) -> PatchingConfig:
    """Read a patching configuration (shipped name or YAML file), merge ``overrides``, validate.

    Raises:
        UserInputError: Unknown name or key, unreadable file, a wrong value.
    """
    from thinkingearth.configfile import build, merge, read_config

    data = read_config(name_or_file, _PATCHING_FOLDER, list_patching_configs)
    if overrides:
        data = merge(data, overrides)
    config: PatchingConfig = build(PatchingConfig, data)
    return config.validate()


#: What :func:`run_patching` writes in its output folder.
PATCHING_OUTPUTS: tuple[str, ...] = ("patching.json", "patching.md", "config.yaml")


def run_patching(
    config: PatchingConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> PatchingResult:
    """Stage (a) from a configuration: patch, score every ``α``, write the report.

    Writes ``OUT/patching.json`` (one row per ``α``), ``OUT/patching.md`` (the table),
    ``OUT/config.yaml`` and, with ``save_alpha``, ``OUT/vl_model.*`` (the model at that ``α``);
    each file atomically. The output is checked before any work. ``log`` gets progress lines.

    Raises:
        UserInputError: ``OUT`` holds a report (without ``overwrite``), an unreadable model, or
            a configuration error.
    """
    import dataclasses

    import yaml

    from thinkingearth.configfile import plain
    from thinkingearth.fileio import atomic_file, check_new_file
    from thinkingearth.vl.model import VL_MODEL_STEM, load_vl_model, save_vl_model
    from thinkingearth.vl.model import _paths as _vl_model_paths

    config = config.validate()
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise UserInputError(f"--out {folder} is a file; expected a folder")
    names = list(PATCHING_OUTPUTS)
    if config.save_alpha is not None:
        names += [f"{VL_MODEL_STEM}.safetensors", f"{VL_MODEL_STEM}.json"]
        given = {path.resolve() for path in _vl_model_paths(str(config.weights))}
        if any((folder / name).resolve() in given for name in names[-2:]):
            raise UserInputError(
                f"--out {folder} holds the model being patched ({config.weights}), which "
                "save_alpha would replace; give another --out (an input is never an output)"
            )
    for name in names:
        check_new_file(folder / name, overwrite=overwrite)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    model = load_vl_model(str(config.weights))
    if log is not None:
        log(
            f"patching {config.weights} on {config.task} ({config.n_train} samples, "
            f"{config.steps} steps), then scoring {len(config.alphas)} α on "
            + ", ".join((config.task, *config.controls))
        )
    common = {
        "sensor": config.sensor,
        "size": config.size,
        "seed": config.seed,
        "bands": config.bands,
    }
    train = synthetic_scene_samples(config.task, split="train", n=config.n_train, **common)
    evaluate = {
        key: synthetic_scene_samples(key, split="val", n=config.n_eval, **common)
        for key in (config.task, *config.controls)
    }
    result, zero_shot, fine_tuned = patch(
        model,
        train,
        evaluate,
        alphas=config.alphas,
        templates=config.templates,
        steps=config.steps,
        batch_size=config.batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        seed=config.seed,
        log=log,
    )
    result.settings["weights"] = str(config.weights)
    result.settings["weights_sha256"] = model.sha256
    result.settings["sensor"] = config.sensor
    write_patching_report(result, folder)
    with atomic_file(folder / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(plain(dataclasses.asdict(config)), sort_keys=False))
    if config.save_alpha is not None:
        load_image_tower_state(
            model, interpolate_state_dicts(zero_shot, fine_tuned, config.save_alpha)
        )
        save_vl_model(model, folder / VL_MODEL_STEM)
    return result


# ----------------------------------------------------------------------------------------------
# Stage (b): alignment of a new sensor (the pretraining recipe ``modality_gap``)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModalityGapSettings:
    """The ``vl:`` section of a ``recipe: modality_gap`` configuration.

    Attributes:
        teacher: The frozen teacher: a VL model (the folder a VL ``pretrain`` run wrote, or its
            ``vl_model.safetensors``), read with :func:`~thinkingearth.vl.model.load_vl_model`.
        teacher_sensor: The side of ``data.pair`` the teacher sees (a sensor it was aligned
            on); default: the second sensor of the pair.
        teacher_bands: Bands of that sensor fed to the teacher; default: every band of the
            batch (before band dropping).
        student_sensors: Sides of the pair the student learns; default: both, so the result
            takes the new sensor and keeps the teacher's (with all its bands).
        student_init: ``teacher``: the student starts as a copy of the teacher's image tower
            (encoder and projection; the ``encoder:`` section must stay unset); ``encoder``: the
            ``encoder:`` section's encoder (new, or ``encoder.init``) with a new projection.
        classes: Class names of the frozen prompt head, in the order of the batches' multi-hot
            ``labels``; default: the source's classes (the synthetic world's land cover,
            BigEarthNet's 19 classes).
        templates: Prompt templates of the head (default: the prompt ensemble).
        targets: ``labels`` (the authors' choice: the data set's multi-hot labels) or
            ``teacher`` (the teacher's softmax over the same head; for pairs without labels).
        bce_weight: ``λ`` of the BCE term (the authors' 0.05).
    """

    teacher: str | None = None
    teacher_sensor: str | None = None
    teacher_bands: tuple[str, ...] | None = None
    student_sensors: tuple[str, ...] | None = None
    student_init: Literal["teacher", "encoder"] = "teacher"
    classes: tuple[str, ...] | None = None
    templates: tuple[str, ...] | None = None
    targets: AlignTargets = "labels"
    bce_weight: float = DEFAULT_BCE_WEIGHT


def source_classes(source: str) -> tuple[str, ...] | None:
    """The class names of a pretraining source's multi-hot ``labels`` (``None``: no labels)."""
    if source == "synthetic":
        return _landcover_classes()
    if source == "bigearthnet":
        from thinkingearth.data.formats.bigearthnet import CLASSES_19

        return tuple(CLASSES_19)
    return None


def check_settings(settings: ModalityGapSettings, config: Any) -> ModalityGapSettings:
    """Check the ``vl:`` section against the run's configuration; returns it resolved.

    Resolves ``teacher_sensor``, ``student_sensors`` and ``classes`` to explicit values.

    The teacher's files are read when the module is built (:func:`load_vl_model` names what is
    missing), as ``data.root`` is read when the data is.

    Raises:
        UserInputError: No teacher; no ``data.pair``; a teacher or
            student sensor that is not in the pair; ``bce_weight`` below zero; ``targets:
            labels`` on a source without labels and no ``classes``; ``student_init: teacher``
            with an ``encoder.init`` or ``encoder.overrides``.
    """
    import dataclasses

    from thinkingearth.sensors import get_sensor

    if not settings.teacher:
        raise UserInputError(
            "recipe modality_gap needs vl.teacher: the VL model to align with (a VL pretrain "
            "run's folder or its vl_model.safetensors)"
        )
    pair = config.data.pair
    if pair is None or len(pair) != 2:
        raise UserInputError(
            "recipe modality_gap needs data.pair: the new sensor and the teacher's, e.g. "
            "[sentinel-1-grd, sentinel-2-l2a]"
        )
    names = [get_sensor(s).name for s in pair]
    teacher_sensor = get_sensor(settings.teacher_sensor or names[1]).name
    if teacher_sensor not in names:
        raise UserInputError(
            f"vl.teacher_sensor {teacher_sensor} is not in data.pair ({', '.join(names)})"
        )
    if settings.student_sensors is not None and not settings.student_sensors:
        raise UserInputError("vl.student_sensors is empty; expected sensors of data.pair")
    students = tuple(get_sensor(s).name for s in (settings.student_sensors or names))
    for name in students:
        if name not in names:
            raise UserInputError(
                f"vl.student_sensors: {name} is not in data.pair ({', '.join(names)})"
            )
    if settings.teacher_bands is not None:
        get_sensor(teacher_sensor).select(settings.teacher_bands)
    if not settings.bce_weight >= 0:
        raise UserInputError(f"vl.bce_weight must be >= 0, got {settings.bce_weight}")
    classes = settings.classes or source_classes(config.data.source)
    if classes is None:
        raise UserInputError(
            f"vl.classes: data.source {config.data.source} has no class names; list the "
            "classes of the prompt head (and use vl.targets: teacher if its samples have no labels)"
        )
    labelled = source_classes(config.data.source) is not None or config.data.source == "shards"
    if settings.targets == "labels" and not labelled:
        raise UserInputError(
            f"vl.targets labels: data.source {config.data.source} has no labels; use "
            "vl.targets: teacher (the teacher's predictions through the prompt head)"
        )
    if settings.student_init == "teacher" and (config.encoder.init or config.encoder.overrides):
        raise UserInputError(
            "vl.student_init teacher copies the teacher's image tower; drop encoder.init and "
            "encoder.overrides (or set vl.student_init: encoder to start from them)"
        )
    return dataclasses.replace(
        settings,
        teacher_sensor=teacher_sensor,
        student_sensors=students,
        classes=tuple(classes),
    )


def _frozen(module: nn.Module) -> nn.Module:
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


def _select_bands(
    image: Tensor, bands: Sequence[str], sensor: str, wanted: Sequence[str] | None
) -> tuple[Tensor, tuple[str, ...]]:
    """The channels of ``image`` named ``wanted`` (all when ``None``), and their names."""
    from thinkingearth.sensors import get_sensor

    if wanted is None:
        return image, tuple(bands)
    spec = get_sensor(sensor)
    names = [spec.band(b).name for b in bands]
    chosen = [spec.band(b).name for b in wanted]
    missing = [b for b in chosen if b not in names]
    if missing:
        raise UserInputError(
            f"vl.teacher_bands {missing} are not in the {sensor} batch (bands: {', '.join(names)})"
        )
    return image[:, [names.index(b) for b in chosen]], tuple(chosen)


def _run_bands(config: Any, sensor: str) -> list[str]:
    """The bands a run reads of ``sensor`` (its ``data.sensors`` entry, else every band)."""
    from thinkingearth.sensors import get_sensor

    spec = get_sensor(sensor)
    bands = config.source_for(spec.name).bands
    if bands is not None:
        return [spec.band(b).name for b in bands]
    return ["NO2"] if spec.name == "sentinel-5p" else list(spec.band_names)


class ModalityGapAlign(PretrainModule):
    """Stage (b) as a pretraining recipe: a student image tower learns the teacher's space.

    Each step takes co-registered samples of ``data.pair`` (one crop and flip for both, their own
    band subsets), gives the teacher its sensor's view (``vl.teacher_bands``, before band
    dropping) and the student every side in ``vl.student_sensors``, and minimises
    :func:`alignment_loss` per side (averaged over the sides): MSE to the teacher's projected
    features plus ``λ`` BCE of the student's logits through the teacher's frozen prompt head.
    The teacher, its text encoder, the class embeddings and the logit scale are frozen and not
    checkpointed (a resumed run rebuilds them from ``vl.teacher``); the student's encoder and
    projection are the module's parameters.

    Args:
        config: The run's configuration (``recipe: modality_gap``).
        normaliser: The per-sensor normalisation.
        settings: The checked ``vl:`` section (:func:`check_settings`).
        teacher: The teacher VL model (default: read from ``settings.teacher``).
        encoder: The student's encoder (default: per ``settings.student_init``).
    """

    def __init__(
        self,
        config: Any,
        normaliser: Any,
        settings: ModalityGapSettings,
        teacher: nn.Module | None = None,
        encoder: Any = None,
    ) -> None:
        """Load and freeze the teacher, build the student and the prompt head."""
        import copy

        from thinkingearth.vl.model import load_vl_model
        from thinkingearth.vl.prompts import DEFAULT_TEMPLATES, class_embeddings

        if settings.classes is None or settings.student_sensors is None:
            raise ValueError("ModalityGapAlign takes settings resolved by check_settings")
        if teacher is None:
            assert settings.teacher is not None  # check_settings
            teacher = load_vl_model(settings.teacher)
        aligned = getattr(teacher, "sensors", None) or {}
        if aligned and settings.teacher_sensor not in aligned:
            raise UserInputError(
                f"vl.teacher_sensor {settings.teacher_sensor}: the teacher was aligned with text "
                f"on {', '.join(aligned)} only; its features of other sensors are no target"
            )
        student_encoder = encoder
        if student_encoder is None and settings.student_init == "teacher":
            student_encoder = copy.deepcopy(teacher.encoder).train()
        super().__init__(config, normaliser, student_encoder)
        self.settings = settings
        if settings.student_init == "teacher":
            self.projection = copy.deepcopy(teacher.projection)
        else:
            self.projection = self._with_heads_seed(
                lambda: nn.Linear(self.encoder.embed_dim, int(teacher.embed_dim), bias=False)
            )
        for parameter in (*self.encoder.parameters(), *self.projection.parameters()):
            parameter.requires_grad_(True)  # the copies of a frozen teacher's tower learn
        object.__setattr__(self, "teacher", _frozen(teacher))  # not a submodule: never saved
        assert settings.classes is not None
        templates = settings.templates or DEFAULT_TEMPLATES
        with torch.no_grad():
            head = class_embeddings(teacher.text, list(settings.classes), templates).float()
        self.register_buffer("class_head", head.detach().clone(), persistent=False)
        self.register_buffer(
            "head_scale", teacher.logit_scale.detach().float().clone(), persistent=False
        )

    def on_fit_start(self) -> None:
        """Put the frozen teacher on the module's device."""
        self.teacher.to(self.device)

    def _features(self, view: View) -> Tensor:
        features = self.encoder(
            view.image, bands=list(view.bands), sensor=view.sensor, meta=view.meta
        )
        return self.projection(features)

    @torch.no_grad()
    def teacher_features(self, view: View) -> Tensor:
        """The teacher's projected features ``[B, D]`` of its sensor's view (no gradient)."""
        image, bands = _select_bands(
            view.full_image, view.full_bands, view.sensor, self.settings.teacher_bands
        )
        features = self.teacher.encoder(
            image, bands=list(bands), sensor=view.sensor, meta=view.meta
        )
        return self.teacher.projection(features).float()

    def targets(self, view: View, teacher: Tensor) -> Tensor:
        """The BCE targets of a batch: its multi-hot labels, or the teacher's softmax."""
        if self.settings.targets == "teacher":
            return soft_targets(prompt_logits(teacher, self.class_head, self.head_scale))
        if view.labels is None:
            raise UserInputError(
                "vl.targets labels: the batches carry no multi-hot 'labels'; use vl.targets: "
                "teacher"
            )
        labels = view.labels.float().to(teacher.device)
        if labels.shape[-1] != self.class_head.shape[0]:
            raise UserInputError(
                f"the batches' labels have {labels.shape[-1]} classes, vl.classes "
                f"{self.class_head.shape[0]}; list the classes of the labels, in their order"
            )
        return labels

    def compute_losses(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """The alignment loss of every student side against the teacher's side."""
        generator = self.step_generator()
        params = self.augmenter.geometry(batch["a"], generator)
        views = [self.augmenter.view(batch[key], generator, params) for key in ("a", "b")]
        by_sensor = {view.sensor: view for view in views}
        teacher_view = by_sensor[self.settings.teacher_sensor]  # type: ignore[index]
        target_features = self.teacher_features(teacher_view)
        targets = self.targets(teacher_view, target_features)
        total: Tensor | None = None
        parts: dict[str, Tensor] = {}
        students = self.settings.student_sensors or ()
        for sensor in students:
            features = self._features(by_sensor[sensor])
            logits = prompt_logits(features, self.class_head, self.head_scale)
            loss, pieces = alignment_loss(
                features, target_features, logits, targets, self.settings.bce_weight
            )
            total = loss if total is None else total + loss
            parts[f"align/{sensor}"] = loss.detach()
            parts[f"mse/{sensor}"] = pieces["mse"]
            parts[f"bce/{sensor}"] = pieces["bce"]
        assert total is not None
        return total / len(students), parts

    def vl_model(self) -> Any:
        """The aligned model: the student's image tower with the teacher's text side."""
        from thinkingearth.vl.model import VLModel

        teacher = self.teacher
        sensors = {s: _run_bands(self.config, s) for s in self.settings.student_sensors or ()}
        model = VLModel(
            self.encoder,
            teacher.text,
            loss=teacher.loss,
            normaliser=self.normaliser,
            sensors=sensors,
            projection=self.projection,
        )
        with torch.no_grad():
            model.logit_scale.copy_(teacher.logit_scale.detach())
            model.logit_bias.copy_(teacher.logit_bias.detach())
        return model.to(self.device).eval()


def modality_gap_settings(config: Any) -> ModalityGapSettings:
    """The run's :class:`ModalityGapSettings` (``config.vl``), checked and resolved.

    Raises:
        UserInputError: An unknown key (``vl.teachr``), a wrong type or value
            (:func:`check_settings`).
    """
    from thinkingearth.configfile import build

    settings: ModalityGapSettings = build(ModalityGapSettings, config.vl or {}, "vl")
    return check_settings(settings, config)


def _validate(config: Any) -> dict[str, Any]:
    """The ``vl`` section with every default filled in (stored in the run's config.yaml)."""
    import dataclasses

    return dataclasses.asdict(modality_gap_settings(config))


def _build_module(config: Any, normaliser: Any, encoder: Any = None) -> ModalityGapAlign:
    """The recipe's LightningModule; ``encoder`` (a caller's) replaces the student's encoder."""
    return ModalityGapAlign(config, normaliser, modality_gap_settings(config), encoder=encoder)


def _export(module: ModalityGapAlign, out: Path) -> dict[str, Path]:
    from thinkingearth.vl.model import VL_MODEL_STEM, save_vl_model

    return {"vl_model": save_vl_model(module.vl_model(), out / VL_MODEL_STEM)}


def modality_gap() -> Any:
    """The ``modality_gap`` recipe (entry point of group ``thinkingearth.recipes``)."""
    from thinkingearth.pretrain.plugins import RecipePlugin
    from thinkingearth.vl.model import VL_MODEL_STEM

    return RecipePlugin(
        name="modality_gap",
        build_module=_build_module,
        validate=_validate,
        section="vl",
        export=_export,
        outputs=(f"{VL_MODEL_STEM}.safetensors", f"{VL_MODEL_STEM}.json"),
        paired=True,
        summary=(
            "Mind the Modality Gap alignment: a new sensor's image tower distilled into a "
            "frozen VL teacher's space from co-registered pairs, writes a VL model"
        ),
    )
