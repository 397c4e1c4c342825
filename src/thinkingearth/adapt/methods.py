"""Domain-adaptation methods around a trained or training :class:`TaskModule`.

Each method is an :class:`~thinkingearth.tasks.variants.Adaptation` found by name through the
``thinkingearth.adaptation`` entry points (:func:`thinkingearth.tasks.variants.get_adaptation`).

During training (:meth:`Method.wrap` returns an :class:`AdaptedModule` to fit on
``{"source": batch, "target": batch}`` pairs, :mod:`thinkingearth.adapt.data`), the loss is the
task's loss on the labelled source batch plus ``weight`` × an adaptation loss on the
unlabelled target batch:

* ``dann`` (Ganin et al. 2016): a :class:`~thinkingearth.adapt.losses.DomainDiscriminator`
  learns to tell source from target features, which reach it through gradient reversal with
  the coefficient ``weight · (2 / (1 + e^{−10 p}) − 1)``, ``p`` the share of training done;
* ``deep_coral`` (Sun & Saenko 2016): the covariances of source and target features;
* ``mmd`` (Long et al. 2015): multi-kernel Gaussian MMD² between source and target features;
* ``self_training``: the current model's confident target predictions (probability ≥
  ``threshold``; per pixel for segmentation and change, per label for multi-label) are its
  labels, the rest ignored (Lee 2013). The labels come from the same forward pass, detached.
  Regression has no class probabilities and is refused.

The **features aligned** are the last ones before the classifier that training can move:

* scene classification: the head's input, the pooled backbone features ``[B, D]`` (protocol
  ``finetune``). With a frozen encoder the linear head has nothing trainable before its
  classifier, so alignment is refused (use ``finetune``);
* dense tasks with UPerNet (``frozen-upernet`` and ``finetune``): the decoder's fused map (the
  classifier's input) averaged over the image, ``[B, channels]``; with a frozen encoder the
  decoder is what adapts;
* dense tasks with the linear head: the head's input, the deepest level averaged over the image
  (``finetune`` only; with a frozen encoder it is refused as for classification);
* a complete network without a separate head (U-Net, Siamese U-Nets) is refused.

Target batches never update BatchNorm running statistics in training (they stay the source's;
moving them is AdaBN's job): the target forward runs with momentum 0.

After training (:meth:`Method.after_training`, on a loader of unlabelled target batches):

* ``adabn`` (Li et al. 2016): every BatchNorm layer's running mean and variance are
  re-estimated on target batches (the cumulative average over ``steps`` batches, 0 = all),
  nothing else changes. Our task heads carry BatchNorm (the linear probe's affine-free
  BatchNorm, UPerNet's and its ViT neck's), as do the ResNet, WRN and U-Net baselines; the
  any-sensor ViT encoder itself has LayerNorm only, so with it AdaBN adapts the head's
  statistics. A network with no BatchNorm at all is refused in one line;
* ``tent`` (Wang et al. 2021): only the affine parameters of normalisation layers (BatchNorm,
  LayerNorm, GroupNorm) are trained, by Adam at ``lr`` for ``steps`` steps on the entropy of the
  predictions on target batches, BatchNorm normalising with each batch's statistics. Layers
  inside a frozen encoder (which runs without gradients) are not trained. Afterwards the
  BatchNorm running statistics are re-estimated on the same target batches with the adapted
  parameters, so the saved model (in eval mode) normalises as it did while adapting.
  Regression is refused.

Domain generalisation (``band_dropout``, ``spectral_jitter``, ``metadata_dropout``;
:mod:`thinkingearth.adapt.generalise`) augments every source batch in :class:`AdaptedModule`,
for every method including ``none``.

References:
    Ganin et al. "Domain-Adversarial Training of Neural Networks." JMLR 2016.
    Sun, Saenko. "Deep CORAL: Correlation Alignment for Deep Domain Adaptation." ECCV-W 2016.
    Long, Cao, Wang, Jordan. "Learning Transferable Features with Deep Adaptation Networks."
    ICML 2015.
    Li, Wang, Shi, Liu, Hou. "Revisiting Batch Normalization For Practical Domain Adaptation."
    ICLR-W 2017 (arXiv 2016).
    Wang, Shelhamer, Liu, Olshausen, Darrell. "Tent: Fully Test-Time Adaptation by Entropy
    Minimization." ICLR 2021.
    Lee. "Pseudo-Label." ICML-W 2013.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader

from thinkingearth.adapt.generalise import BandMode, augment_batch
from thinkingearth.adapt.losses import (
    PSEUDO_IGNORE,
    DomainDiscriminator,
    coral_loss,
    entropy,
    grad_reverse,
    grl_coefficient,
    mmd_loss,
    pseudo_labels,
)
from thinkingearth.errors import UserInputError
from thinkingearth.models.baselines import DenseModel
from thinkingearth.models.heads import DenseHead, LinearHead, UPerNet
from thinkingearth.tasks.checkpoint import module_kind
from thinkingearth.tasks.protocols import (
    EncoderBackbone,
    FeatureCache,
    TaskModule,
    warmup_cosine_optimizer,
)
from thinkingearth.tasks.variants import AdaptSection

__all__ = [
    "AdaptedModule",
    "FeatureSite",
    "Method",
    "adabn",
    "adapt_batchnorm",
    "dann",
    "deep_coral",
    "feature_site",
    "mmd",
    "none",
    "self_training",
    "task_kind",
    "tent",
    "tent_adapt",
]

Batch = Mapping[str, Any]
_ALIGNING = ("dann", "deep_coral", "mmd")
_NORMS = (_BatchNorm, nn.LayerNorm, nn.GroupNorm)


def task_kind(module: TaskModule) -> str:
    """``classification``, ``multilabel``, ``segmentation``, ``change`` or ``regression``
    (:func:`thinkingearth.tasks.checkpoint.module_kind`; a TypeError for anything else)."""
    kind = module_kind(module)
    if kind is None:
        raise TypeError(f"cannot tell the task kind of {type(module).__name__}")
    return kind


# ------------------------------------------------------------------------------ features


@dataclass(frozen=True)
class FeatureSite:
    """Where the aligned features are read: a module, its input (pre-hook) or output, pooled.

    Attributes:
        module: The module hooked.
        input: Read the module's first input (else its output).
        dim: Width of the pooled features.
        description: What the features are, for reports.
    """

    module: nn.Module
    input: bool
    dim: int
    description: str

    def pooled(self, value: Any) -> Tensor:
        """The hooked value as ``[B, D]`` (maps averaged over space; the deepest of a list)."""
        if isinstance(value, list | tuple):
            value = value[-1]
        if not isinstance(value, Tensor):
            raise TypeError(f"expected features as a tensor; got {type(value).__name__}")
        return value.flatten(2).mean(dim=2) if value.ndim > 2 else value


def feature_site(module: TaskModule, method: str) -> FeatureSite:
    """The features ``method`` aligns in ``module`` (see the module docstring).

    Raises:
        UserInputError: One line when there is no such site (a complete network without a
            head, or a frozen encoder under a linear head).
    """
    if isinstance(module.backbone, DenseModel):
        raise UserInputError(
            f"{method} aligns the features before a task head; {type(module.backbone).__name__} "
            "is a complete network without a separate head (use an encoder or a ResNet backbone)"
        )
    head = getattr(module, "head", None)
    if isinstance(head, LinearHead):
        if module.frozen:
            raise UserInputError(
                f"{method} cannot move a frozen encoder's features under a linear head "
                f"(protocol {module.protocol}); use protocol finetune"
            )
        return FeatureSite(head, True, head.in_features, "pooled backbone features (head input)")
    if isinstance(head, DenseHead):
        if isinstance(head.decoder, UPerNet):
            classifier = head.decoder.classifier
            return FeatureSite(
                head.decoder.fuse,
                False,
                int(classifier.in_channels),
                "UPerNet fused features (classifier input), averaged over the image",
            )
        if module.frozen:
            raise UserInputError(
                f"{method} cannot move a frozen encoder's features under a linear dense head "
                f"(protocol {module.protocol}); use protocol frozen-upernet or finetune"
            )
        return FeatureSite(
            head,
            True,
            int(head.in_channels[-1]),
            "deepest backbone level (head input), averaged over the image",
        )
    raise UserInputError(
        f"{method} needs a task module with one linear or UPerNet head; "
        f"{type(module).__name__} has none"
    )


@contextmanager
def _capture(site: FeatureSite | None) -> Iterator[list[Tensor]]:
    """Collect the site's pooled features of every forward while the context is open."""
    found: list[Tensor] = []
    if site is None:
        yield found
        return
    if site.input:
        handle = site.module.register_forward_pre_hook(
            lambda _m, args: found.append(site.pooled(args[0]))
        )
    else:
        handle = site.module.register_forward_hook(
            lambda _m, _args, out: found.append(site.pooled(out))
        )
    try:
        yield found
    finally:
        handle.remove()


