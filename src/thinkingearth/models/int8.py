"""Fast int8 CPU inference: the encoder's trunk as a dynamically quantised ONNX Runtime graph.

The hypernetwork patch embedding (dynamic kernels, any band set) stays in PyTorch; the trunk
(the transformer blocks, mean pooling of the patch tokens and ``fc_norm``) is exported to ONNX
once, its linear layers' weights are quantised to int8 per output channel by
:func:`onnxruntime.quantization.quantize_dynamic` (activations are quantised per call, so no
calibration data is needed), and ONNX Runtime runs it with VNNI int8 kernels where the CPU has
them. The graph takes tokens ``[B, N, D]`` with dynamic ``B`` and ``N``: the band set, patch
size and image size only change the tokens, so one graph serves them all.

Graphs are files in a cache directory, named by a digest of the trunk's weights, its
configuration and the library versions: a temporary directory removed with the encoder by
default, or a directory the caller names (then they are reused across runs). Nothing is ever
written beside the checkpoint. Any change of the weights in memory rebuilds the graph.

Why ONNX Runtime (measured on the benchmark machine, ViT-B trunk, batch 8, see
``benchmarks/README.md``): PyTorch's own dynamic quantisation of ``nn.Linear`` gained ~1.07x;
ONNX Runtime's dynamic int8 ~2.3-3x at cosine similarity > 0.999 to fp32.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import warnings
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from thinkingearth.errors import UserInputError
from thinkingearth.resources import release_freed_memory

if TYPE_CHECKING:
    from thinkingearth.models.encoder import Encoder

__all__ = [
    "INSTALL_HINT",
    "Int8Trunk",
    "OnnxRuntimeUnavailableError",
    "build_int8_graph",
    "require_onnxruntime",
]

#: How to install the optional dependencies of the int8 path.
INSTALL_HINT = "pip install 'thinkingearth[onnx]'"
#: Bump when the exported graph changes, so cached files of older versions are not reused.
_GRAPH_VERSION = 1
_OPSET = 17


class OnnxRuntimeUnavailableError(UserInputError):
    """``precision="int8"`` was asked for but onnxruntime / onnx are not installed."""


def require_onnxruntime() -> None:
    """Raise a one-line :class:`OnnxRuntimeUnavailableError` unless the int8 path can run."""
    missing = [m for m in ("onnxruntime", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        raise OnnxRuntimeUnavailableError(
            f"precision='int8' runs the encoder with ONNX Runtime, and {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed: {INSTALL_HINT}"
        )


class _Trunk(nn.Module):
    """Blocks, mean pooling of the patch tokens and ``fc_norm``: what the graph computes."""

    def __init__(self, blocks: nn.ModuleList, norm: nn.Module) -> None:
        super().__init__()
        self.blocks = blocks
        self.fc_norm = norm

    def forward(self, tokens: Tensor) -> Tensor:
        for block in self.blocks:
            tokens = block(tokens)
        return self.fc_norm(tokens[:, 1:].mean(dim=1))


def _trunk_tensors(encoder: Encoder) -> list[Tensor]:
    return [
        *encoder.blocks.parameters(),
        *encoder.blocks.buffers(),
        *encoder.fc_norm.parameters(),
    ]


def _versions(tensors: Sequence[Tensor]) -> tuple[tuple[int, int], ...]:
    return tuple((t.data_ptr(), -1 if t.is_inference() else t._version) for t in tensors)


def _digest(encoder: Encoder, per_channel: bool) -> str:
    import onnxruntime

    digest = hashlib.blake2b(digest_size=16)
    header = {
        "graph": _GRAPH_VERSION,
        "opset": _OPSET,
        "per_channel": per_channel,
        "config": encoder.config.to_dict(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    state = {**encoder.blocks.state_dict(prefix="blocks."), **encoder.fc_norm.state_dict()}
    for name in sorted(state):
        value = state[name].detach().to("cpu", torch.float32).contiguous()
        digest.update(name.encode())
        digest.update(np.asarray(value.shape, dtype=np.int64).tobytes())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


class _DropQuantisationAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's and the quantiser's advice (warnings and root-logger lines)."""
    root = logging.getLogger()
    advice = _DropQuantisationAdvice()
    root.addFilter(advice)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeFilter(advice)


def _export_fp32(encoder: Encoder, path: Path) -> None:
    trunk = _Trunk(encoder.blocks, encoder.fc_norm)
    modes = [(module, module.training) for module in trunk.modules()]
    trunk.eval()  # the blocks only: the encoder's own mode (and kernel cache) stay as they are
    device = encoder.cls_token.device
    tokens = torch.zeros(2, 1 + encoder.grid * encoder.grid, encoder.embed_dim, device=device)
    try:
        _export_module(trunk, tokens, path)
    finally:
        for module, mode in modes:
            module.training = mode


