"""LightningModules of the pretraining recipes.

All recipes share :class:`PretrainModule`: the encoder, one normalisation and augmentation path
(:class:`~thinkingearth.pretrain.transforms.Augmenter`), randomness seeded by ``(seed, step,
rank)`` (so a resumed run draws exactly the crops, band subsets and masks the uninterrupted run
would have drawn), AdamW with warm-up and cosine decay, and per-sensor loss logging. The encoder
is new, or continues from a checkpoint or published weights name (``encoder.init``, see
:func:`build_encoder`), for every recipe.

* :class:`MAEPretrain`: masked autoencoding (He et al. 2022, "Masked Autoencoders Are Scalable
  Vision Learners") with a dynamic decoder whose output layer is generated per band from the
  band's description (wavelength, bandwidth, SAR polarisation, or variable), so it reconstructs
  whatever bands were input, from any sensor. Each token's target is the patch of the image
  padded as the encoder's patch embedding pads it (one pixel for imported Copernicus-FM and
  DOFA), so target and prediction cover the same pixels. With a teacher it adds cosine feature
  distillation of the masked view's pooled features to the teacher's features of the full view,
  as in Copernicus-FM (Wang et al. 2025, "Towards a Unified Copernicus Foundation Model for
  Earth Vision").
* :class:`ContrastivePretrain`: two augmented views; SoftCon (Wang et al. 2024, "Multi-label
  Guided Soft Contrastive Learning for Efficient Earth Observation Pretraining"), SupCon (Khosla
  et al. 2020) or SimCLR (Chen et al. 2020) targets (:mod:`thinkingearth.pretrain.losses`).
* :class:`CrossSensorPretrain`: the two views are co-registered samples of two sensors of one
  place (e.g. Sentinel-1 and Sentinel-2).
* :class:`DistillPretrain`: feature distillation from a frozen teacher alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from thinkingearth.errors import UserInputError
from thinkingearth.models import Encoder, create_encoder, load
from thinkingearth.models.conventions import hypernet_input
from thinkingearth.models.encoder import SAR_IDENTITIES, sincos_2d
from thinkingearth.models.hypernet import fourier_features
from thinkingearth.pretrain.config import EncoderSpec, PretrainConfig
from thinkingearth.pretrain.losses import (
    contrastive_loss,
    cosine_distillation_loss,
    masked_reconstruction_loss,
    mean_per_group,
)
from thinkingearth.pretrain.teacher import Teacher
from thinkingearth.pretrain.transforms import Augmenter, Normaliser, View
from thinkingearth.sensors import SENSORS, get_sensor

__all__ = [
    "CHECKPOINT_FORMAT",
    "BandCoder",
    "ContrastivePretrain",
    "CrossSensorPretrain",
    "DistillPretrain",
    "DynamicPixelHead",
    "MAEDecoder",
    "MAEPretrain",
    "PretrainModule",
    "WarmupCosine",
    "build_encoder",
    "build_module",
]

#: Marker stored in every pretraining checkpoint.
CHECKPOINT_FORMAT = "thinkingearth.pretrain"

#: Registry variables (non-spectral bands), in registry order: the decoder's variable one-hot.
_VARIABLES: tuple[str, ...] = tuple(
    dict.fromkeys(b.variable for s in SENSORS.values() for b in s.bands if b.variable)
)


def build_encoder(spec: EncoderSpec, seed: int) -> Encoder:
    """The encoder of a run: new (initialised from ``seed`` only), or loaded from ``spec.init``.

    ``spec.init`` is anything :func:`thinkingearth.models.load` reads: a checkpoint file, or a
    published weights name, found in the weights folder or the Hugging Face cache, else
    downloaded (never with ``HF_HUB_OFFLINE=1``) and checked against its SHA-256 now, when the
    run starts. The checkpoint's architecture is the encoder's; the configuration checked what
    it could without the tensors (:meth:`EncoderSpec.check`), the rest is checked here.

    Raises:
        UserInputError: The registry's one-line errors (weights not cached and not
            downloadable, a wrong checksum), an unreadable checkpoint, or ``encoder.name`` /
            ``encoder.overrides`` that contradict the checkpoint.
    """
    if spec.init is None:
        assert spec.name is not None  # EncoderSpec names the default architecture
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = create_encoder(spec.name, **spec.overrides)
        return encoder.train()
    spec.check()  # overrides and what the registry or our JSON say, before reading tensors
    encoder = load(spec.init)  # every tensor from the checkpoint: no random draws
    spec.check_architecture(encoder.config.name)
    return encoder.train()


def _seeded_generator(*parts: int) -> torch.Generator:
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0]) & 0x7FFF_FFFF_FFFF_FFFF)


class WarmupCosine:
    """Learning-rate factor: linear warm-up, then cosine decay to ``min_ratio`` (or constant).

    The cosine reaches ``min_ratio`` at ``total``, the run's ``max_steps``. A resumed run whose
    ``max_steps`` differs calls :meth:`stretch_to` with its new end, and the schedule from the
    resume step on depends on where the run stood:

    * Resumed before its end (the factor above ``min_ratio``): the factor decays along a cosine
      from the value the schedule had at the resume step to ``min_ratio`` at the new end. The
      rate is continuous at the resume (no jump for the restored optimiser moments), never
      rises, and reaches its floor at the new end only.
    * Resumed at or after its end (the factor at ``min_ratio``): the run is re-warmed, as in
      continual pretraining (Gupta et al. 2023, "Continual Pre-Training of Large Language
      Models: How to (re)warm your model?"). The factor rises linearly from ``min_ratio`` over
      ``warmup`` steps (at least 1; fewer if the new end is that close, see
      :meth:`rewarm_steps`) to the value that the schedule planned for the new end
      (``WarmupCosine(warmup, end, min_ratio)``) has at the resume step plus ``warmup``, then
      follows that planned schedule to ``min_ratio`` at the new end. It too is continuous at
      the resume and reaches the floor at the new end only; a continuous stretch that never
      rose would leave the run at its floor for all the new steps.

    A resume with the same ``max_steps`` changes nothing, so it repeats the uninterrupted run
    exactly; a constant schedule (``cosine=False``) is never changed.

    A callable object (not a closure) so the scheduler state pickles and checkpoints cleanly:
    ``LambdaLR`` saves its ``__dict__`` (plain numbers and a list of tuples, loadable with
    ``weights_only=True``) and restores it over the one a resumed run builds.

    Args:
        warmup: Warm-up steps.
        total: Step at which the cosine reaches ``min_ratio`` (the run's ``max_steps``).
        min_ratio: Final factor.
        cosine: Decay after the warm-up; ``False`` keeps the factor at 1.
    """

    def __init__(self, warmup: int, total: int, min_ratio: float, cosine: bool = True) -> None:
        """Store the schedule."""
        self.warmup = int(warmup)
        self.total = int(total)
        self.min_ratio = float(min_ratio)
        self.cosine = bool(cosine)
        #: ``(step, factor at step, end, rewarm)`` of each stretch, in order. ``rewarm == 0``:
        #: from ``step`` on, a cosine from that factor down to ``min_ratio`` at ``end``.
        #: ``rewarm > 0``: a linear ramp from that factor (the floor) over ``rewarm`` steps to
        #: the schedule planned for ``end``, then that schedule. (Checkpoints written before
        #: re-warming existed hold 3-tuples, read as ``rewarm == 0``.)
        self.stretches: list[tuple[int, float, int, int]] = []

    @property
    def end(self) -> int:
        """The step at which the factor reaches ``min_ratio`` (after any stretch)."""
        return int(self.stretches[-1][2]) if self.stretches else self.total

    @staticmethod
    def rewarm_steps(warmup: int, step: int, end: int) -> int:
        """Length of the re-warm of a run resumed at ``step`` (at its floor) to end at ``end``.

        ``warmup`` steps, at least 1, and short enough to peak before ``end`` (where the planned
        schedule is back at its floor); 0 when only ``step`` itself is left to train.
        """
        return max(0, min(max(1, int(warmup)), int(end) - int(step) - 1))

    def _decay(self, start_factor: float, progress: float) -> float:
        progress = min(1.0, max(0.0, progress))
        span = start_factor - self.min_ratio
        return self.min_ratio + span * 0.5 * (1 + math.cos(math.pi * progress))

    def _planned(self, step: int, total: int) -> float:
        """The factor at ``step`` of the schedule planned for ``total`` steps from the start."""
        if self.warmup > 0 and step < self.warmup:
            return (step + 1) / self.warmup
        if not self.cosine:
            return 1.0
        span = max(1, total - self.warmup)
        return self._decay(1.0, (step - self.warmup) / span)

    def __call__(self, step: int) -> float:
        """Factor of the peak learning rate at ``step``."""
        for start, factor, end, *rest in reversed(self.stretches):
            if step < start:
                continue
            start, factor, end = int(start), float(factor), int(end)
            rewarm = int(rest[0]) if rest else 0
            if rewarm <= 0:
                return self._decay(factor, (step - start) / max(1, end - start))
            if step >= start + rewarm:
                return self._planned(step, end)
            peak = self._planned(start + rewarm, end)
            return factor + (peak - factor) * (step - start) / rewarm
        return self._planned(step, self.total)

    def stretch_to(self, end: int, step: int) -> None:
        """Make the schedule end at ``end``, continuing from ``step`` (a resumed run's first).

        Within the warm-up the cosine has not begun, so the schedule simply becomes the one
        planned for ``end``. After it and before the current end, a stretch continues the decay
        from the factor at ``step``; at or after the current end (the factor at its floor), a
        re-warm of :meth:`rewarm_steps` steps leads into the schedule planned for ``end``.
        Nothing changes when ``end`` is already the end, or for a constant schedule.

        Raises:
            ValueError: ``end`` is not after ``step``.
        """
        end, step = int(end), int(step)
        if end == self.end or not self.cosine:
            return
        if end <= step:
            raise ValueError(f"the schedule's new end {end} must come after the resume step {step}")
        if step < self.warmup and not self.stretches:
            self.total = end
            return
        rewarm = self.rewarm_steps(self.warmup, step, end) if step >= self.end else 0
        self.stretches = [*self.stretches, (step, float(self(step)), end, rewarm)]


# ----------------------------------------------------------------------------------------------
# Heads
# ----------------------------------------------------------------------------------------------


class BandCoder(nn.Module):
    """A fixed code of each band: what it measures, from the sensor registry.

    The code concatenates Fourier features of ``log10`` wavelength and ``log10`` bandwidth (nm;
    the registry's physical values, SAR with Copernicus-FM's 1e9 nm "radio" bandwidth), a one-hot
    SAR identity (polarisation / component) and a one-hot registry variable (S5P gases, DEM).
    """

    FOURIER = 32

    def __init__(self) -> None:
        """No parameters: the code is a fixed function of the band."""
        super().__init__()
        self.dim = 2 * self.FOURIER + len(SAR_IDENTITIES) + len(_VARIABLES)
        self._cache: dict[tuple[str, tuple[str, ...]], Tensor] = {}

    def forward(self, sensor: str, bands: Sequence[str]) -> Tensor:
        """Codes ``[C, dim]`` of ``bands`` of ``sensor`` (on the CPU; cached)."""
        key = (sensor, tuple(bands))
        if key in self._cache:
            return self._cache[key]
        spec = get_sensor(sensor)
        rows = []
        for name in bands:
            band = spec.band(name)
            code = torch.zeros(self.dim)
            if band.variable is not None:
                code[2 * self.FOURIER + len(SAR_IDENTITIES) + _VARIABLES.index(band.variable)] = 1
            else:
                described = hypernet_input(band, spec.name, "physical")
                wavelength = torch.tensor(math.log10(described.wavelength))
                bandwidth = torch.tensor(math.log10(described.bandwidth or 1.0))
                code[: self.FOURIER] = fourier_features(wavelength, 0.01, 20.0, self.FOURIER)
                code[self.FOURIER : 2 * self.FOURIER] = fourier_features(
                    bandwidth, 0.01, 20.0, self.FOURIER
                )
                if described.identity is not None:
                    code[2 * self.FOURIER + SAR_IDENTITIES.index(described.identity)] = 1
            rows.append(code)
        out = torch.stack(rows)
        self._cache[key] = out
        return out


class DynamicPixelHead(nn.Module):
    """Per-band output layer generated from the band's code: tokens ``[B, N, D]`` to pixels.

    For each input band, a small MLP maps its :class:`BandCoder` code to a ``D x p^2`` weight and
    a ``p^2`` bias; the prediction of band ``c`` in patch ``n`` is ``tokens[n] @ W_c + b_c``.
    """

    def __init__(self, dim: int, patch_size: int, hidden: int = 128) -> None:
        """Create the weight generator."""
        super().__init__()
        self.dim, self.pixels = dim, patch_size * patch_size
        self.coder = BandCoder()
        self.generator = nn.Sequential(
            nn.Linear(self.coder.dim, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, (dim + 1) * self.pixels),
        )
        nn.init.normal_(self.generator[-1].weight, std=0.02 / math.sqrt(hidden))
        nn.init.zeros_(self.generator[-1].bias)

    def forward(self, tokens: Tensor, sensor: str, bands: Sequence[str]) -> Tensor:
        """Predicted pixels ``[B, N, C, p*p]``."""
        codes = self.coder(sensor, bands).to(tokens.device, tokens.dtype)
        params = self.generator(codes).reshape(len(bands), self.dim + 1, self.pixels)
        weight, bias = params[:, : self.dim], params[:, self.dim]
        return torch.einsum("bnd,cdk->bnck", tokens, weight) + bias


class MAEDecoder(nn.Module):
    """MAE's light decoder with a :class:`DynamicPixelHead` (any bands out).

    Args:
        embed_dim: Width of the encoder's tokens.
        dim: Decoder width.
        depth: Decoder blocks.
        heads: Attention heads.
        patch_size: Pixels per patch side.
    """

    def __init__(self, embed_dim: int, dim: int, depth: int, heads: int, patch_size: int) -> None:
        """Create the decoder."""
        super().__init__()
        self.embed = nn.Linear(embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=nn.LayerNorm)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = DynamicPixelHead(dim, patch_size)

    def forward(
        self,
        latent: Tensor,
        ids_restore: Tensor,
        grid: tuple[int, int],
        sensor: str,
        bands: Sequence[str],
    ) -> Tensor:
        """Reconstruct every patch of every band from the visible tokens.

        Args:
            latent: ``[B, 1 + K, D]`` encoder output (class token first, then the visible patches
                in shuffled order).
            ids_restore: ``[B, N]`` inverse of the shuffle.
            grid: Patch grid ``(h, w)``.
            sensor: Sensor of the batch.
            bands: Bands to reconstruct.

        Returns:
            ``[B, N, C, p*p]``.
        """
        x = self.embed(latent)
        b, n = ids_restore.shape
        visible = x[:, 1:]
        fill = self.mask_token.expand(b, n - visible.shape[1], -1)
        patches = torch.cat((visible, fill), dim=1)
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        pos = sincos_2d(grid[0], grid[1], x.shape[-1]).to(x.device, x.dtype)
        x = torch.cat((x[:, :1], patches + pos), dim=1)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 1:]), sensor, bands)


class ProjectionHead(nn.Module):
    """SimCLR's MLP projection head ``D -> hidden -> out``."""

    def __init__(self, dim: int, hidden: int, out: int) -> None:
        """Create the head."""
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out))

    def forward(self, x: Tensor) -> Tensor:
        """Project ``[B, D]`` to ``[B, out]``."""
        return self.net(x)


def patchify(image: Tensor, patch: int, padding: int = 0) -> Tensor:
    """The pixels each token of the encoder's patch grid sees: ``[B, C, H, W]`` to ``[B, N, C, p*p]``.

    The encoder embeds patches with a stride-``p`` convolution over the image zero-padded by
    ``padding`` pixels on every side (``EncoderConfig.conv_padding``: 1 for the published
    Copernicus-FM and DOFA, 0 for new models). Token ``(i, j)`` therefore sees padded rows
    ``[i*p, (i+1)*p)`` and columns ``[j*p, (j+1)*p)``, i.e. image pixels shifted by ``padding``,
    on a grid of ``(H + 2*padding - p) // p + 1`` rows (likewise columns); pixels past the grid
    are seen by no token. The patches are cut from the same padded image, so token ``n`` and
    patch ``n`` cover the same pixels (padding zeros included), in row-major order.

    Args:
        image: ``[B, C, H, W]``.
        patch: Pixels per patch side.
        padding: Zero pixels added on every side before cutting, as the encoder does.
    """
    if padding:
        image = F.pad(image, (padding, padding, padding, padding))
    b, c, h, w = image.shape
    gh, gw = (h - patch) // patch + 1, (w - patch) // patch + 1
    x = image[:, :, : gh * patch, : gw * patch].reshape(b, c, gh, patch, gw, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c, patch * patch)


# ----------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------


class PretrainModule(L.LightningModule):
    """What every recipe shares; subclasses implement :meth:`compute_losses`.

    Args:
        config: The run's configuration.
        normaliser: The per-sensor normalisation (with any estimated statistics).
        encoder: An encoder to train (default: built from ``config.encoder`` and ``config.seed``).
    """

    def __init__(
        self, config: PretrainConfig, normaliser: Normaliser, encoder: Encoder | None = None
    ) -> None:
        """Build the encoder and the augmentation path."""
        super().__init__()
        self.config = config
        self.normaliser = normaliser
        self.encoder = (
            encoder if encoder is not None else build_encoder(config.encoder, config.seed)
        )
        if config.crop_size % self.patch_size:  # a loaded .pth tells its patch size only now
            raise UserInputError(
                f"augment.crop_size ({config.crop_size}) must be a multiple of the encoder's "
                f"patch size ({self.patch_size})"
            )
        a = config.augment
        self.augmenter = Augmenter(
            normaliser,
            out_size=config.crop_size,
            scale=a.crop_scale,
            ratio=a.crop_ratio,
            flips=a.flips,
            band_fraction=a.band_fraction,
        )

    # -- helpers --------------------------------------------------------------------------------

    @property
    def patch_size(self) -> int:
        """The encoder's patch size."""
        return int(self.encoder.config.patch_size)

    def step_generator(self, salt: int = 0) -> torch.Generator:
        """A generator seeded by ``(seed, step, rank, salt)``: the same draws after a resume."""
        return _seeded_generator(self.config.seed, self.global_step, self.global_rank, salt)

    def encode(self, view: View) -> Tensor:
        """Pooled features ``[B, D]`` of a view."""
        return self.encoder(view.image, bands=list(view.bands), sensor=view.sensor, meta=view.meta)

    def _with_heads_seed(self, build: Any) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed + 1)
            return build()

    def compute_losses(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """``(loss, named values to log)`` of one batch."""
        raise NotImplementedError

    # -- Lightning hooks ------------------------------------------------------------------------

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        """One optimisation step; logs ``train/loss``, the parts and the learning rate."""
        loss, parts = self.compute_losses(batch)
        self.log(
            "train/loss", loss, prog_bar=True, logger=False, batch_size=self._batch_size(batch)
        )
        if self.trainer is not None and (self.global_step + 1) % self.config.trainer.log_every == 0:
            # Written to the loggers directly: Lightning would repeat the last value of a
            # per-sensor key on steps of other sensors.
            optimizer = self.optimizers()
            values = {"train/loss": float(loss.detach())}
            values.update({f"train/{k}": float(v) for k, v in parts.items()})
            if not isinstance(optimizer, list):
                values["train/lr"] = float(optimizer.param_groups[0]["lr"])
            for logger in self.loggers:
                logger.log_metrics(values, step=self.global_step)
        return loss

    @staticmethod
    def _batch_size(batch: Mapping[str, Any]) -> int:
        if "image" in batch:
            return int(batch["image"].shape[0])
        return int(batch["a"]["image"].shape[0])

    def on_train_start(self) -> None:
        """Fit the learning-rate schedule restored from a checkpoint to this run's ``max_steps``.

        A resume restores the schedule of the interrupted run (its end included); when
        ``--max-steps`` changed, the schedule is fitted to the new end from the resume step
        (:meth:`WarmupCosine.stretch_to`: a continuous stretch, or a re-warm for a run that had
        reached its floor). A fresh run, or a resume with the same
        ``max_steps``, is left as it is.
        """
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            schedules = {id(f): f for f in getattr(scheduler, "lr_lambdas", ())}
            for schedule in schedules.values():
                if isinstance(schedule, WarmupCosine):
                    schedule.stretch_to(self.config.trainer.max_steps, self.global_step)

    def configure_optimizers(self) -> Any:
        """AdamW (no decay on biases, norms, tokens) with a per-step warm-up/cosine schedule."""
        o = self.config.optim
        decay, no_decay = [], []
        for name, parameter in self.named_parameters():
            if not parameter.requires_grad:
                continue
            if parameter.ndim <= 1 or "token" in name or "pos_embed" in name:
                no_decay.append(parameter)
            else:
                decay.append(parameter)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": o.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
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
        """Record what the checkpoint is: format, configuration, encoder and normalisation."""
        checkpoint[CHECKPOINT_FORMAT] = {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "encoder_config": self.encoder.config.to_dict(),
            "normalisation": self.normaliser.to_dict()["stats"],
        }


class MAEPretrain(PretrainModule):
    """Masked autoencoding with a dynamic decoder, optionally with feature distillation.

    Args:
        config: The run's configuration (``recipe: mae``).
        normaliser: The per-sensor normalisation.
        encoder: Optional encoder to train.
        teacher: Optional frozen teacher: adds ``distill.weight * (1 - cos)`` between the
            projected pooled features of the masked view and the teacher's full-view features.
    """

    def __init__(
        self,
        config: PretrainConfig,
        normaliser: Normaliser,
        encoder: Encoder | None = None,
        teacher: Teacher | None = None,
    ) -> None:
        """Build the decoder (and the distillation projection)."""
        super().__init__(config, normaliser, encoder)
        m = config.mae
        d = self.encoder.embed_dim
        self.decoder = self._with_heads_seed(
            lambda: MAEDecoder(d, m.decoder_dim, m.decoder_depth, m.decoder_heads, self.patch_size)
        )
        self.teacher = teacher
        self.distill_proj: nn.Module | None = None
        if teacher is not None:
            self.distill_proj = self._with_heads_seed(lambda: _distill_projection(self, teacher))

    def masked_encode(
        self, view: View, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor, tuple[int, int]]:
        """Encode the visible patches of a view.

        Returns:
            ``(latent [B, 1+K, D] after the final norm, ids_restore [B, N], mask [B, N], grid)``.
        """
        tokens, grid = self.encoder.embed(
            view.image, bands=list(view.bands), sensor=view.sensor, meta=view.meta
        )
        b, n = tokens.shape[0], tokens.shape[1] - 1
        keep = max(1, round(n * (1 - self.config.mae.mask_ratio)))
        noise = torch.rand(b, n, generator=generator).to(tokens.device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :keep]
        visible = torch.gather(
            tokens[:, 1:], 1, ids_keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
        )
        x = torch.cat((tokens[:, :1], visible), dim=1)
        for block in self.encoder.blocks:
            x = block(x)
        mask = torch.ones(b, n, device=tokens.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        return x, ids_restore, mask, grid

    def reconstruction_target(self, image: Tensor, grid: tuple[int, int]) -> Tensor:
        """The pixels ``[B, N, C, p*p]`` of each token of ``grid``, as the encoder saw them.

        Cut from the image padded as the encoder's patch embedding pads it (:func:`patchify`);
        an imported Copernicus-FM or DOFA pads by one pixel, so an unpadded cut would put every
        target patch one pixel off its token.
        """
        target = patchify(image, self.patch_size, int(self.encoder.config.conv_padding))
        if target.shape[1] != grid[0] * grid[1]:  # pragma: no cover - the encoder's own grid
            raise RuntimeError(
                f"MAE target grid of {target.shape[1]} patches differs from the encoder's "
                f"{grid[0]}x{grid[1]} tokens"
            )
        return target

    def compute_losses(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """MAE loss (per sensor) plus the optional distillation loss."""
        generator = self.step_generator()
        view = self.augmenter.view(batch, generator)
        latent, ids_restore, mask, grid = self.masked_encode(view, generator)
        pred = self.decoder(
            self.encoder.fc_norm(latent), ids_restore, grid, view.sensor, view.bands
        )
        target = self.reconstruction_target(view.image, grid)
        per_sample = masked_reconstruction_loss(pred, target, mask, self.config.mae.norm_pix_loss)
        loss, per_sensor = mean_per_group(per_sample, [view.sensor] * per_sample.shape[0])
        parts = {f"mae/{s}": v.detach() for s, v in per_sensor.items()}
        parts["mae"] = loss.detach()
        if self.teacher is not None and self.distill_proj is not None and _distills(self, view):
            pooled = self.encoder.fc_norm(latent[:, 1:].mean(dim=1))
            target_features = self.teacher(view.full_image, view.full_bands, view.sensor, view.meta)
            distill = cosine_distillation_loss(self.distill_proj(pooled), target_features)
            assert self.config.distill is not None
            loss = loss + self.config.distill.weight * distill
            parts["distill"] = distill.detach()
        return loss, parts

    def on_fit_start(self) -> None:
        """Put the teacher on the module's device."""
        if self.teacher is not None:
            self.teacher.to(self.device)


def _distill_projection(module: PretrainModule, teacher: Teacher) -> nn.Module:
    config = module.config
    sensor = (
        config.distill.sensors if config.distill and config.distill.sensors else config.sensors
    )[0]
    spec = get_sensor(sensor)
    source = config.source_for(spec.name)
    bands = source.bands or (("NO2",) if spec.name == "sentinel-5p" else spec.band_names)
    width = teacher.feature_dim(len(bands), config.crop_size, spec.name, bands)
    return nn.Linear(module.encoder.embed_dim, width)


def _distills(module: PretrainModule, view: View) -> bool:
    distill = module.config.distill
    if distill is None or distill.sensors is None:
        return True
    return view.sensor in {get_sensor(s).name for s in distill.sensors}


class ContrastivePretrain(PretrainModule):
    """Two augmented views; SoftCon, SupCon or SimCLR targets (``config.contrast_targets``)."""

    def __init__(
        self, config: PretrainConfig, normaliser: Normaliser, encoder: Encoder | None = None
    ) -> None:
        """Build the projection head."""
        super().__init__(config, normaliser, encoder)
        c = config.contrastive
        d = self.encoder.embed_dim
        self.projector = self._with_heads_seed(lambda: ProjectionHead(d, c.proj_hidden, c.proj_dim))

    def views(self, batch: Mapping[str, Any]) -> tuple[View, View]:
        """The two views of a batch (independent crops, flips and band subsets)."""
        generator = self.step_generator()
        return self.augmenter.view(batch, generator), self.augmenter.view(batch, generator)

    def _gather(self, x: Tensor) -> Tensor:
        trainer = self._trainer
        if not self.config.contrastive.gather or trainer is None or trainer.world_size == 1:
            return x
        gathered = self.all_gather(x, sync_grads=True)
        return gathered.reshape(-1, *x.shape[1:])

    def compute_losses(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """The soft-target InfoNCE of the two views."""
        first, second = self.views(batch)
        kind = self.config.contrast_targets
        labels = first.labels
        if kind != "simclr" and labels is None:
            raise UserInputError(f"{kind} needs multi-hot labels ('labels') in the batches")
        z1 = self._gather(self.projector(self.encode(first)))
        z2 = self._gather(self.projector(self.encode(second)))
        if labels is not None:
            labels = self._gather(labels.to(z1.device))
        loss = contrastive_loss(z1, z2, self.config.contrastive.temperature, kind, labels)
        name = "cross_sensor" if self.config.recipe == "cross_sensor" else kind
        parts = {f"{name}/{first.sensor}": loss.detach()}
        if second.sensor != first.sensor:
            parts = {f"{name}/{first.sensor}+{second.sensor}": loss.detach()}
        return loss, parts


class CrossSensorPretrain(ContrastivePretrain):
    """Co-registered samples of two sensors of one place are positives (InfoNCE by default).

    Both samples get the same crop and flips (they stay co-registered) and their own band
    subsets; the targets may also be ``softcon`` or ``supcon`` (``contrastive.targets``).
    """

    def views(self, batch: Mapping[str, Any]) -> tuple[View, View]:
        """One view per sensor, sharing the crop geometry."""
        generator = self.step_generator()
        params = self.augmenter.geometry(batch["a"], generator)
        first = self.augmenter.view(batch["a"], generator, params)
        second = self.augmenter.view(batch["b"], generator, params)
        return first, second


class DistillPretrain(PretrainModule):
    """Cosine feature distillation from a frozen teacher on the full (unmasked) augmented view."""

    def __init__(
        self,
        config: PretrainConfig,
        normaliser: Normaliser,
        teacher: Teacher,
        encoder: Encoder | None = None,
    ) -> None:
        """Build the student projection to the teacher's width."""
        super().__init__(config, normaliser, encoder)
        self.teacher = teacher
        self.distill_proj = self._with_heads_seed(lambda: _distill_projection(self, teacher))

    def compute_losses(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """``1 - cos`` between projected student features and teacher features."""
        view = self.augmenter.view(batch, self.step_generator())
        if not _distills(self, view):
            # A batch of a sensor the teacher does not see: keep every parameter in the graph.
            loss = 0.0 * self.distill_proj(self.encode(view)).sum()
            return loss, {}
        target = self.teacher(view.full_image, view.full_bands, view.sensor, view.meta)
        loss = cosine_distillation_loss(self.distill_proj(self.encode(view)), target)
        return loss, {f"distill/{view.sensor}": loss.detach()}

    def on_fit_start(self) -> None:
        """Put the teacher on the module's device."""
        self.teacher.to(self.device)


def build_module(
    config: PretrainConfig,
    normaliser: Normaliser,
    teacher: Teacher | None = None,
    encoder: Encoder | None = None,
) -> PretrainModule:
    """The LightningModule of ``config.recipe`` (a plugin recipe's from its entry point)."""
    from thinkingearth.pretrain.plugins import get_recipe, is_plugin

    if is_plugin(config.recipe):
        if teacher is not None:
            raise UserInputError(f"recipe {config.recipe} takes no distillation teacher")
        return get_recipe(config.recipe).build_module(config, normaliser, encoder)
    if config.recipe == "mae":
        return MAEPretrain(config, normaliser, encoder, teacher)
    if config.recipe in ("softcon", "supcon", "simclr"):
        return ContrastivePretrain(config, normaliser, encoder)
    if config.recipe == "cross_sensor":
        return CrossSensorPretrain(config, normaliser, encoder)
    if teacher is None:
        raise UserInputError("recipe distill needs a teacher (distill.teacher)")
    return DistillPretrain(config, normaliser, teacher, encoder)