def _batchnorms(module: nn.Module) -> list[_BatchNorm]:
    return [m for m in module.modules() if isinstance(m, _BatchNorm)]


@contextmanager
def _keep_running_stats(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers normalise with the batch (in train mode) but do not update their
    running statistics (momentum 0; ``num_batches_tracked`` restored)."""
    layers = _batchnorms(module)
    saved = [
        (m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
        for m in layers
    ]
    for m in layers:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(layers, saved, strict=True):
            m.momentum = momentum
            if tracked is not None and m.num_batches_tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def _caches(module: nn.Module) -> list[FeatureCache]:
    return [m for m in module.modules() if isinstance(m, FeatureCache)]


@contextmanager
def _no_cache(module: nn.Module) -> Iterator[None]:
    """Frozen-feature caches off while statistics change, and emptied afterwards (the features
    they hold were computed with the old statistics)."""
    caches = _caches(module)
    saved = [c.enabled for c in caches]
    for c in caches:
        c.enabled = False
    try:
        yield
    finally:
        for c, enabled in zip(caches, saved, strict=True):
            c.enabled = enabled
            c.clear()


def _band_mode(module: TaskModule) -> BandMode:
    backbone = module.backbone
    if isinstance(backbone, FeatureCache):
        backbone = backbone.backbone
    return "drop" if isinstance(backbone, EncoderBackbone) else "zero"


def _split(batch: Batch) -> tuple[Batch, Batch | None]:
    if "source" in batch and "image" not in batch:
        return batch["source"], batch.get("target")
    return batch, None


def _batch_size(batch: Batch) -> int:
    return int(batch["image"].shape[0])


# ------------------------------------------------------------------------------ training


class AdaptedModule(L.LightningModule):
    """A task module trained with an adaptation loss and/or source augmentation.

    ``training_step`` takes ``{"source": batch, "target": batch | None}`` (or a plain source
    batch): loss = ``task.step(source)`` + the method's loss on the pair (see the module
    docstring); logs ``train/loss``, ``train/task_loss``, ``train/adapt_loss``. Validation and
    test delegate to :attr:`task`, which keeps ``val_results`` / ``test_results``. The optimiser
    is the task's (AdamW, warm-up then cosine) over the task's trainable parameters and the
    adapter's.

    Save :attr:`task` (its ``state_dict`` has no adapter keys); the adapter (DANN's
    discriminator) is only needed in training.

    Args:
        task: The task module.
        section: The ``adapt:`` section.
        method: The method (``none``, ``dann``, ``deep_coral``, ``mmd``, ``self_training``).
    """

    def __init__(self, task: TaskModule, section: AdaptSection, method: str) -> None:
        """Check the method fits the task and build the adapter."""
        super().__init__()
        if method not in ("none", *_ALIGNING, "self_training"):
            raise ValueError(f"{method!r} does not adapt during training")
        self.task = task
        self.section = section
        self.method = method
        self.kind = task_kind(task)
        self.band_mode: BandMode = _band_mode(task)
        self.site: FeatureSite | None = None
        self.adapter: nn.Module | None = None
        self.total_steps: int | None = None
        if method in _ALIGNING:
            self.site = feature_site(task, method)
        if method == "dann":
            assert self.site is not None
            self.adapter = DomainDiscriminator(self.site.dim)
        if method == "self_training" and self.kind == "regression":
            raise UserInputError(
                "self_training needs class probabilities; regression has none "
                "(use dann, deep_coral or mmd)"
            )

    def forward(self, batch: Batch) -> Tensor:
        """The task's forward."""
        return self.task(batch)

    # ---------------------------------------------------------------- training

    def _generator(self) -> torch.Generator:
        """Augmentation draws: seeded by the process seed and the step (resumable)."""
        seed = (torch.initial_seed() * 1_000_003 + int(self.global_step)) % (2**63)
        return torch.Generator().manual_seed(seed)

    def progress(self) -> float:
        """Share of the planned optimisation steps done (1 when no plan is known)."""
        if not self.total_steps:
            return 1.0
        return min(1.0, int(self.global_step) / self.total_steps)

    def adaptation_loss(
        self, source_features: Tensor | None, target: Batch, target_out: Tensor, features: Any
    ) -> Tensor:
        """The method's loss (before ``weight``, except DANN whose weight is in the reversal)."""
        if self.method in _ALIGNING:
            assert source_features is not None
            if self.method == "deep_coral":
                return coral_loss(source_features, features)
            if self.method == "mmd":
                return mmd_loss(source_features, features)
            assert self.adapter is not None
            both = torch.cat([source_features, features])
            reversed_ = grad_reverse(both, grl_coefficient(self.progress(), self.section.weight))
            domain = torch.cat([torch.zeros(len(source_features)), torch.ones(len(features))]).to(
                both.device
            )
            return F.binary_cross_entropy_with_logits(self.adapter(reversed_), domain)
        # self-training
        labels = pseudo_labels(target_out, self.section.threshold, self.kind)  # type: ignore[arg-type]
        keep = labels != PSEUDO_IGNORE
        if not bool(keep.any()):
            return target_out.sum() * 0.0
        if self.kind == "multilabel":
            return F.binary_cross_entropy_with_logits(target_out[keep], labels[keep].float())
        return F.cross_entropy(target_out, labels, ignore_index=PSEUDO_IGNORE)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Task loss on the source batch + weight × the adaptation loss on the pair."""
        source, target = _split(batch)
        if self.section.augments:
            source = augment_batch(source, self.section, self._generator(), mode=self.band_mode)
        adapt_loss: Tensor | None = None
        with _capture(self.site) as found:
            task_loss = self.task.step(source)[0]
            source_features = self._one(found, "source") if self.site is not None else None
            if target is not None and self.method != "none":
                found.clear()
                with _keep_running_stats(self.task):
                    target_out = self.task(target)
                features = self._one(found, "target") if self.site is not None else None
                adapt_loss = self.adaptation_loss(source_features, target, target_out, features)
        if adapt_loss is None:
            adapt_loss = task_loss.new_zeros(())
        weight = 1.0 if self.method == "dann" else self.section.weight
        loss = task_loss + weight * adapt_loss
        size = _batch_size(source)
        self.log("train/loss", loss, batch_size=size)
        self.log("train/task_loss", task_loss, batch_size=size)
        self.log("train/adapt_loss", adapt_loss, batch_size=size)
        return loss

    def _one(self, found: list[Tensor], side: str) -> Tensor:
        if len(found) != 1:
            raise RuntimeError(
                f"{self.method}: the {side} forward reached the aligned features "
                f"{len(found)} times; expected once ({type(self.task).__name__})"
            )
        return found[0]

    # ---------------------------------------------------------------- evaluation

    def _delegate(self, name: str, *args: Any) -> Any:
        # The task logs through the trainer of this module (Lightning hands it to child
        # LightningModules); it needs the hook's name to log from it.
        self.task._current_fx_name = self._current_fx_name
        return getattr(self.task, name)(*args)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """The task's validation step (on the source side of a pair)."""
        self._delegate("validation_step", _split(batch)[0], batch_idx)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        """The task's test step."""
        self._delegate("test_step", _split(batch)[0], batch_idx)

    def on_validation_epoch_end(self) -> None:
        """The task's metrics (``task.val_results``)."""
        self._delegate("on_validation_epoch_end")

    def on_test_epoch_end(self) -> None:
        """The task's metrics (``task.test_results``)."""
        self._delegate("on_test_epoch_end")

    def configure_optimizers(self) -> Any:
        """The task's AdamW and schedule over its trainable parameters and the adapter's."""
        params = list(self.task.trainable_parameters())
        if self.adapter is not None:
            params += [p for p in self.adapter.parameters() if p.requires_grad]
        self.total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        return warmup_cosine_optimizer(
            params,
            lr=self.task.lr,
            weight_decay=self.task.weight_decay,
            warmup=self.task.warmup,
            total_steps=self.total_steps,
        )


