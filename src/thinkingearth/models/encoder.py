"""The ThinkingEarth encoder: a ViT whose patch embedding is written per band by a hypernetwork.

One model takes any Copernicus input: any subset and order of spectral or SAR bands (kernels are
generated from wavelength, bandwidth and band identity), non-spectral variables such as S5P
gases or the DEM (kernels generated from an embedding of the variable's name), any patch size
(FlexiViT pseudo-inverse kernel resize, Beyer et al. 2023) and non-square images, with optional
metadata (location, time, patch area) added to the position embedding.

The architecture follows Copernicus-FM (Wang et al. 2025, "Towards a Unified Copernicus
Foundation Model for Earth Vision"), itself built on DOFA (Xiong et al. 2024, "Neural
Plasticity-Inspired Multimodal Foundation Model for Earth Observation"); published checkpoints of
both import exactly (see :mod:`thinkingearth.models.weights`).

Calling conventions (``meta`` and ``patch_size`` work with each)::

    encoder(image, bands=["sentinel-2-l2a:B04", "sentinel-2-l2a:B08"])
    encoder(image, bands=["B04", "B08"], sensor="sentinel-2-l2a")
    encoder(image, wavelengths=[665.0, 842.0], bandwidths=[30.0, 115.0])
    encoder(image, variable="Sentinel-5P NO2")

Band names resolve through the sensor registry (:mod:`thinkingearth.sensors`): either qualified
as ``"<sensor>:<band>"`` (bands of several sensors may then be mixed) or bare with ``sensor=``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from thinkingearth.errors import UserInputError
from thinkingearth.models import fused
from thinkingearth.models import text as text_module
from thinkingearth.models.conventions import (
    COPERNICUSFM_LANGUAGE_KEYS,
    BandConvention,
    hypernet_input,
)
from thinkingearth.models.hypernet import SpectralHypernet, VariableHypernet
from thinkingearth.models.int8 import Int8Trunk
from thinkingearth.models.metadata import MetadataEncoder
from thinkingearth.sensors import Band, find_variable, get_bands, get_sensor

__all__ = ["SAR_IDENTITIES", "Encoder", "EncoderConfig", "MetaInput", "Precision"]

#: Band-identity keys known to the spectral hypernetwork: SAR polarisation / component.
SAR_IDENTITIES: tuple[str, ...] = tuple(
    f"{pol}/{part}"
    for pol in ("VV", "VH", "HH", "HV")
    for part in ("intensity", "amplitude", "phase")
)

MetaInput = Tensor | Mapping[str, Any] | None
Precision = Literal["fp32", "int8"]


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture of an :class:`Encoder`; saved as JSON beside the weights.

    Attributes:
        name: Registry name of the configuration.
        embed_dim: Token width.
        depth: Number of transformer blocks.
        num_heads: Attention heads per block.
        mlp_ratio: MLP hidden width / token width.
        patch_size: Native patch size (size of the generated kernels).
        img_size: Image size the position embedding grid was made for (``img_size //
            patch_size`` patches a side); other sizes interpolate it.
        hyper_dim: Width of the band codes of the hypernetworks.
        norm_eps: LayerNorm epsilon.
        conv_padding: Zero padding of the patch convolution. The published models use 1 (the
            patch grid starts one pixel before the image); new models use 0.
        spectral_encoding: ``"fourier"`` (Copernicus-FM) or ``"sincos"`` (DOFA).
        band_convention: How registry bands are described (:mod:`.conventions`).
        band_identity: Learned per-identity code so SAR polarisations get different kernels.
        variables: Whether the model has the variable (name-embedding) hypernetwork.
        llm_embed_dim: Width of the published Llama name embeddings (2048; 0 = none).
        text_embed_dim: Width of the local text-encoder embeddings (384; 0 = none).
        metadata: Whether location/time/area metadata is encoded.
        time_year: Add the long-period (year) time code.
        meta_masking: ``"per_sample"`` (ours) or ``"batch"`` (published) handling of NaN.
    """

    name: str = "custom"
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    img_size: int = 224
    hyper_dim: int = 128
    norm_eps: float = 1e-6
    conv_padding: int = 0
    spectral_encoding: Literal["fourier", "sincos"] = "fourier"
    band_convention: BandConvention = "physical"
    band_identity: bool = True
    variables: bool = True
    llm_embed_dim: int = 0
    text_embed_dim: int = 384
    metadata: bool = True
    time_year: bool = True
    meta_masking: Literal["per_sample", "batch"] = "per_sample"

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EncoderConfig:
        """Build a configuration from :meth:`to_dict` output.

        Raises:
            UserInputError: For keys this version does not know.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserInputError(f"unknown encoder config keys {unknown}; expected {sorted(known)}")
        return cls(**dict(data))


@dataclass(frozen=True)
class _SpectralInputs:
    wavelengths: tuple[float, ...]
    bandwidths: tuple[float, ...] | None
    identities: tuple[str | None, ...]

    @property
    def key(self) -> tuple[Any, ...]:
        return ("spectral", self.wavelengths, self.bandwidths, self.identities)


@dataclass(frozen=True)
class _VariableInputs:
    names: tuple[str, ...]  # text given to the text encoder
    llm_keys: tuple[str | None, ...]  # key of the published Llama table, if any

    @property
    def key(self) -> tuple[Any, ...]:
        return ("variable", self.names, self.llm_keys)


def sincos_2d(h: int, w: int, dim: int) -> Tensor:
    """Fixed 2-D sine-cosine position embedding ``[h*w, dim]`` (MAE style), any grid shape."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / max(quarter, 1))
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    parts = []
    for axis in (xx, yy):
        angle = axis.reshape(-1, 1) * omega.reshape(1, -1)
        parts += [angle.sin(), angle.cos()]
    out = torch.cat(parts, dim=1)
    if out.shape[1] < dim:
        out = torch.cat((out, out.new_zeros(out.shape[0], dim - out.shape[1])), dim=1)
    return out.to(torch.float32)


