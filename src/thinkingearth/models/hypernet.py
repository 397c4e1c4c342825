"""Dynamic patch embedding: a hypernetwork that writes the patch kernel of every input band.

A ViT's patch embedding is a convolution with one ``p x p`` kernel per input channel. Here the
kernels are not parameters: a small transformer generates them from a description of each band,
so one model takes any subset and order of bands (DOFA: Xiong et al. 2024, "Neural
Plasticity-Inspired Multimodal Foundation Model for Earth Observation"). The description is

* for spectral bands, Fourier features of the central wavelength and of the bandwidth over
  log-spaced periods (Copernicus-FM: Wang et al. 2025, "Towards a Unified Copernicus Foundation
  Model for Earth Vision"), or DOFA's 1-D sine-cosine code of the wavelength;
* for non-spectral variables (S5P gases, DEM), an embedding of the variable's name.

Kernels for another patch size come from the FlexiViT pseudo-inverse resize (Beyer et al. 2023,
"FlexiViT: One Model for All Patch Sizes"), which keeps ``<resize(x), resize(w)> = <x, w>``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "KERNEL_SCALE",
    "NUM_WEIGHT_TOKENS",
    "KernelGenerator",
    "ResidualMLP",
    "SpectralHypernet",
    "VariableHypernet",
    "fourier_features",
    "pinv_resize_kernel",
    "sincos_code",
]

#: Generated kernels and biases are multiplied by this (as in DOFA and Copernicus-FM).
KERNEL_SCALE: float = 0.01
#: Number of learned query tokens of the kernel generator (fixed by the published models).
NUM_WEIGHT_TOKENS: int = 128

SpectralEncoding = Literal["fourier", "sincos"]


def fourier_features(x: Tensor, lower: float, upper: float, dim: int) -> Tensor:
    """Fourier features of ``x`` over ``dim // 2`` periods log-spaced from ``lower`` to ``upper``.

    Computed in float64 (wavelengths span seven orders of magnitude), returned as float32:
    ``[sin(2 pi x / P_1), ..., sin(2 pi x / P_n), cos(2 pi x / P_1), ..., cos(2 pi x / P_n)]``.

    Args:
        x: Values of any shape ``S``.
        lower: Shortest period.
        upper: Longest period.
        dim: Output size, even.

    Returns:
        float32 tensor of shape ``S + (dim,)``.
    """
    if dim % 2:
        raise ValueError(f"Fourier feature size must be even, got {dim}")
    periods = torch.logspace(
        math.log10(lower),
        math.log10(upper),
        dim // 2,
        base=10.0,
        dtype=torch.float64,
        device=x.device,
    )
    phase = x.to(torch.float64).unsqueeze(-1) * (2 * math.pi / periods)
    return torch.cat((phase.sin(), phase.cos()), dim=-1).to(torch.float32)


def sincos_code(wavelength_um: Tensor, dim: int) -> Tensor:
    """DOFA's wavelength code: 1-D sine-cosine position code of the wavelength in nanometres.

    Args:
        wavelength_um: ``[C]`` wavelengths in micrometres (float32, as DOFA takes them).
        dim: Code size, even.

    Returns:
        ``[C, dim]`` float32.
    """
    position = wavelength_um.to(torch.float32) * 1000
    exponent = torch.arange(dim // 2, dtype=torch.float32, device=position.device) / (dim / 2.0)
    frequency = 1.0 / 10000**exponent
    angle = position.reshape(-1, 1) * frequency.reshape(1, -1)
    return torch.cat((angle.sin(), angle.cos()), dim=1)


@lru_cache(maxsize=32)
def _pinv_resize_matrix(old: tuple[int, int], new: tuple[int, int]) -> Tensor:
    """Pseudo-inverse of the bicubic (antialiased) resize ``old -> new``, shape ``[new, old]``."""
    n_old = old[0] * old[1]
    basis = torch.eye(n_old, dtype=torch.float32).reshape(n_old, 1, *old)
    resized = F.interpolate(basis, size=new, mode="bicubic", antialias=True)
    resize = resized.reshape(n_old, new[0] * new[1])  # rows: resize of each basis vector
    return torch.linalg.pinv(resize)  # [new, old] flattened sizes


def pinv_resize_kernel(kernel: Tensor, new_size: tuple[int, int]) -> Tensor:
    """Resize patch-embedding kernels with the FlexiViT pseudo-inverse (Beyer et al. 2023).

    Args:
        kernel: ``[D, C, h, w]``.
        new_size: Target ``(h', w')``.

    Returns:
        ``[D, C, h', w']``; the input itself when the size does not change.
    """
    d, c, h, w = kernel.shape
    if (h, w) == tuple(new_size):
        return kernel
    pinv = _pinv_resize_matrix((h, w), (int(new_size[0]), int(new_size[1])))
    pinv = pinv.to(device=kernel.device, dtype=kernel.dtype)
    flat = kernel.reshape(d * c, h * w)
    return (flat @ pinv.T).reshape(d, c, *new_size)


class ResidualMLP(nn.Module):
    """``x + relu(W2 relu(W1 x))``: the residual layer applied to band codes."""

    def __init__(self, dim: int) -> None:
        """Create the two ``dim x dim`` layers."""
        super().__init__()
        self.w1 = nn.Linear(dim, dim)
        self.w2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the residual MLP to ``[..., dim]``."""
        return x + F.relu(self.w2(F.relu(self.w1(x))))


