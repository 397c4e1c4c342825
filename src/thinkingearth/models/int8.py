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

Dense heads read feature maps after several blocks, not pooled features: :class:`Int8Levels`
exports the blocks up to the deepest one asked for, with the patch tokens after each asked-for
block as the graph's outputs (optionally through ``fc_norm``), quantised the same way; the
task models of scene prediction use it (:mod:`thinkingearth.infer.task_model`).

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
    "Int8Levels",
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


class _LevelsTrunk(nn.Module):
    """The blocks up to the deepest level; the patch tokens after each level's block."""

    def __init__(
        self, blocks: nn.ModuleList, norm: nn.Module, levels: tuple[int, ...], apply_norm: bool
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(list(blocks)[: max(levels) + 1])
        self.fc_norm = norm
        self.levels = levels
        self.apply_norm = apply_norm

    def forward(self, tokens: Tensor) -> tuple[Tensor, ...]:
        found: list[Tensor] = []
        for i, block in enumerate(self.blocks):
            tokens = block(tokens)
            if i in self.levels:
                patches = tokens[:, 1:]
                found.append(self.fc_norm(patches) if self.apply_norm else patches)
        return tuple(found)


def _trunk_tensors(encoder: Encoder) -> list[Tensor]:
    return [
        *encoder.blocks.parameters(),
        *encoder.blocks.buffers(),
        *encoder.fc_norm.parameters(),
    ]


def _versions(tensors: Sequence[Tensor]) -> tuple[tuple[int, int], ...]:
    return tuple((t.data_ptr(), -1 if t.is_inference() else t._version) for t in tensors)


def _digest(
    encoder: Encoder, per_channel: bool, levels: tuple[int, ...] | None = None, norm: bool = False
) -> str:
    import onnxruntime

    digest = hashlib.blake2b(digest_size=16)
    header: dict[str, Any] = {
        "graph": _GRAPH_VERSION,
        "opset": _OPSET,
        "per_channel": per_channel,
        "config": encoder.config.to_dict(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    if levels is not None:  # pooled graphs keep the digests (and cached files) they had
        header.update(levels=list(levels), norm=norm)
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


def _level_names(levels: Sequence[int]) -> list[str]:
    return [f"level{i}" for i in levels]


def _export_fp32(
    encoder: Encoder, path: Path, levels: tuple[int, ...] | None = None, norm: bool = False
) -> None:
    trunk: nn.Module
    if levels is None:
        trunk = _Trunk(encoder.blocks, encoder.fc_norm)
        outputs = {"pooled": {0: "batch"}}
    else:
        trunk = _LevelsTrunk(encoder.blocks, encoder.fc_norm, levels, norm)
        outputs = {name: {0: "batch", 1: "patches"} for name in _level_names(levels)}
    modes = [(module, module.training) for module in trunk.modules()]
    trunk.eval()  # the blocks only: the encoder's own mode (and kernel cache) stay as they are
    device = encoder.cls_token.device
    tokens = torch.zeros(2, 1 + encoder.grid * encoder.grid, encoder.embed_dim, device=device)
    try:
        _export_module(trunk, tokens, path, outputs)
    finally:
        for module, mode in modes:
            module.training = mode


def _export_module(
    trunk: nn.Module, tokens: Tensor, path: Path, outputs: dict[str, dict[int, str]]
) -> None:
    with torch.no_grad():
        torch.onnx.export(
            trunk,
            (tokens,),
            str(path),
            dynamo=False,  # the TorchScript exporter needs no onnxscript
            input_names=["tokens"],
            output_names=list(outputs),
            dynamic_axes={"tokens": {0: "batch", 1: "tokens"}, **outputs},
            opset_version=_OPSET,
            do_constant_folding=True,
        )


def _resolve_levels(levels: Sequence[int], depth: int) -> tuple[int, ...]:
    """Block indices counted from 0 (negative ones from the end), checked against the depth."""
    resolved = tuple(int(i) + depth if int(i) < 0 else int(i) for i in levels)
    if not resolved or any(not 0 <= i < depth for i in resolved):
        raise UserInputError(f"block indices {tuple(levels)} outside 0..{depth - 1}")
    return resolved


def build_int8_graph(
    encoder: Encoder,
    directory: Path,
    per_channel: bool = True,
    *,
    levels: Sequence[int] | None = None,
    norm: bool = False,
) -> Path:
    """Export and quantise the trunk of ``encoder`` into ``directory`` (reused when present).

    Args:
        encoder: The encoder (its current weights).
        directory: Cache directory; created if needed.
        per_channel: Quantise weights per output channel (else per tensor).
        levels: ``None``: the pooled graph (output ``pooled`` ``[B, D]``). Block indices: the
            graph of the blocks up to the deepest one, with one output ``level<i>`` ``[B, N-1,
            D]`` (the patch tokens after block ``i``) per distinct index, in increasing order.
        norm: With ``levels``: put each level's tokens through ``fc_norm``.

    Returns:
        Path of the int8 ``.onnx`` file.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    wanted = None
    if levels is not None:
        wanted = tuple(sorted(set(_resolve_levels(levels, len(encoder.blocks)))))
    directory.mkdir(parents=True, exist_ok=True)
    kind = "pc" if per_channel else "pt"
    prefix = "trunk" if wanted is None else "levels"
    target = directory / f"{prefix}-{_digest(encoder, per_channel, wanted, norm)}-int8{kind}.onnx"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as scratch:
        fp32 = Path(scratch) / "trunk-fp32.onnx"
        int8 = Path(scratch) / "trunk-int8.onnx"
        with _quiet():
            _export_fp32(encoder, fp32, wanted, norm)
            quantize_dynamic(
                fp32,
                int8,
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                extra_options={"MatMulConstBOnly": True},  # weights only, not q @ k
            )
        os.replace(int8, target)  # complete files only
    return target


class _Int8Graph:
    """An int8 ONNX Runtime graph of an encoder's trunk, rebuilt when the weights change.

    Subclasses say which graph (:meth:`_build`) and what its outputs mean, and whether ONNX
    Runtime's threads may busy-wait between runs (:attr:`_spin`: right when the graph's output is
    the result, wrong when PyTorch work follows on the same cores).
    """

    _spin = True

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

    def _settings(self) -> dict[str, Any]:
        return {
            "cache_dir": self.cache_dir,
            "per_channel": self.per_channel,
            "threads": self.threads,
        }

    def __deepcopy__(self, memo: dict[int, Any]) -> _Int8Graph:
        """Copies share the settings, not the session (it is rebuilt on first use)."""
        settings = self._settings()
        return type(self)(settings.pop("cache_dir"), **settings)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the settings only."""
        return self._settings()

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

    def _build(self, encoder: Encoder, directory: Path) -> Path:
        raise NotImplementedError

    def prepare(self, encoder: Encoder) -> None:
        """Build (or reuse) the graph and session for the encoder's current weights."""
        import time

        import onnxruntime as ort

        versions = _versions(_trunk_tensors(encoder))
        if self._session is not None and versions == self._versions:
            return
        start = time.perf_counter()
        self._session = None
        path = self._build(encoder, self._directory())
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(self.threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not self._spin:
            # ONNX Runtime's threads busy-wait after each run by default, competing for the
            # cores with the PyTorch work that follows (a dense head). On the loaded 2-core
            # benchmark machine the gain was within the noise (network 1.63x / 1.77x over fp32
            # without spinning, 1.51x / 1.67x with), so this rests on how spinning works.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path = path
        self._versions = versions
        release_freed_memory()  # the export's and quantiser's buffers (~1 GB for ViT-B)
        self.build_seconds = time.perf_counter() - start

    def _run(self, encoder: Encoder, tokens: Tensor, outputs: list[str]) -> list[np.ndarray]:
        self.prepare(encoder)
        array = tokens.detach().to("cpu", torch.float32).contiguous().numpy()
        return list(self._session.run(outputs, {"tokens": array}))


class Int8Trunk(_Int8Graph):
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

    def _build(self, encoder: Encoder, directory: Path) -> Path:
        return build_int8_graph(encoder, directory, self.per_channel)

    def __call__(self, encoder: Encoder, tokens: Tensor) -> Tensor:
        """Pooled features ``[B, D]`` of tokens ``[B, N, D]`` (class token first)."""
        (pooled,) = self._run(encoder, tokens, ["pooled"])
        return torch.from_numpy(pooled).to(tokens.device)


class Int8Levels(_Int8Graph):
    """Feature maps after chosen blocks, as :meth:`.Encoder.forward_intermediates` gives them,
    from an int8 ONNX Runtime graph of the blocks up to the deepest one.

    Args:
        cache_dir: Where the quantised graphs go; ``None``: a private temporary directory,
            removed when this object is.
        indices: Block indices (negative counts from the end), duplicates allowed.
        norm: Put each map's tokens through ``fc_norm``.
        per_channel: Per-output-channel weight quantisation (default) or per tensor.
        threads: ONNX Runtime intra-op threads; ``None``: ``torch.get_num_threads()``.

    Raises:
        OnnxRuntimeUnavailableError: Without onnxruntime / onnx.
    """

    _spin = False  # a dense head runs in PyTorch right after each call

    def __init__(
        self,
        cache_dir: str | Path | None = None,
        *,
        indices: Sequence[int],
        norm: bool = False,
        per_channel: bool = True,
        threads: int | None = None,
    ) -> None:
        """Keep the settings; the graph is built at the first call."""
        self.indices = tuple(int(i) for i in indices)
        self.norm = bool(norm)
        super().__init__(cache_dir, per_channel=per_channel, threads=threads)

    def _settings(self) -> dict[str, Any]:
        return {**super()._settings(), "indices": self.indices, "norm": self.norm}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`__getstate__`."""
        self.indices = tuple(state["indices"])
        self.norm = bool(state["norm"])
        super().__setstate__(state)

    def _build(self, encoder: Encoder, directory: Path) -> Path:
        return build_int8_graph(
            encoder, directory, self.per_channel, levels=self.indices, norm=self.norm
        )

    def __call__(self, encoder: Encoder, tokens: Tensor, grid: tuple[int, int]) -> list[Tensor]:
        """One ``[B, D, h, w]`` map per index, in the order of ``indices``.

        Args:
            encoder: The encoder whose blocks the graph holds.
            tokens: ``[B, 1 + h*w, D]`` (class token first), from :meth:`.Encoder.embed`.
            grid: The patch grid ``(h, w)`` of the tokens.
        """
        wanted = _resolve_levels(self.indices, len(encoder.blocks))
        distinct = sorted(set(wanted))
        arrays = self._run(encoder, tokens, _level_names(distinct))
        b, h, w = tokens.shape[0], int(grid[0]), int(grid[1])
        maps = {
            i: torch.from_numpy(a).to(tokens.device).transpose(1, 2).reshape(b, -1, h, w)
            for i, a in zip(distinct, arrays, strict=True)
        }
        return [maps[i] for i in wanted]