# ------------------------------------------------------------------------------ after training


def _device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def _to(batch: Batch, device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}


def _target_batches(target: DataLoader, device: torch.device) -> Iterator[dict[str, Any]]:
    for batch in target:
        side = batch["target"] if "target" in batch and "image" not in batch else batch
        yield _to(side, device)


def _check_adabn(module: TaskModule) -> list[_BatchNorm]:
    layers = _batchnorms(module)
    if not layers:
        raise UserInputError(
            f"adabn re-estimates BatchNorm statistics; {type(module).__name__} on "
            f"{type(module.backbone).__name__} has no BatchNorm layer"
        )
    return layers


def adapt_batchnorm(module: TaskModule, target: DataLoader, batches: int = 0) -> int:
    """AdaBN: every BatchNorm's running statistics re-estimated on target batches.

    The statistics are reset, then averaged cumulatively (momentum ``None``) over the first
    ``batches`` target batches (0: all) with the network in eval mode except BatchNorm; the
    parameters do not change.

    Returns:
        The number of batches used.

    Raises:
        UserInputError: If the module has no BatchNorm or the loader gives no batch.
    """
    layers = _check_adabn(module)
    was_training = module.training
    saved = [m.momentum for m in layers]
    device = _device(module)
    used = 0
    module.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        with torch.no_grad(), _no_cache(module):
            for batch in _target_batches(target, device):
                if batches and used >= batches:
                    break
                module(batch)
                used += 1
    finally:
        for m, momentum in zip(layers, saved, strict=True):
            m.momentum = momentum
        module.train(was_training)
    if used == 0:
        raise UserInputError("adabn needs unlabelled target batches; the loader gave none")
    return used