class KernelGenerator(nn.Module):
    """Transformer that turns band codes ``[C, h]`` into kernels ``[C, k*k*D]`` and a bias ``[D]``.

    The sequence is 128 learned weight tokens, the ``C`` band codes and one bias token; one
    post-norm transformer layer (4 heads) mixes them, so each kernel depends on the whole band
    set. Kernels are read from the band positions (plus a skip from the codes), the bias from the
    bias token.
    """

    def __init__(self, hyper_dim: int, kernel_size: int, embed_dim: int) -> None:
        """Create a generator for ``kernel_size``-square kernels of ``embed_dim`` outputs."""
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            d_model=hyper_dim,
            nhead=4,
            dim_feedforward=2048,
            dropout=0.0,
            activation="gelu",
            batch_first=False,
            norm_first=False,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.weight_tokens = nn.Parameter(torch.empty(NUM_WEIGHT_TOKENS, hyper_dim))
        self.bias_token = nn.Parameter(torch.empty(1, hyper_dim))
        self.to_weight = nn.Linear(hyper_dim, kernel_size * kernel_size * embed_dim)
        self.to_bias = nn.Linear(hyper_dim, embed_dim)
        nn.init.normal_(self.weight_tokens, std=0.02)
        nn.init.normal_(self.bias_token, std=0.02)

    def forward(self, codes: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(weights [C, k*k*D], bias [D])`` for codes ``[C, hyper_dim]``."""
        sequence = torch.cat((self.weight_tokens, codes, self.bias_token), dim=0)
        out = self.encoder(sequence)
        weights = self.to_weight(out[NUM_WEIGHT_TOKENS:-1] + codes)
        bias = self.to_bias(out[-1])
        return weights, bias


def _xavier_init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.constant_(module.bias, 0.01)


class _Hypernet(nn.Module):
    """Shared part of the spectral and variable hypernetworks: codes -> conv kernels."""

    def __init__(self, hyper_dim: int, kernel_size: int, embed_dim: int) -> None:
        super().__init__()
        self.hyper_dim = hyper_dim
        self.kernel_size = kernel_size
        self.embed_dim = embed_dim
        self.fc_res = ResidualMLP(hyper_dim)
        self.generator = KernelGenerator(hyper_dim, kernel_size, embed_dim)
        self.generator.apply(_xavier_init)
        self.fc_res.apply(_xavier_init)

    def kernels(self, codes: Tensor, patch_size: int) -> tuple[Tensor, Tensor]:
        """Turn band codes ``[C, h]`` into a conv kernel ``[D, C, p, p]`` and bias ``[D]``.

        Both are already multiplied by :data:`KERNEL_SCALE`; kernels of another size than the
        generator's come from :func:`pinv_resize_kernel`.
        """
        weights, bias = self.generator(self.fc_res(codes))
        k = self.kernel_size
        kernel = weights.view(codes.shape[0], k, k, self.embed_dim).permute(3, 0, 1, 2)
        kernel = pinv_resize_kernel(kernel, (patch_size, patch_size))
        return kernel * KERNEL_SCALE, bias.view(self.embed_dim) * KERNEL_SCALE


class SpectralHypernet(_Hypernet):
    """Hypernetwork for spectral and SAR bands, described by wavelength, bandwidth and identity.

    ``encoding="fourier"`` (Copernicus-FM): the code is the sum of Fourier features of the central
    wavelength (periods 100 nm .. 1 m) and of the bandwidth (1 nm .. 1 m). ``encoding="sincos"``
    (DOFA): a sine-cosine code of the wavelength alone.

    The optional band-identity table (our addition) adds a learned vector per identity key (e.g.
    ``"VH/intensity"``) to the code, so bands that share wavelength and bandwidth get different
    kernels. It is zero-initialised when importing a published model, which keeps it exact.
    """

    #: Valid ranges (nm) of the Fourier encoding's inputs.
    WAVELENGTH_RANGE: tuple[float, float] = (100.0, 1e9)
    BANDWIDTH_RANGE: tuple[float, float] = (1.0, 1e9)

    def __init__(
        self,
        hyper_dim: int,
        kernel_size: int,
        embed_dim: int,
        encoding: SpectralEncoding = "fourier",
        identities: Sequence[str] = (),
    ) -> None:
        """Create the hypernetwork; ``identities`` lists the band-identity keys it knows."""
        super().__init__(hyper_dim, kernel_size, embed_dim)
        self.encoding: SpectralEncoding = encoding
        self.identities: tuple[str, ...] = tuple(identities)
        self.identity: nn.Embedding | None = None
        if self.identities:
            self.identity = nn.Embedding(len(self.identities), hyper_dim)
            nn.init.normal_(self.identity.weight, std=0.02)

    def codes(
        self,
        wavelengths: Tensor,
        bandwidths: Tensor | None,
        identities: Sequence[str | None] | None = None,
    ) -> Tensor:
        """Return ``[C, hyper_dim]`` codes of ``C`` bands.

        Args:
            wavelengths: ``[C]`` central wavelengths (nm; micrometres for ``"sincos"``).
            bandwidths: ``[C]`` bandwidths in nm (``"fourier"`` only).
            identities: Identity key per band, or ``None`` entries for bands without one.
        """
        if self.encoding == "sincos":
            code = sincos_code(wavelengths, self.hyper_dim)
        else:
            if bandwidths is None:
                raise ValueError("the Fourier band code needs bandwidths")
            code = fourier_features(wavelengths, 100.0, 1e9, self.hyper_dim) + fourier_features(
                bandwidths, 1.0, 1e9, self.hyper_dim
            )
        if self.identity is not None and identities is not None:
            index = [self.identities.index(k) if k in self.identities else -1 for k in identities]
            if any(i >= 0 for i in index):
                idx = torch.tensor([max(i, 0) for i in index], device=code.device)
                keep = torch.tensor([i >= 0 for i in index], device=code.device).unsqueeze(1)
                code = code + self.identity(idx) * keep.to(code.dtype)
        return code


class VariableHypernet(_Hypernet):
    """Hypernetwork for non-spectral variables, described by an embedding of their name.

    The code is ``llm_proj(e_llm) + text_proj(e_text)``: ``e_llm`` is a row of the published
    Copernicus-FM table of Llama-3.2-1B embeddings (2048-d, five names; imported models only) and
    ``e_text`` the all-MiniLM-L6-v2 sentence embedding of the name (384-d, any name; see
    :mod:`thinkingearth.models.text`). An imported model starts with ``text_proj`` at zero, so its
    kernels are the published ones until it is fine-tuned.
    """

    def __init__(
        self,
        hyper_dim: int,
        kernel_size: int,
        embed_dim: int,
        llm_embed_dim: int = 0,
        text_embed_dim: int = 384,
    ) -> None:
        """Create the hypernetwork with the name-embedding projections that are enabled (> 0)."""
        super().__init__(hyper_dim, kernel_size, embed_dim)
        self.llm_proj = nn.Linear(llm_embed_dim, hyper_dim) if llm_embed_dim > 0 else None
        self.text_proj = nn.Linear(text_embed_dim, hyper_dim) if text_embed_dim > 0 else None

    def text_path_is_zero(self) -> bool:
        """True when the text projection is absent or exactly zero (it then adds nothing)."""
        proj = self.text_proj
        return proj is None or not (bool(proj.weight.any()) or bool(proj.bias.any()))

    def codes(self, llm_embed: Tensor | None, text_embed: Tensor | None) -> Tensor:
        """Return the ``[1, hyper_dim]`` code of one variable from its name embeddings."""
        code: Tensor | None = None
        if self.llm_proj is not None:
            if llm_embed is None:
                llm_embed = torch.zeros(
                    self.llm_proj.in_features, device=self.llm_proj.weight.device
                )
            code = self.llm_proj(llm_embed.reshape(1, -1).to(self.llm_proj.weight.dtype))
        if self.text_proj is not None and text_embed is not None:
            text_code = self.text_proj(text_embed.reshape(1, -1).to(self.text_proj.weight.dtype))
            code = text_code if code is None else code + text_code
        if code is None:
            raise ValueError("the variable hypernetwork got no name embedding")
        return code