def _tensor_versions(tensors: Sequence[Tensor]) -> tuple[tuple[int, int], ...]:
    """Storage and in-place version of each tensor: any weight change alters the result.

    Inference tensors (created under ``torch.inference_mode``) have no version counter; they
    count by storage only.
    """
    return tuple((t.data_ptr(), -1 if t.is_inference() else t._version) for t in tensors)


class Encoder(nn.Module):
    """Any-sensor ViT encoder with hypernetwork patch embedding.

    Args:
        config: The architecture.

    Call it with an image ``[B, C, H, W]`` and one description of its channels (``bands=``,
    ``wavelengths=`` or ``variable=``); see the module docstring. Returns pooled features
    ``[B, D]`` (mean of patch tokens, then LayerNorm). :meth:`forward_intermediates` returns
    feature maps ``[B, D, h, w]`` for dense heads.

    Inference speed paths (CPU; both only in eval mode without autograd, e.g. under
    ``torch.inference_mode()``; training always runs the plain PyTorch modules):

    * fp32, exact (default): generated kernels are cached per band set and patch size
      (invalidated by any weight change), and float32 CPU calls run the patch embedding and the
      blocks as fused oneDNN kernels (:mod:`.fused`); set :attr:`fused_inference` to ``False``
      for the plain modules.
    * int8, fast: :meth:`set_precision` ``("int8")`` (or ``load(..., precision="int8")``) runs
      the trunk of :meth:`forward` as a dynamically quantised ONNX Runtime graph
      (:mod:`.int8`). :meth:`forward_intermediates` stays fp32.
    """

    def __init__(self, config: EncoderConfig) -> None:
        """Build the encoder from its configuration (random weights)."""
        super().__init__()
        self.config = config
        d = config.embed_dim
        if d % 4:
            raise UserInputError(f"embed_dim must be a multiple of 4, got {d}")
        self.spectral = SpectralHypernet(
            config.hyper_dim,
            config.patch_size,
            d,
            config.spectral_encoding,
            SAR_IDENTITIES if config.band_identity else (),
        )
        self.variable: VariableHypernet | None = None
        if config.variables:
            self.variable = VariableHypernet(
                config.hyper_dim,
                config.patch_size,
                d,
                config.llm_embed_dim,
                config.text_embed_dim,
            )
        self.meta: MetadataEncoder | None = None
        if config.metadata:
            self.meta = MetadataEncoder(d, year=config.time_year, masking=config.meta_masking)
        grid = config.img_size // config.patch_size
        self.grid = grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        pos = torch.cat((torch.zeros(1, d), sincos_2d(grid, grid, d)), dim=0).unsqueeze(0)
        self.pos_embed = nn.Parameter(pos, requires_grad=False)
        norm_layer = partial(nn.LayerNorm, eps=config.norm_eps)
        self.blocks = nn.ModuleList(
            Block(
                d,
                config.num_heads,
                mlp_ratio=config.mlp_ratio,
                qkv_bias=True,
                norm_layer=norm_layer,
            )
            for _ in range(config.depth)
        )
        self.fc_norm = norm_layer(d)
        nn.init.normal_(self.cls_token, std=0.02)
        #: Published Llama-3.2-1B name embeddings (imported Copernicus-FM), key -> [2048].
        self.language_table: dict[str, Tensor] = {}
        self._kernel_cache: dict[tuple[Any, ...], tuple[Any, Tensor, Tensor]] = {}
        #: Run eval-mode, no-grad float32 CPU calls through the fused oneDNN path.
        self.fused_inference: bool = True
        self._int8: Int8Trunk | None = None

    # ------------------------------------------------------------------------------------------
    # Inputs
    # ------------------------------------------------------------------------------------------

    @property
    def embed_dim(self) -> int:
        """Width ``D`` of the features."""
        return self.config.embed_dim

    def set_language_embeddings(self, table: Mapping[str, Tensor]) -> None:
        """Register published Llama name embeddings (``var_embed_llama3.2_1B.pt`` entries).

        Keys are the table's names (e.g. ``"Sentinel 5P Nitrogen Dioxide"``); registry variables
        find them through :data:`.conventions.COPERNICUSFM_LANGUAGE_KEYS`.

        Raises:
            UserInputError: If the model has no Llama projection or a vector has the wrong size.
        """
        if self.variable is None or self.variable.llm_proj is None:
            raise UserInputError("this model takes no Llama name embeddings (llm_embed_dim=0)")
        width = self.variable.llm_proj.in_features
        for key, vector in table.items():
            if vector.numel() != width:
                raise UserInputError(
                    f"language embedding {key!r} has {vector.numel()} values; expected {width}"
                )
            self.language_table[str(key)] = vector.detach().reshape(width).to(torch.float32).cpu()
        self._kernel_cache.clear()

    def _resolve_bands(
        self, bands: Sequence[str | Band], sensor: str | None
    ) -> list[tuple[Band, str]]:
        resolved: list[tuple[Band, str]] = []
        if isinstance(bands, str):
            bands = [bands]
        for item in bands:
            if isinstance(item, Band):
                if sensor is None:
                    raise UserInputError(
                        f"band {item.name!r} given as a Band object needs sensor=<registry name>"
                    )
                resolved.append((item, sensor))
                continue
            name = str(item)
            if ":" in name:
                sensor_name, _, band_name = name.partition(":")
            elif sensor is not None:
                sensor_name, band_name = sensor, name
            else:
                raise UserInputError(
                    f"band {name!r} needs its sensor: pass sensor='<registry name>' or qualify "
                    f"it as '<sensor>:{name}' (e.g. 'sentinel-2-l2a:B04')"
                )
            (band,) = get_bands(sensor_name, [band_name])
            resolved.append((band, get_sensor(sensor_name).name))
        return resolved

    def _spectral_from_bands(self, resolved: list[tuple[Band, str]]) -> _SpectralInputs:
        convention = self.config.band_convention
        described = [hypernet_input(band, sensor, convention) for band, sensor in resolved]
        wavelengths = tuple(float(x.wavelength) for x in described)
        bandwidths: tuple[float, ...] | None = None
        if self.config.spectral_encoding == "fourier":
            missing = [
                b.name for (b, _), x in zip(resolved, described, strict=True) if x.bandwidth is None
            ]
            if missing:
                raise UserInputError(
                    f"bands {missing} have no bandwidth in the registry; pass wavelengths= and "
                    "bandwidths= (nm) explicitly"
                )
            bandwidths = tuple(float(x.bandwidth) for x in described)  # type: ignore[arg-type]
        return _SpectralInputs(wavelengths, bandwidths, tuple(x.identity for x in described))

    def _variable_inputs(self, names: Sequence[str | Band]) -> _VariableInputs:
        texts: list[str] = []
        keys: list[str | None] = []
        for item in names:
            band: Band | None
            if isinstance(item, Band):
                band = item
            else:
                try:
                    band = find_variable(str(item))
                except UserInputError:
                    band = None
            if band is None:
                texts.append(str(item))
                keys.append(str(item) if str(item) in self.language_table else None)
                continue
            variable = band.variable or band.name
            texts.append(variable)
            keys.append(COPERNICUSFM_LANGUAGE_KEYS.get(variable))
        return _VariableInputs(tuple(texts), tuple(keys))

    def _resolve(
        self,
        channels: int,
        bands: Sequence[str | Band] | str | None,
        sensor: str | None,
        wavelengths: Sequence[float] | None,
        bandwidths: Sequence[float] | None,
        variable: str | Sequence[str] | None,
    ) -> _SpectralInputs | _VariableInputs:
        given = [x is not None for x in (bands, wavelengths, variable)]
        if sum(given) != 1:
            raise UserInputError(
                "describe the image channels with exactly one of bands=, wavelengths= or variable="
            )
        if bandwidths is not None and wavelengths is None:
            raise UserInputError("bandwidths= goes with wavelengths=")
        inputs: _SpectralInputs | _VariableInputs
        if bands is not None:
            resolved = self._resolve_bands(bands if not isinstance(bands, str) else [bands], sensor)
            is_variable = [b.variable is not None for b, _ in resolved]
            if any(is_variable) and not all(is_variable):
                raise UserInputError(
                    "bands mix spectral bands and non-spectral variables "
                    f"({[b.name for b, _ in resolved]}); encode them in separate calls"
                )
            if all(is_variable):
                inputs = self._variable_inputs([b for b, _ in resolved])
            else:
                inputs = self._spectral_from_bands(resolved)
            count = len(resolved)
        elif wavelengths is not None:
            inputs = self._spectral_from_values(wavelengths, bandwidths)
            count = len(inputs.wavelengths)
        else:
            names = [variable] if isinstance(variable, str) else list(variable or [])
            inputs = self._variable_inputs(names)
            count = len(names)
        if count != channels:
            raise UserInputError(
                f"the image has {channels} channels but {count} band descriptions were given; "
                "expected one per channel"
            )
        if isinstance(inputs, _VariableInputs) and self.variable is None:
            raise UserInputError(
                f"model {self.config.name!r} has no variable hypernetwork; it takes spectral "
                "bands only"
            )
        return inputs

    def _spectral_from_values(
        self, wavelengths: Sequence[float], bandwidths: Sequence[float] | None
    ) -> _SpectralInputs:
        values = [float(w) for w in wavelengths]
        if self.config.spectral_encoding == "sincos":
            return _SpectralInputs(tuple(w / 1000.0 for w in values), None, (None,) * len(values))
        if bandwidths is None:
            raise UserInputError(
                f"model {self.config.name!r} needs bandwidths= (nm) with wavelengths="
            )
        widths = [float(b) for b in bandwidths]
        if len(widths) != len(values):
            raise UserInputError(
                f"got {len(values)} wavelengths but {len(widths)} bandwidths; expected one each "
                "per channel"
            )
        low, high = SpectralHypernet.WAVELENGTH_RANGE
        if any(not (low <= w <= high) for w in values):
            raise UserInputError(
                f"wavelengths {values} nm outside the encodable range [{low:g}, {high:g}] nm"
            )
        low, high = SpectralHypernet.BANDWIDTH_RANGE
        if any(not (low <= b <= high) for b in widths):
            raise UserInputError(
                f"bandwidths {widths} nm outside the encodable range [{low:g}, {high:g}] nm"
            )
        return _SpectralInputs(tuple(values), tuple(widths), (None,) * len(values))

    def _meta_tensor(
        self, meta: MetaInput, batch: int, patch_size: int, device: torch.device
    ) -> Tensor | None:
        if self.meta is None:
            return None  # this model (e.g. DOFA) takes no metadata
        if meta is None:
            return torch.full((batch, 4), math.nan, device=device)
        if isinstance(meta, Tensor):
            values = meta if meta.is_floating_point() else meta.float()
            if values.ndim == 1 and values.shape[0] == 4:
                values = values.unsqueeze(0).expand(batch, 4)
            if values.shape != (batch, 4):
                raise UserInputError(
                    f"meta has shape {tuple(meta.shape)}; expected [{batch}, 4] (lon deg, lat deg, "
                    "days since 1970-01-01, patch area km2; NaN = unknown)"
                )
            return values.to(device)
        if isinstance(meta, Mapping):
            columns = []
            for key in ("lon", "lat", "time", "gsd"):
                value = meta.get(key)
                column = torch.full((batch,), math.nan, dtype=torch.float64)
                if value is not None:
                    tensor = torch.as_tensor(value, dtype=torch.float64).cpu()
                    if key == "time" and tensor.ndim == 2:
                        if tensor.shape[1] != 1:
                            raise UserInputError(
                                f"meta['time'] has {tensor.shape[1]} steps per sample; the "
                                "encoder takes one image (one time) per sample"
                            )
                        tensor = tensor[:, 0]
                    if tensor.ndim == 0:
                        tensor = tensor.expand(batch)
                    if tensor.shape != (batch,):
                        raise UserInputError(
                            f"meta[{key!r}] has shape {tuple(tensor.shape)}; expected [{batch}]"
                        )
                    column = tensor
                columns.append(column)
            lon, lat, time, gsd = columns
            area = (gsd * patch_size / 1000.0) ** 2  # km² of one patch
            return torch.stack((lon, lat, time, area), dim=1).to(device)
        raise UserInputError(
            f"meta must be a [B, 4] tensor or a Sample batch mapping, got {type(meta).__name__}"
        )

    # ------------------------------------------------------------------------------------------
    # Kernels
    # ------------------------------------------------------------------------------------------

    def _variable_codes(self, inputs: _VariableInputs, language_embed: Tensor | None) -> Tensor:
        hyper = self.variable
        assert hyper is not None
        device = hyper.fc_res.w1.weight.device
        need_text = hyper.text_proj is not None and (
            hyper.llm_proj is None or not hyper.text_path_is_zero()
        )
        explicit: list[Tensor | None] = [None] * len(inputs.names)
        if language_embed is not None and hyper.llm_proj is None:
            raise UserInputError(
                f"model {self.config.name!r} takes no Llama name embeddings (language_embed=); "
                "it embeds variable names with its text encoder"
            )
        if language_embed is not None:
            rows = language_embed.reshape(-1, language_embed.shape[-1])
            if rows.shape[0] != len(inputs.names):
                raise UserInputError(
                    f"language_embed has {rows.shape[0]} rows; expected one per variable "
                    f"({len(inputs.names)})"
                )
            explicit = list(rows)
        codes = []
        for name, key, given in zip(inputs.names, inputs.llm_keys, explicit, strict=True):
            llm: Tensor | None = given
            if llm is None and key is not None and key in self.language_table:
                llm = self.language_table[key]
            if hyper.llm_proj is not None and llm is None and not need_text:
                raise UserInputError(
                    f"variable {name!r}: this imported Copernicus-FM describes variables by the "
                    "published Llama embedding of their name, and none is registered for it; "
                    "load the table with load(path, language_table='var_embed_llama3.2_1B.pt'), "
                    "pass language_embed=, or fine-tune the model's text projection"
                )
            text = text_module.embed_text(name).to(device) if need_text else None
            codes.append(hyper.codes(None if llm is None else llm.to(device), text))
        return torch.cat(codes, dim=0)

    def _kernels(
        self,
        inputs: _SpectralInputs | _VariableInputs,
        patch_size: int,
        device: torch.device,
        language_embed: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        hyper = self.spectral if isinstance(inputs, _SpectralInputs) else self.variable
        assert hyper is not None
        cacheable = not self.training and not torch.is_grad_enabled() and language_embed is None
        key = (*inputs.key, patch_size, str(device))
        if cacheable:
            versions = _tensor_versions([*hyper.parameters(), *hyper.buffers()])
            hit = self._kernel_cache.get(key)
            if hit is not None and hit[0] == versions:
                return hit[1], hit[2]
        if isinstance(inputs, _SpectralInputs):
            wavelengths = torch.tensor(inputs.wavelengths, dtype=torch.float32, device=device)
            bandwidths = None
            if inputs.bandwidths is not None:
                bandwidths = torch.tensor(inputs.bandwidths, dtype=torch.float32, device=device)
            codes = self.spectral.codes(wavelengths, bandwidths, inputs.identities)
        else:
            codes = self._variable_codes(inputs, language_embed)
        kernel, bias = hyper.kernels(codes, patch_size)
        if cacheable:
            kernel = kernel.contiguous()  # the fused patch embedding reads it as [D, C*p*p]
            if len(self._kernel_cache) > 64:
                self._kernel_cache.clear()
            self._kernel_cache[key] = (versions, kernel, bias)
        return kernel, bias

    @property
    def precision(self) -> Precision:
        """``"fp32"`` or ``"int8"`` (the trunk of :meth:`forward` at inference); see
        :meth:`set_precision`."""
        return "int8" if self._int8 is not None else "fp32"

    def set_precision(
        self,
        precision: Precision,
        *,
        cache_dir: str | Path | None = None,
        per_channel: bool = True,
    ) -> Encoder:
        """Choose the inference precision of :meth:`forward`'s trunk.

        ``"int8"`` exports the trunk (blocks, pooling, ``fc_norm``) to ONNX at the first
        inference call, quantises its linear layers' weights to int8 with ONNX Runtime's dynamic
        quantisation and runs it with ONNX Runtime; the patch embedding stays in PyTorch. It
        applies in eval mode without autograd; training and :meth:`forward_intermediates` use
        the fp32 modules. A change of the weights rebuilds the graph at the next call.

        Args:
            precision: ``"fp32"`` or ``"int8"``.
            cache_dir: Directory for the quantised graphs (reused across runs, named by a digest
                of the weights); default a temporary directory removed with the encoder.
            per_channel: Per-output-channel weight scales (default) or one per tensor.

        Returns:
            The encoder itself.

        Raises:
            UserInputError: For an unknown precision, or ``"int8"`` without onnxruntime
                (the message names ``pip install 'thinkingearth[onnx]'``).
        """
        if precision == "fp32":
            self._int8 = None
        elif precision == "int8":
            self._int8 = Int8Trunk(cache_dir, per_channel=per_channel)
        else:
            raise UserInputError(f"unknown precision {precision!r}; expected 'fp32' or 'int8'")
        return self

    def prepare_int8(self) -> float:
        """Build the int8 graph now (else done at the first call); returns the seconds it took.

        Raises:
            UserInputError: If the precision is not ``"int8"``.
        """
        if self._int8 is None:
            raise UserInputError("prepare_int8() needs set_precision('int8') first")
        self._int8.prepare(self)
        return self._int8.build_seconds

    def clear_kernel_cache(self) -> None:
        """Drop cached kernels (they are also invalidated automatically on any weight change)."""
        self._kernel_cache.clear()

    def train(self, mode: bool = True) -> Encoder:
        """Switch train/eval mode; clears the kernel cache."""
        self._kernel_cache.clear()
        return super().train(mode)

    # ------------------------------------------------------------------------------------------
    # Forward
    # ------------------------------------------------------------------------------------------

    def _inference(self) -> bool:
        return not self.training and not torch.is_grad_enabled()

    def _use_fused(self, x: Tensor) -> bool:
        return (
            self.fused_inference
            and self._inference()
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
            and fused.onednn_available()
        )

    def _run_blocks(self, tokens: Tensor, last: int) -> Iterator[Tensor]:
        """Yield the tokens after each of the blocks ``0..last``."""
        if not self._use_fused(tokens):
            for block in self.blocks[: last + 1]:
                tokens = block(tokens)
                yield tokens
            return
        b, n, d = tokens.shape
        flat = tokens.reshape(b * n, d).contiguous()
        for block in self.blocks[: last + 1]:
            if fused.fusable(block):
                flat = fused.run_block(block, flat, b)  # type: ignore[arg-type]
            else:
                flat = block(flat.view(b, n, d)).reshape(b * n, d).contiguous()
            yield flat.view(b, n, d)

    def _position_embedding(self, h: int, w: int) -> Tensor:
        pos = self.pos_embed
        if (h, w) == (self.grid, self.grid):
            return pos
        d = pos.shape[-1]
        grid = pos[:, 1:].reshape(1, self.grid, self.grid, d).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", antialias=True)
        grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, d)
        return torch.cat((pos[:, :1], grid), dim=1)

    def embed(
        self,
        image: Tensor,
        bands: Sequence[str | Band] | str | None = None,
        *,
        sensor: str | None = None,
        wavelengths: Sequence[float] | None = None,
        bandwidths: Sequence[float] | None = None,
        variable: str | Sequence[str] | None = None,
        meta: MetaInput = None,
        patch_size: int | None = None,
        language_embed: Tensor | None = None,
    ) -> tuple[Tensor, tuple[int, int]]:
        """Token sequence ``[B, 1 + h*w, D]`` (class token first) and the patch grid ``(h, w)``.

        Arguments as in :meth:`forward`.
        """
        if not isinstance(image, Tensor) or image.ndim != 4 or not image.is_floating_point():
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise UserInputError(f"image must be a float tensor [B, C, H, W], got {shape}")
        p = int(patch_size or self.config.patch_size)
        if p < 1:
            raise UserInputError(f"patch_size must be a positive integer, got {patch_size}")
        b, c, h, w = image.shape
        if h < p or w < p:
            raise UserInputError(
                f"the image ({h}x{w} pixels) is smaller than one patch ({p}x{p}); expected at "
                f"least {p} pixels a side"
            )
        inputs = self._resolve(c, bands, sensor, wavelengths, bandwidths, variable)
        kernel, bias = self._kernels(inputs, p, image.device, language_embed)
        if self._use_fused(image):
            x, gh, gw = fused.patch_embed(image, kernel, bias, p, self.config.conv_padding)
        else:
            x = F.conv2d(
                image,
                kernel.to(image.dtype),
                bias.to(image.dtype),
                stride=p,
                padding=self.config.conv_padding,
            )
            gh, gw = x.shape[-2:]
            x = x.flatten(2).transpose(1, 2)
        pos = self._position_embedding(gh, gw)
        meta_tensor = self._meta_tensor(meta, b, p, image.device)
        if self.meta is not None and meta_tensor is not None:
            for term in self.meta(meta_tensor):
                pos = pos + term
        x = x + pos[:, 1:]
        cls = (self.cls_token + pos[:, :1]).expand(b, -1, -1)
        return torch.cat((cls, x), dim=1), (int(gh), int(gw))

    def forward(
        self,
        image: Tensor,
        bands: Sequence[str | Band] | str | None = None,
        *,
        sensor: str | None = None,
        wavelengths: Sequence[float] | None = None,
        bandwidths: Sequence[float] | None = None,
        variable: str | Sequence[str] | None = None,
        meta: MetaInput = None,
        patch_size: int | None = None,
        language_embed: Tensor | None = None,
    ) -> Tensor:
        """Pooled features ``[B, D]`` of an image.

        Args:
            image: ``[B, C, H, W]`` float, normalised as the model expects.
            bands: One registry band name per channel: ``"sensor:band"`` or bare with ``sensor``.
            sensor: Registry sensor of bare band names.
            wavelengths: Central wavelength per channel in nm (instead of ``bands``).
            bandwidths: Bandwidth per channel in nm (with ``wavelengths``; Fourier models).
            variable: Name of the non-spectral variable of each channel (e.g.
                ``"Sentinel-5P NO2"``); registry names or free text (text encoder).
            meta: ``[B, 4]`` tensor (lon °, lat °, days since 1970-01-01, patch area km²; NaN =
                unknown) or a collated Sample batch (``lon``, ``lat``, ``time``, ``gsd``; the
                patch area is computed from ``gsd`` and the patch size). Ignored by models
                without metadata encoding (DOFA).
            patch_size: Patch size (default: the model's own); kernels are resized.
            language_embed: Explicit published Llama embedding(s) ``[2048]`` / ``[C, 2048]`` of
                the variable(s), overriding the registered table (imported Copernicus-FM).

        Returns:
            ``[B, D]``: mean of the patch tokens after the last block, then LayerNorm.

        Raises:
            UserInputError: For unknown bands, channel/description count mismatch, an image
                smaller than one patch, or inputs the model cannot encode.
        """
        tokens, _ = self.embed(
            image,
            bands,
            sensor=sensor,
            wavelengths=wavelengths,
            bandwidths=bandwidths,
            variable=variable,
            meta=meta,
            patch_size=patch_size,
            language_embed=language_embed,
        )
        if self._int8 is not None and self._inference():
            return self._int8(self, tokens)
        for out in self._run_blocks(tokens, len(self.blocks) - 1):
            tokens = out
        return self.fc_norm(tokens[:, 1:].mean(dim=1))

    def forward_intermediates(
        self,
        image: Tensor,
        bands: Sequence[str | Band] | str | None = None,
        *,
        indices: int | Sequence[int] = 1,
        norm: bool = False,
        sensor: str | None = None,
        wavelengths: Sequence[float] | None = None,
        bandwidths: Sequence[float] | None = None,
        variable: str | Sequence[str] | None = None,
        meta: MetaInput = None,
        patch_size: int | None = None,
        language_embed: Tensor | None = None,
    ) -> list[Tensor]:
        """Feature maps ``[B, D, h, w]`` after selected blocks, for dense heads.

        Args:
            image: As in :meth:`forward` (and the other input arguments likewise).
            bands: As in :meth:`forward`.
            indices: Block indices (negative counts from the end), or an int ``n`` for the last
                ``n`` blocks.
            norm: Apply the final LayerNorm (``fc_norm``) to each map's tokens.
            sensor: As in :meth:`forward`.
            wavelengths: As in :meth:`forward`.
            bandwidths: As in :meth:`forward`.
            variable: As in :meth:`forward`.
            meta: As in :meth:`forward`.
            patch_size: As in :meth:`forward`.
            language_embed: As in :meth:`forward`.

        Returns:
            One ``[B, D, h, w]`` map per index, in the order of ``indices``.

        Raises:
            UserInputError: For an index outside the model's depth (and as :meth:`forward`).
        """
        depth = len(self.blocks)
        if isinstance(indices, int):
            wanted = list(range(depth - indices, depth))
        else:
            wanted = [i + depth if i < 0 else i for i in indices]
        if not wanted or any(not 0 <= i < depth for i in wanted):
            raise UserInputError(f"block indices {indices} outside 0..{depth - 1}")
        tokens, (h, w) = self.embed(
            image,
            bands,
            sensor=sensor,
            wavelengths=wavelengths,
            bandwidths=bandwidths,
            variable=variable,
            meta=meta,
            patch_size=patch_size,
            language_embed=language_embed,
        )
        found: dict[int, Tensor] = {}
        for i, out in enumerate(self._run_blocks(tokens, max(wanted))):
            if i in wanted:
                patches = out[:, 1:]
                if norm:
                    patches = self.fc_norm(patches)
                found[i] = patches.transpose(1, 2).reshape(out.shape[0], -1, h, w)
        return [found[i] for i in wanted]