def _norm_parameters(module: TaskModule) -> list[nn.Parameter]:
    """Affine parameters of normalisation layers that gradients can reach."""
    frozen = set(module.backbone.modules()) if module.frozen else set()
    found: list[nn.Parameter] = []
    for m in module.modules():
        if isinstance(m, _NORMS) and m not in frozen:
            found += [p for p in (m.weight, m.bias) if isinstance(p, nn.Parameter)]
    return found


def _check_tent(module: TaskModule) -> tuple[str, list[nn.Parameter]]:
    kind = task_kind(module)
    if kind == "regression":
        raise UserInputError(
            "tent minimises the entropy of class probabilities; regression has none"
        )
    params = _norm_parameters(module)
    if not params:
        raise UserInputError(
            "tent trains the affine parameters of normalisation layers; this model has none "
            f"outside its frozen encoder (protocol {module.protocol}): use frozen-upernet or "
            "finetune"
        )
    return kind, params


def tent_adapt(module: TaskModule, section: AdaptSection, target: DataLoader) -> TaskModule:
    """TENT: the normalisation layers' affine parameters trained on prediction entropy.

    See the module docstring. The module is changed in place and returned.

    Raises:
        UserInputError: For regression, a module without trainable normalisation parameters,
            or a loader without batches.
    """
    kind, params = _check_tent(module)
    device = _device(module)
    flags = {id(p): p.requires_grad for p in module.parameters()}
    for p in module.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=section.lr)
    was_training = module.training
    layers = _batchnorms(module)
    module.eval()
    for m in layers:
        m.train()
    used = 0
    try:
        with _no_cache(module), _keep_running_stats(module):
            batches = itertools.cycle(
                list(itertools.islice(_target_batches(target, device), section.steps))
            )
            for _ in range(section.steps):
                batch = next(batches, None)
                if batch is None:
                    break
                out = module(batch)
                probabilities = out.sigmoid() if kind == "multilabel" else out.softmax(dim=1)
                loss = entropy(probabilities, multilabel=kind == "multilabel").mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                used += 1
    finally:
        for p in module.parameters():
            p.requires_grad_(flags[id(p)])
        module.train(was_training)
    if used == 0:
        raise UserInputError("tent needs unlabelled target batches; the loader gave none")
    if layers:
        adapt_batchnorm(module, target, batches=min(section.steps, used))
    return module