def _export_module(trunk: nn.Module, tokens: Tensor, path: Path) -> None:
    with torch.no_grad():
        torch.onnx.export(
            trunk,
            (tokens,),
            str(path),
            dynamo=False,  # the TorchScript exporter needs no onnxscript
            input_names=["tokens"],
            output_names=["pooled"],
            dynamic_axes={"tokens": {0: "batch", 1: "tokens"}, "pooled": {0: "batch"}},
            opset_version=_OPSET,
            do_constant_folding=True,
        )


def build_int8_graph(encoder: Encoder, directory: Path, per_channel: bool = True) -> Path:
    """Export and quantise the trunk of ``encoder`` into ``directory`` (reused when present).

    Args:
        encoder: The encoder (its current weights).
        directory: Cache directory; created if needed.
        per_channel: Quantise weights per output channel (else per tensor).

    Returns:
        Path of the int8 ``.onnx`` file.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    directory.mkdir(parents=True, exist_ok=True)
    kind = "pc" if per_channel else "pt"
    target = directory / f"trunk-{_digest(encoder, per_channel)}-int8{kind}.onnx"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as scratch:
        fp32 = Path(scratch) / "trunk-fp32.onnx"
        int8 = Path(scratch) / "trunk-int8.onnx"
        with _quiet():
            _export_fp32(encoder, fp32)
            quantize_dynamic(
                fp32,
                int8,
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                extra_options={"MatMulConstBOnly": True},  # weights only, not q @ k
            )
        os.replace(int8, target)  # complete files only
    return target


class Int8Trunk:
    """The int8 ONNX Runtime trunk of an encoder, rebuilt whenever the encoder's weights change.

    Args:
        cache_dir: Where the quantised graphs go; ``None``: a private temporary directory,
            removed when this object is.
        per_channel: Per-output-channel weight quantisation (default) or per tensor.
        threads: ONNX Runtime intra-op threads; ``None``: ``torch.get_num_threads()`` (the
            cores PyTorch uses).

    Raises:
        OnnxRuntimeUnavailableError: Without onnxruntime / onnx.
    """

    def __init__(
        self,
        cache_dir: str | Path | None = None,
        *,
        per_channel: bool = True,
        threads: int | None = None,
    ) -> None:
        """Check that ONNX Runtime is installed; the graph is built at the first call."""
        require_onnxruntime()
        self._setup(cache_dir, per_channel, threads)

    def _setup(self, cache_dir: str | Path | None, per_channel: bool, threads: int | None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.per_channel = per_channel
        self.threads = threads
        self.path: Path | None = None
        #: Seconds the last (re)build took: export + quantisation + session creation.
        self.build_seconds = 0.0
        self._session: Any = None
        self._versions: tuple[tuple[int, int], ...] = ()
        self._temp: Path | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> Int8Trunk:
        """Copies share the settings, not the session (it is rebuilt on first use)."""
        return Int8Trunk(self.cache_dir, per_channel=self.per_channel, threads=self.threads)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the settings only."""
        return {
            "cache_dir": self.cache_dir,
            "per_channel": self.per_channel,
            "threads": self.threads,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`__getstate__`."""
        self._setup(state["cache_dir"], state["per_channel"], state["threads"])

    def _directory(self) -> Path:
        if self.cache_dir is not None:
            return self.cache_dir
        if self._temp is None:
            self._temp = Path(tempfile.mkdtemp(prefix="thinkingearth-int8-"))
            weakref.finalize(self, shutil.rmtree, self._temp, True)
        return self._temp

    def prepare(self, encoder: Encoder) -> None:
        """Build (or reuse) the graph and session for the encoder's current weights."""
        import time

        import onnxruntime as ort

        versions = _versions(_trunk_tensors(encoder))
        if self._session is not None and versions == self._versions:
            return
        start = time.perf_counter()
        self._session = None
        path = build_int8_graph(encoder, self._directory(), self.per_channel)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(self.threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path = path
        self._versions = versions
        release_freed_memory()  # the export's and quantiser's buffers (~1 GB for ViT-B)
        self.build_seconds = time.perf_counter() - start

    def __call__(self, encoder: Encoder, tokens: Tensor) -> Tensor:
        """Pooled features ``[B, D]`` of tokens ``[B, N, D]`` (class token first)."""
        self.prepare(encoder)
        array = tokens.detach().to("cpu", torch.float32).contiguous().numpy()
        (pooled,) = self._session.run(["pooled"], {"tokens": array})
        return torch.from_numpy(pooled).to(tokens.device)
