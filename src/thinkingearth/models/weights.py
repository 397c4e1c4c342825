"""Named configurations, our safetensors format, and exact import of published checkpoints.

Named configurations (timm-style registry, :func:`list_models`):

* ``thinkingearth_vit_{tiny,small,base,large}``: new models with all our improvements.
* ``copernicusfm_vit_base``: the architecture of Copernicus-FM ViT-B (Wang et al. 2025).
* ``dofa_vit_base``, ``dofa_vit_large``: the architecture of DOFA ViT-B/L (Xiong et al. 2024).

Our checkpoints are two files side by side: ``<name>.safetensors`` (tensors) and ``<name>.json``
(format marker, the :class:`EncoderConfig`, names of registered Llama embeddings).

:func:`load` recognises the format of a file:

* ``*.safetensors`` / ``*.json``: our format.
* ``*.pth`` / ``*.pt``: a published checkpoint, read with ``torch.load(weights_only=True)``:
  Copernicus-FM (``CopernicusFM_ViT_base_varlang_e100.pth`` as published, with or without its
  ``"model"`` wrapper, or torchgeo's ``copernicusfm_base().state_dict()``) and DOFA
  (``DOFA_ViT_base_e100.pth`` / large as published, or torchgeo's ``dofa_*`` state dicts).

Imported models compute exactly what the reference implementation computes; the parts we add
(band identity, text projection, year code) are zero-initialised so they change nothing until
fine-tuned. Two details of the references are kept:

* The published checkpoints carry no ``fc_norm`` (MAE pre-training); like the references we
  use a fresh LayerNorm (weight 1, bias 0) there.
* Copernicus-FM's original code uses LayerNorm eps 1e-6, torchgeo's port 1e-5.
  ``reference="auto"`` takes 1e-6 for a file in the published layout (``"model"`` wrapper or
  MAE-only keys such as ``norm.weight``, or the published file name) and 1e-5 otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from thinkingearth.errors import UserInputError
from thinkingearth.fileio import atomic_file
from thinkingearth.models.encoder import Encoder, EncoderConfig, Precision
from thinkingearth.models.int8 import require_onnxruntime

__all__ = [
    "CONFIGS",
    "FORMAT",
    "CheckpointFormatError",
    "create_encoder",
    "import_state_dict",
    "list_models",
    "load",
    "register_config",
    "save",
    "training_checkpoint_error",
]

#: Format marker written to our JSON files.
FORMAT: str = "thinkingearth.encoder"
_FORMAT_VERSION = 1

Reference = Literal["auto", "original", "torchgeo"]


class CheckpointFormatError(UserInputError):
    """A checkpoint file whose format :func:`load` does not recognise."""


_NEW = dict(conv_padding=0, band_convention="physical", spectral_encoding="fourier")
_CFM = dict(
    conv_padding=1,
    band_convention="copernicusfm",
    spectral_encoding="fourier",
    llm_embed_dim=2048,
    text_embed_dim=384,
    metadata=True,
    variables=True,
)
_DOFA = dict(
    conv_padding=1,
    band_convention="dofa",
    spectral_encoding="sincos",
    variables=False,
    llm_embed_dim=0,
    text_embed_dim=0,
    metadata=False,
    time_year=False,
)

CONFIGS: dict[str, EncoderConfig] = {}


def register_config(config: EncoderConfig) -> EncoderConfig:
    """Add a named configuration to the registry (replacing one of the same name)."""
    CONFIGS[config.name] = config
    return config


for _name, _dim, _depth, _heads in (
    ("tiny", 192, 12, 3),
    ("small", 384, 12, 6),
    ("base", 768, 12, 12),
    ("large", 1024, 24, 16),
):
    register_config(
        EncoderConfig(
            name=f"thinkingearth_vit_{_name}",
            embed_dim=_dim,
            depth=_depth,
            num_heads=_heads,
            **_NEW,  # type: ignore[arg-type]
        )
    )
register_config(
    EncoderConfig(name="copernicusfm_vit_base", embed_dim=768, depth=12, num_heads=12, **_CFM)  # type: ignore[arg-type]
)
register_config(
    EncoderConfig(name="dofa_vit_base", embed_dim=768, depth=12, num_heads=12, **_DOFA)  # type: ignore[arg-type]
)
register_config(
    EncoderConfig(name="dofa_vit_large", embed_dim=1024, depth=24, num_heads=16, **_DOFA)  # type: ignore[arg-type]
)


def list_models() -> list[str]:
    """Names of the registered configurations, sorted."""
    return sorted(CONFIGS)


def create_encoder(name: str, **overrides: Any) -> Encoder:
    """Create a randomly initialised encoder from a named configuration.

    Args:
        name: A name from :func:`list_models`.
        **overrides: Configuration fields to change (e.g. ``depth=2``, ``img_size=64``).

    Raises:
        UserInputError: For an unknown name or configuration field.
    """
    if name not in CONFIGS:
        raise UserInputError(f"unknown model {name!r}; expected one of: {', '.join(list_models())}")
    fields = {f.name for f in dataclasses.fields(EncoderConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise UserInputError(f"unknown config fields {unknown}; expected some of {sorted(fields)}")
    return Encoder(dataclasses.replace(CONFIGS[name], **overrides))


# ----------------------------------------------------------------------------------------------
# Our format
# ----------------------------------------------------------------------------------------------

#: The safetensors entry holding an encoder's language-embedding table (one row per name, in
#: the order of the JSON's ``language_keys``); shared by every file that stores an encoder.
LANGUAGE_TABLE_KEY = "__language_table__"


def pack_language_table(encoder: Encoder) -> tuple[list[str], dict[str, torch.Tensor]]:
    """The encoder's language table as ``(sorted names, {LANGUAGE_TABLE_KEY: rows})`` (empty if
    it has none), to store beside its state dict."""
    keys = sorted(encoder.language_table)
    if not keys:
        return keys, {}
    return keys, {LANGUAGE_TABLE_KEY: torch.stack([encoder.language_table[k] for k in keys])}


def unpack_language_table(
    encoder: Encoder, table: torch.Tensor | None, keys: list[str] | None
) -> None:
    """Give the rows of a stored table (``tensors.pop(LANGUAGE_TABLE_KEY, None)``, taken out
    before ``load_state_dict``) to ``encoder`` under ``keys``."""
    if table is not None and keys:
        encoder.set_language_embeddings(dict(zip(keys, table, strict=True)))


def _paths(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    base = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def save(encoder: Encoder, path: str | Path) -> Path:
    """Save an encoder as ``<path>.safetensors`` plus ``<path>.json`` (its configuration).

    Args:
        encoder: The encoder.
        path: Target path, with or without the ``.safetensors`` suffix.

    Returns:
        The path of the ``.safetensors`` file.
    """
    tensors_path, config_path = _paths(path)
    tensors_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in encoder.state_dict().items()}
    keys, table = pack_language_table(encoder)
    tensors.update(table)
    # Tensors first, the JSON that names them last, each complete or absent (no half files).
    with atomic_file(tensors_path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
    header = {
        "format": FORMAT,
        "format_version": _FORMAT_VERSION,
        "config": encoder.config.to_dict(),
        "language_keys": keys,
    }
    with atomic_file(config_path) as tmp:
        tmp.write_text(json.dumps(header, indent=2) + "\n", encoding="utf-8")
    return tensors_path


def _load_ours(path: Path) -> Encoder:
    tensors_path, config_path = _paths(path)
    if not config_path.is_file() or not tensors_path.is_file():
        raise CheckpointFormatError(
            f"{path}: a ThinkingEarth checkpoint is a .safetensors file with a .json beside it; "
            f"missing {config_path if not config_path.is_file() else tensors_path}"
        )
    try:
        header = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointFormatError(f"{config_path}: not valid JSON ({error})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointFormatError(
            f"{config_path}: expected a JSON file with format {FORMAT!r}, found "
            f"{header.get('format') if isinstance(header, dict) else type(header).__name__!r}"
        )
    with torch.device("meta"):
        encoder = Encoder(EncoderConfig.from_dict(header["config"]))
    try:
        tensors = load_file(str(tensors_path))
    except Exception as error:  # safetensors raises its own error type for damaged files
        first = _first_line(error)
        raise CheckpointFormatError(
            f"{tensors_path}: not a readable safetensors file, truncated or damaged ({first})"
        ) from None
    table = tensors.pop(LANGUAGE_TABLE_KEY, None)
    missing, unexpected = encoder.load_state_dict(tensors, strict=False, assign=True)
    if missing or unexpected:
        raise CheckpointFormatError(
            f"{tensors_path}: tensors do not match the config (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]})"
        )
    unpack_language_table(encoder, table, header.get("language_keys"))
    return encoder.eval()


# ----------------------------------------------------------------------------------------------
# Published checkpoints
# ----------------------------------------------------------------------------------------------

_HYPERNET_RULES: tuple[tuple[str, str], ...] = (
    ("fclayer.", "fc_res."),
    ("weight_generator.transformer_encoder.", "generator.encoder."),
    ("weight_generator.weight_tokens", "generator.weight_tokens"),
    ("weight_generator.bias_token", "generator.bias_token"),
    ("weight_generator.fc_weight.", "generator.to_weight."),
    ("weight_generator.fc_bias.", "generator.to_bias."),
    ("language_proj.", "llm_proj."),
)
_CFM_TOP: Mapping[str, str] = {
    "coord_fc.": "meta.coord_fc.",
    "scale_fc.": "meta.area_fc.",
    "time_fc.": "meta.time_fc.",
    "coord_token": "meta.coord_token",
    "scale_token": "meta.area_token",
    "time_token": "meta.time_token",
}
_KEEP = ("cls_token", "pos_embed", "blocks.", "fc_norm.")
#: Keys of the published files that the encoder does not use (MAE pre-training, heads).
_DROP = re.compile(r"^(head\.|mask_token$|norm\.|projector\.|decoder|module\.head)")
_HEADS_BY_WIDTH: Mapping[int, int] = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}
_PUBLISHED_NAMES = ("CopernicusFM_ViT_base_varlang_e100",)


def _rename_hypernet(rest: str, prefix: str) -> str | None:
    for old, new in _HYPERNET_RULES:
        if rest.startswith(old):
            return prefix + new + rest[len(old) :]
    return None


def _map_keys(
    state: Mapping[str, Tensor], family: Literal["copernicusfm", "dofa"]
) -> dict[str, Tensor]:
    mapped: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        new: str | None = None
        if key.startswith(_KEEP):
            new = key
        elif family == "copernicusfm" and key.startswith("patch_embed_spectral."):
            new = _rename_hypernet(key[len("patch_embed_spectral.") :], "spectral.")
        elif family == "copernicusfm" and key.startswith("patch_embed_variable."):
            new = _rename_hypernet(key[len("patch_embed_variable.") :], "variable.")
        elif family == "dofa" and key.startswith("patch_embed."):
            new = _rename_hypernet(key[len("patch_embed.") :], "spectral.")
        elif family == "copernicusfm":
            for old, target in _CFM_TOP.items():
                if key.startswith(old):
                    new = target + key[len(old) :]
                    break
        if new is None:
            if _DROP.match(key):
                continue
            unknown.append(key)
            continue
        mapped[new] = value
    if unknown:
        raise CheckpointFormatError(
            f"unexpected keys in a {family} checkpoint: {unknown[:6]}"
            + (f" and {len(unknown) - 6} more" if len(unknown) > 6 else "")
        )
    return mapped


def _infer_config(
    state: Mapping[str, Tensor], family: Literal["copernicusfm", "dofa"], norm_eps: float
) -> EncoderConfig:
    prefix = "patch_embed_spectral." if family == "copernicusfm" else "patch_embed."
    try:
        width = int(state["cls_token"].shape[-1])
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        hidden = int(state["blocks.0.mlp.fc1.weight"].shape[0])
        hyper_dim = int(state[prefix + "weight_generator.weight_tokens"].shape[1])
        kernel_numel = int(state[prefix + "weight_generator.fc_weight.weight"].shape[0])
        positions = int(state["pos_embed"].shape[1]) - 1
    except (KeyError, ValueError, IndexError) as error:
        raise CheckpointFormatError(f"incomplete {family} checkpoint: missing {error}") from None
    kernel = math.isqrt(kernel_numel // width)
    grid = math.isqrt(positions)
    if kernel * kernel * width != kernel_numel or grid * grid != positions:
        raise CheckpointFormatError(f"{family} checkpoint with inconsistent kernel/position sizes")
    if width not in _HEADS_BY_WIDTH:
        raise CheckpointFormatError(
            f"{family} checkpoint of width {width}: the number of heads is not known; expected "
            f"one of widths {sorted(_HEADS_BY_WIDTH)}"
        )
    base = CONFIGS["copernicusfm_vit_base" if family == "copernicusfm" else "dofa_vit_base"]
    size = {384: "small", 768: "base", 1024: "large", 1280: "huge"}.get(width, str(width))
    llm_dim = 0
    if family == "copernicusfm":
        llm_weight = state.get("patch_embed_variable.language_proj.weight")
        llm_dim = int(llm_weight.shape[1]) if llm_weight is not None else 0
    return dataclasses.replace(
        base,
        name=f"{'copernicusfm' if family == 'copernicusfm' else 'dofa'}_vit_{size}",
        embed_dim=width,
        depth=depth,
        num_heads=_HEADS_BY_WIDTH[width],
        mlp_ratio=hidden / width,
        patch_size=kernel,
        img_size=grid * kernel,
        hyper_dim=hyper_dim,
        norm_eps=norm_eps,
        llm_embed_dim=llm_dim,
    )


_IMPROVEMENTS = ("spectral.identity.", "variable.text_proj.", "meta.year_fc.")


def _is_improvement(key: str) -> bool:
    return key.startswith(_IMPROVEMENTS)


def import_state_dict(
    state: Mapping[str, Tensor],
    *,
    reference: Reference = "torchgeo",
    source: str = "<state dict>",
    copy: bool = True,
) -> Encoder:
    """Build an encoder from a published Copernicus-FM or DOFA state dict.

    Args:
        state: Raw state dict (unwrapped).
        reference: ``"original"`` (authors' code) or ``"torchgeo"``; only Copernicus-FM's
            LayerNorm epsilon differs (1e-6 vs 1e-5). ``"auto"`` means torchgeo here.
        source: Name used in error messages.
        copy: Copy the tensors (``False`` lets the encoder own the given tensors).

    Returns:
        The encoder in eval mode.

    Raises:
        CheckpointFormatError: If the keys are neither layout.
    """
    if any(k.startswith("patch_embed_spectral.") for k in state):
        family: Literal["copernicusfm", "dofa"] = "copernicusfm"
    elif any(k.startswith("patch_embed.weight_generator.") for k in state):
        family = "dofa"
    else:
        sample = sorted(state)[:4]
        raise CheckpointFormatError(
            f"{source}: unknown checkpoint format (keys {sample} ...); expected a ThinkingEarth "
            "checkpoint (.safetensors + .json) or a Copernicus-FM / DOFA state dict"
        )
    eps = 1e-6 if family == "dofa" or reference == "original" else 1e-5
    config = _infer_config(state, family, eps)
    with torch.device("meta"):  # no random initialisation: every tensor comes from the file
        encoder = Encoder(config)
    mapped = _map_keys(state, family)
    expected = encoder.state_dict()
    unexpected = sorted(set(mapped) - set(expected))
    full: dict[str, Tensor] = {}
    missing: list[str] = []
    for key, template in expected.items():
        if key in mapped:
            if tuple(mapped[key].shape) != tuple(template.shape):
                raise CheckpointFormatError(
                    f"{source}: {key} has shape {tuple(mapped[key].shape)}, expected "
                    f"{tuple(template.shape)}"
                )
            full[key] = mapped[key].to(torch.float32, copy=copy)
        elif _is_improvement(key) or key == "fc_norm.bias":
            full[key] = torch.zeros(template.shape)  # our additions start neutral
        elif key == "fc_norm.weight":
            full[key] = torch.ones(template.shape)  # published files have no fc_norm
        else:
            missing.append(key)
    if unexpected or missing:
        raise CheckpointFormatError(
            f"{source}: {family} checkpoint does not fit (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]})"
        )
    encoder.load_state_dict(full, strict=True, assign=True)
    return encoder.eval()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def training_checkpoint_error(
    path: str | Path, *, expected: str, written_by: str, file: str
) -> CheckpointFormatError:
    """A run's Lightning checkpoint (``OUT/checkpoints/step-*.ckpt``) given for a model file.

    Args:
        path: The ``.ckpt`` given.
        expected: What was expected instead (``"an encoder"``).
        written_by: Whose output that is (``"a pretraining run's encoder"``).
        file: Its name in the run folder, which is named in the message when ``path`` lies in
            that run's ``checkpoints/``.
    """
    path = Path(path)
    out = path.parent.parent if path.parent.name == "checkpoints" else Path("OUT")
    return CheckpointFormatError(
        f"{path} is a training checkpoint (what --resume reads), not {expected}; {written_by} "
        f"is {out / file} (written when the run finishes)"
    )


def _training_checkpoint_error(path: Path) -> CheckpointFormatError:
    return training_checkpoint_error(
        path,
        expected="an encoder",
        written_by="a pretraining run's encoder",
        file="encoder.safetensors",
    )


def _read_torch(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        if path.suffix == ".ckpt":
            raise _training_checkpoint_error(path) from None
        raise CheckpointFormatError(
            f"{path}: cannot read it as a PyTorch checkpoint with weights_only=True "
            f"({_first_line(error)})"
        ) from None


def load(
    path: str | Path,
    *,
    reference: Reference = "auto",
    language_table: str | Path | Mapping[str, Tensor] | None = None,
    precision: Precision = "fp32",
    cache_dir: str | Path | None = None,
) -> Encoder:
    """Load an encoder from a checkpoint file, or published weights by name.

    Args:
        path: Our ``.safetensors`` (or its ``.json``), or a published ``.pth``/``.pt``; or a
            published weights name such as ``"copernicusfm_base"`` (when no file of that name
            exists), resolved, downloaded if allowed and verified by
            :mod:`thinkingearth.models.published` and then imported from its file as here.
        reference: For Copernicus-FM files: ``"original"`` or ``"torchgeo"`` LayerNorm epsilon;
            ``"auto"`` decides from the file (see the module docstring).
        language_table: The published ``var_embed_llama3.2_1B.pt`` (path or loaded dict), for
            the variable inputs of an imported Copernicus-FM.
        precision: ``"fp32"`` (exact; fused oneDNN kernels on CPU) or ``"int8"``: the trunk's
            linear layers dynamically quantised and run by ONNX Runtime at inference (see
            :meth:`.Encoder.set_precision`; needs ``pip install 'thinkingearth[onnx]'``).
        cache_dir: For ``"int8"``: directory for the quantised ONNX graphs (reused across
            runs); default a temporary directory. Nothing is written beside the checkpoint.

    Returns:
        The encoder in eval mode.

    Raises:
        UserInputError: A missing file that is not a weights name either, an unknown format,
            an unknown precision, ``"int8"`` without onnxruntime, or (for a weights name) a
            file that is not cached and cannot be downloaded or whose checksum is wrong.
    """
    if precision not in ("fp32", "int8"):
        raise UserInputError(f"unknown precision {precision!r}; expected 'fp32' or 'int8'")
    if precision == "int8":
        require_onnxruntime()  # fail before reading a large file
    name = str(path)
    path = Path(path)
    if not path.is_file():
        # Imported here: published.py builds on this module.
        from thinkingearth.models import published

        if name in published.WEIGHTS:
            return published.load_published(
                name,
                reference=reference,
                language_table=language_table,
                precision=precision,
                cache_dir=cache_dir,
            )
        raise published.unknown_name_error(name)
    if path.suffix in (".safetensors", ".json"):
        encoder = _load_ours(path)
    else:
        raw = _read_torch(path)
        if isinstance(raw, Mapping) and (
            "pytorch-lightning_version" in raw or ("loops" in raw and "state_dict" in raw)
        ):
            raise _training_checkpoint_error(path)
        wrapped = False
        if isinstance(raw, Mapping):
            for key in ("model", "state_dict"):
                if isinstance(raw.get(key), Mapping):
                    raw, wrapped = raw[key], True
                    break
        if not isinstance(raw, Mapping) or not all(isinstance(v, Tensor) for v in raw.values()):
            raise CheckpointFormatError(
                f"{path}: unknown checkpoint format; expected a state dict of tensors "
                "(Copernicus-FM or DOFA) or a ThinkingEarth .safetensors file"
            )
        state: Mapping[str, Tensor] = raw
        if reference == "auto":
            published_layout = (
                wrapped
                or any(k in state for k in ("norm.weight", "mask_token"))
                or path.stem in _PUBLISHED_NAMES
            )
            reference = "original" if published_layout else "torchgeo"
        encoder = import_state_dict(state, reference=reference, source=str(path), copy=False)
    if language_table is not None:
        table = language_table
        if not isinstance(table, Mapping):
            table = _read_torch(Path(table))
            if not isinstance(table, Mapping):
                raise UserInputError(f"{language_table}: expected a dict of name -> tensor")
        encoder.set_language_embeddings(table)
    if precision == "int8":
        encoder.set_precision("int8", cache_dir=cache_dir)
    return encoder
