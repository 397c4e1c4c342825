"""Exact fp32 CPU inference path: the ViT trunk and patch embedding as fused oneDNN calls.

In eval mode without autograd, on CPU and in float32, :class:`~.encoder.Encoder` runs its timm
blocks through this module instead of their ``forward``. It computes the same function (to
float32 rounding; differences to the plain path are ~1e-6) with fewer, faster kernels:

* every linear layer is one oneDNN matrix product (``torch.ops.mkldnn._linear_pointwise``), which
  on AVX-512 CPUs runs the ViT shapes faster than the MKL ``addmm`` behind ``nn.Linear`` (which
  also first copies the bias into its output);
* the bias and the exact (erf) GELU of the first MLP layer are fused into its product;
* both residual additions are fused into the products of ``attn.proj`` and ``mlp.fc2``;
* attention is PyTorch's fused ``scaled_dot_product_attention`` on strided views of the QKV
  product (no copies of q, k, v);
* the patch convolution (stride = kernel size) is one matrix product over the image's patches.

The weights are used as they are (no pre-packed copies), so nothing derived from them is cached
and a weight change takes effect at once. Blocks of another structure than timm's plain ViT
block (layer scale, QK norm, gated attention, tanh GELU, ...) fall back to their own ``forward``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import Tensor, nn

__all__ = ["fusable", "onednn_available", "patch_embed", "run_block"]


@functools.cache
def onednn_available() -> bool:
    """Whether this PyTorch build has working oneDNN fused linear kernels (checked once)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        linear = torch.ops.mkldnn._linear_pointwise
        x = torch.linspace(-1.0, 1.0, 8).reshape(2, 4)
        w = torch.linspace(-0.5, 0.5, 12).reshape(3, 4)
        b = torch.tensor([0.1, -0.2, 0.3])
        other = torch.ones(2, 3)
        with torch.no_grad():
            ok = torch.allclose(linear(x, w, b, "none", [], ""), F.linear(x, w, b), atol=1e-6)
            gelu = linear(x, w, b, "gelu", [], "none")
            ok = ok and torch.allclose(gelu, F.gelu(F.linear(x, w, b)), atol=1e-6)
            added = linear.binary(x, other, w, b, "add")
            ok = ok and torch.allclose(added, F.linear(x, w, b) + other, atol=1e-6)
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return bool(ok)


def _identity(module: object) -> bool:
    return module is None or isinstance(module, nn.Identity)


def fusable(block: nn.Module) -> bool:
    """Whether :func:`run_block` computes exactly what ``block.forward`` computes in eval mode."""
    if not isinstance(block, Block):
        return False
    attn, mlp = block.attn, block.mlp
    plain_attention = (
        all(_identity(getattr(attn, name, None)) for name in ("q_norm", "k_norm", "norm"))
        and getattr(attn, "gate", None) is None
        and isinstance(attn.qkv, nn.Linear)
        and isinstance(attn.proj, nn.Linear)
        and attn.qkv.out_features == 3 * attn.num_heads * attn.head_dim
    )
    plain_mlp = (
        isinstance(getattr(mlp, "fc1", None), nn.Linear)
        and isinstance(getattr(mlp, "fc2", None), nn.Linear)
        and isinstance(getattr(mlp, "act", None), nn.GELU)
        and mlp.act.approximate == "none"
        and _identity(getattr(mlp, "norm", None))
    )
    return (
        plain_attention
        and plain_mlp
        and isinstance(block.norm1, nn.LayerNorm)
        and isinstance(block.norm2, nn.LayerNorm)
        and all(_identity(getattr(block, n, None)) for n in ("ls1", "ls2"))
    )


def _layer_norm(x: Tensor, norm: nn.LayerNorm) -> Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def run_block(block: Block, x: Tensor, batch: int) -> Tensor:
    """Apply a timm ViT block (eval mode) to tokens flattened to ``[B * N, D]`` (contiguous).

    Args:
        block: A block for which :func:`fusable` is true.
        x: ``[B * N, D]`` float32 tokens, batch-major.
        batch: ``B``.

    Returns:
        The block's output, ``[B * N, D]`` (a new tensor; ``x`` is not modified).
    """
    linear = torch.ops.mkldnn._linear_pointwise
    rows = x.shape[0]
    attn = block.attn
    heads, head_dim = attn.num_heads, attn.head_dim
    h = _layer_norm(x, block.norm1)
    qkv = linear(h, attn.qkv.weight, attn.qkv.bias, "none", [], "")
    qkv = qkv.view(batch, rows // batch, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    o = F.scaled_dot_product_attention(q, k, v)  # scale head_dim ** -0.5, as timm's
    o = o.transpose(1, 2).reshape(rows, heads * head_dim)
    x = linear.binary(o, x, attn.proj.weight, attn.proj.bias, "add")  # x + proj(o)
    h = _layer_norm(x, block.norm2)
    h = linear(h, block.mlp.fc1.weight, block.mlp.fc1.bias, "gelu", [], "none")  # erf GELU
    return linear.binary(h, x, block.mlp.fc2.weight, block.mlp.fc2.bias, "add")  # x + fc2(h)


def patch_embed(
    image: Tensor, kernel: Tensor, bias: Tensor, stride: int, padding: int
) -> tuple[Tensor, int, int]:
    """``conv2d(image, kernel, bias, stride, padding)`` with ``stride`` = kernel size, as tokens.

    Args:
        image: ``[B, C, H, W]`` float32.
        kernel: ``[D, C, p, p]`` with ``p == stride``.
        bias: ``[D]``.
        stride: The patch size ``p``.
        padding: Zero padding on every side.

    Returns:
        Tokens ``[B, h * w, D]`` (row-major patch order, as ``conv2d(...).flatten(2).mT``) and
        the patch grid ``(h, w)``.
    """
    b, c, height, width = image.shape
    d = kernel.shape[0]
    p = stride
    gh = (height + 2 * padding - p) // p + 1
    gw = (width + 2 * padding - p) // p + 1
    if padding:
        image = F.pad(image, (padding, padding, padding, padding))
    image = image[:, :, : gh * p, : gw * p]
    patches = image.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(b * gh * gw, c * p * p)
    tokens = torch.ops.mkldnn._linear_pointwise(
        patches, kernel.reshape(d, c * p * p), bias, "none", [], ""
    )
    return tokens.view(b, gh * gw, d), gh, gw