# ------------------------------------------------------------------------------ methods


@dataclass(frozen=True)
class Method:
    """An :class:`~thinkingearth.tasks.variants.Adaptation`: one method by name.

    Attributes:
        name: The method.
        during_training: True for dann, deep_coral, mmd, self_training.
    """

    name: str
    during_training: bool

    def wrap(self, module: TaskModule, section: AdaptSection) -> AdaptedModule:
        """The module to fit (for after-training methods and ``none``: augmentation only)."""
        method = self.name if self.during_training else "none"
        # after-training methods that cannot act on this module are refused before training
        if self.name == "tent":
            _check_tent(module)
        if self.name == "adabn":
            _check_adabn(module)
        return AdaptedModule(module, section, method)

    def after_training(
        self, module: TaskModule, section: AdaptSection, target: DataLoader
    ) -> TaskModule:
        """AdaBN or TENT on the target batches; the module unchanged for the others."""
        if self.name == "adabn":
            adapt_batchnorm(module, target, section.steps)
        elif self.name == "tent":
            tent_adapt(module, section, target)
        return module


def _factory(name: str, during: bool) -> Callable[[], Method]:
    def make() -> Method:
        return Method(name, during)

    make.__name__ = name
    make.__doc__ = f"The {name} adaptation (entry point of thinkingearth.adaptation)."
    return make


none = _factory("none", False)
dann = _factory("dann", True)
deep_coral = _factory("deep_coral", True)
mmd = _factory("mmd", True)
adabn = _factory("adabn", False)
self_training = _factory("self_training", True)
tent = _factory("tent", False)
