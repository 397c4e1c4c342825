"""Published weights by name: where each checkpoint lives, its SHA-256, licence and citation.

This module is the one home for these facts. ``thinkingearth.models.load("dofa_base")`` (and
``thinkingearth weights fetch dofa_base``) resolve a name here, in this order:

1. ``$THINKINGEARTH_WEIGHTS/<file name>``: a plain folder where a user can drop the file by name
   (default ``$XDG_CACHE_HOME/thinkingearth/weights``, i.e. ``~/.cache/thinkingearth/weights``);
2. the Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``), so a file already downloaded
   with ``huggingface_hub`` is found: the pinned revision first, then any other cached revision;
3. a download with :func:`huggingface_hub.hf_hub_download` into that cache, unless
   ``HF_HUB_OFFLINE=1``. With no file and no network the error is one line that names the file
   and the folder to put it in: a machine that cannot resolve the hub's host is told at once
   (not after huggingface_hub's retries), and the hub's retry warnings are not printed.

The file's SHA-256 is checked before anything reads it; a mismatch is a one-line error and the
file is not loaded. Then the file goes through the same import as ``load(path)``
(:func:`thinkingearth.models.weights.load`), so imported models stay exact.

Registry names are *weights*. The names in :data:`thinkingearth.models.weights.CONFIGS`
(``thinkingearth_vit_tiny``, ``copernicusfm_vit_base``, ...) are *architectures*: random
initialisation through :func:`~thinkingearth.models.weights.create_encoder`.

Where the checksums come from (all full SHA-256):

* ``dofa_base``, ``dofa_large``: the Git LFS pointers of ``earthflow/DOFA`` (formerly
  ``XShadow/DOFA``) on the Hugging Face hub, upload commits ``ef59b05`` and ``d481510``, as
  shown at the pinned revision ``772c81b``.
* ``dofa_base_torchgeo``, ``dofa_large_torchgeo``: the Git LFS pointers of ``torchgeo/dofa``
  commit ``b8db318`` (the revision torchgeo 0.8 pins); their first 8 hex characters are the ones
  in torchgeo's file names.
* ``copernicusfm_base``, ``copernicusfm_base_torchgeo``: recorded and checked by a third party
  (``bradleylab/ml-containers``, ``copernicus-fm/``: the LFS hash of ``torchgeo/copernicus-fm``
  at ``f395812``, stated to equal the authors' ``CopernicusFM_ViT_base_varlang_e100.pth``); its
  first 8 hex characters are the ones in torchgeo's file name. No hub page of the authors'
  repository with the hash was found; a mismatch, if the authors re-upload, is a one-line error.

An entry may also hold only a prefix of the SHA-256 (at least 8 hex characters); it is then
checked the way torchgeo (``torch.hub``'s ``check_hash``) checks its file names: the file's
digest must start with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, get_args
from urllib.parse import urlsplit

from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import EntryNotFoundError

from thinkingearth.errors import UserInputError
from thinkingearth.fileio import user_cache_dir
from thinkingearth.models.weights import CONFIGS, Reference, load

if TYPE_CHECKING:
    from collections.abc import Mapping

    from torch import Tensor

    from thinkingearth.models.encoder import Encoder, Precision

__all__ = [
    "WEIGHTS",
    "WEIGHTS_ENV",
    "ChecksumError",
    "PublishedWeights",
    "WeightsStatus",
    "WeightsUnavailableError",
    "fetch",
    "find_cached",
    "get",
    "hub_cache_dir",
    "list_weights",
    "load_published",
    "register_weights",
    "resolve",
    "sha256_of",
    "status",
    "unknown_name_error",
    "weights_dir",
]

#: Environment variable naming the plain folder checked first for published files.
WEIGHTS_ENV = "THINKINGEARTH_WEIGHTS"

_HEX = re.compile(r"^[0-9a-f]{8,64}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
_TRUE = {"1", "ON", "YES", "TRUE"}
_CHUNK = 1 << 20

_COPERNICUSFM_CITATION = (
    "Wang, Y., Xiong, Z., Liu, C., Stewart, A. J., Dujardin, T., Bountos, N. I., Zavras, A., "
    "Gerken, F., Papoutsis, I., Leal-Taixé, L., Zhu, X. X. (2025). Towards a Unified Copernicus "
    "Foundation Model for Earth Vision. arXiv:2503.11849"
)
_DOFA_CITATION = (
    "Xiong, Z. et al. (2024). Neural Plasticity-Inspired Multimodal Foundation Model for Earth "
    "Observation. arXiv:2403.15356"
)


class ChecksumError(UserInputError):
    """A weights file whose size or SHA-256 is not the published one (it is not loaded)."""


class WeightsUnavailableError(UserInputError):
    """Published weights that are neither cached nor downloadable now."""


@dataclasses.dataclass(frozen=True)
class PublishedWeights:
    """One published checkpoint: where it lives and what it is.

    Attributes:
        name: Registry name (``load(name)``, ``thinkingearth weights fetch NAME``).
        repo_id: Hugging Face hub repository (``owner/name``).
        filename: File name in that repository (also the name in ``$THINKINGEARTH_WEIGHTS``).
        sha256: The file's SHA-256 (64 hex characters), or a prefix of at least 8, checked as
            torchgeo checks the prefix in its file names.
        architecture: The configuration the file imports as (a name in
            :data:`~thinkingearth.models.weights.CONFIGS` for the shipped entries).
        licence: Licence of the weights, as the hub repository states it (SPDX identifier).
        citation: The paper to cite when using them.
        revision: Hub commit to download from; ``None`` means the default branch.
        size: File size in bytes where known (checked before hashing).
        reference: ``reference`` passed to :func:`~thinkingearth.models.weights.load` when the
            caller leaves it at ``"auto"`` (Copernicus-FM: the authors' or torchgeo's LayerNorm
            epsilon).
    """

    name: str
    repo_id: str
    filename: str
    sha256: str
    architecture: str
    licence: str
    citation: str
    revision: str | None = None
    size: int | None = None
    reference: Reference = "auto"

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"weights name {self.name!r}: expected lowercase letters, digits, _")
        if not _HEX.match(self.sha256):
            raise ValueError(
                f"{self.name}: sha256 must be 8 to 64 lowercase hex characters, got {self.sha256!r}"
            )
        if self.repo_id.count("/") != 1 or not self.filename or "/" in self.filename:
            raise ValueError(f"{self.name}: expected repo_id 'owner/name' and a plain file name")
        if self.reference not in get_args(Reference):
            raise ValueError(f"{self.name}: unknown reference {self.reference!r}")

    @property
    def url(self) -> str:
        """The file's download address on the hub."""
        return (
            f"https://huggingface.co/{self.repo_id}/resolve/{self.revision or 'main'}/"
            f"{self.filename}"
        )

    @property
    def full_checksum(self) -> bool:
        """Whether the registry holds the full SHA-256 (else a prefix)."""
        return len(self.sha256) == 64


#: The registry: name -> published checkpoint. Tests may add or patch entries.
WEIGHTS: dict[str, PublishedWeights] = {}


def register_weights(entry: PublishedWeights) -> PublishedWeights:
    """Add an entry to :data:`WEIGHTS` (replacing one of the same name).

    Raises:
        ValueError: If the name is an architecture name (those stay random-init configs).
    """
    if entry.name in CONFIGS:
        raise ValueError(f"{entry.name!r} is an architecture name in CONFIGS, not a weights name")
    WEIGHTS[entry.name] = entry
    return entry


# Copernicus-FM ViT-B/16 (Wang et al. 2025), CC-BY-4.0. The authors' file is a bare state dict
# (no "model" wrapper, no norm.*); "original" keeps their LayerNorm eps 1e-6.
register_weights(
    PublishedWeights(
        name="copernicusfm_base",
        repo_id="wangyi111/Copernicus-FM",
        filename="CopernicusFM_ViT_base_varlang_e100.pth",
        sha256="085350e4fa0ebc6047a501aed1307394c4fcc23c013dd026db65af06411d6bee",
        architecture="copernicusfm_vit_base",
        licence="CC-BY-4.0",
        citation=_COPERNICUSFM_CITATION,
        size=557_931_327,
        reference="original",
    )
)
# The same bytes in torchgeo's mirror, computed as torchgeo's port does (LayerNorm eps 1e-5).
register_weights(
    PublishedWeights(
        name="copernicusfm_base_torchgeo",
        repo_id="torchgeo/copernicus-fm",
        filename="CopernicusFM_ViT_base_varlang-085350e4.pth",
        sha256="085350e4fa0ebc6047a501aed1307394c4fcc23c013dd026db65af06411d6bee",
        architecture="copernicusfm_vit_base",
        licence="CC-BY-4.0",
        citation=_COPERNICUSFM_CITATION,
        revision="f395812cc990ba25a451dbb9c9e6d95c8482947e",
        size=557_931_327,
        reference="torchgeo",
    )
)
# DOFA ViT-B/16 and ViT-L/16 (Xiong et al. 2024), CC-BY-4.0, as the authors published them.
register_weights(
    PublishedWeights(
        name="dofa_base",
        repo_id="earthflow/DOFA",
        filename="DOFA_ViT_base_e100.pth",
        sha256="4720985e42b918ac0307009eb06121a3435d9bbce6fd95446f84824a538165b1",
        architecture="dofa_vit_base",
        licence="CC-BY-4.0",
        citation=_DOFA_CITATION,
        revision="772c81ba9eeaa42e9c4e2c21b7b59b57226eb9be",
        size=447_669_164,
    )
)
register_weights(
    PublishedWeights(
        name="dofa_large",
        repo_id="earthflow/DOFA",
        filename="DOFA_ViT_large_e100.pth",
        sha256="ea9910bc026268ca36c30b76fd1169aeaca9ea51af5eaff840a20f150ea03d49",
        architecture="dofa_vit_large",
        licence="CC-BY-4.0",
        citation=_DOFA_CITATION,
        revision="772c81ba9eeaa42e9c4e2c21b7b59b57226eb9be",
    )
)
# torchgeo's DOFA files (torchgeo's layout: no MAE extras), the revision torchgeo 0.8 pins.
register_weights(
    PublishedWeights(
        name="dofa_base_torchgeo",
        repo_id="torchgeo/dofa",
        filename="dofa_base_patch16_224-a0275954.pth",
        sha256="a027595480a4b0641d0be330d876034439bcb6ead8b9ce10f4949227426856c6",
        architecture="dofa_vit_base",
        licence="CC-BY-4.0",
        citation=_DOFA_CITATION,
        revision="b8db318b64a90b9e085ec04ba8851233c5893666",
        size=445_295_690,
    )
)
register_weights(
    PublishedWeights(
        name="dofa_large_torchgeo",
        repo_id="torchgeo/dofa",
        filename="dofa_large_patch16_224-0ff904d3.pth",
        sha256="0ff904d35418b0ae26e15812f2669f906a047f94517823bfbc3824eac9328291",
        architecture="dofa_vit_large",
        licence="CC-BY-4.0",
        citation=_DOFA_CITATION,
        revision="b8db318b64a90b9e085ec04ba8851233c5893666",
        size=1_348_512_262,
    )
)


def list_weights() -> list[str]:
    """Names of the published weights, sorted."""
    return sorted(WEIGHTS)


def unknown_name_error(name: str) -> UserInputError:
    """The one-line error for a ``load`` argument that is neither a file nor a weights name."""
    names = ", ".join(list_weights())
    if name in CONFIGS:
        return UserInputError(
            f"{name!r} is an architecture (random initialisation: create_encoder({name!r})), "
            f"not published weights; load() takes a checkpoint path or one of: {names}"
        )
    path = Path(name)
    stem = path.with_name(path.name + ".safetensors")
    if path.is_dir() or stem.is_file():
        found = stem if stem.is_file() else path / "encoder.safetensors"
        hint = f"; did you mean {found}?" if found.is_file() else ""
        what = "is a folder" if path.is_dir() else "is not a file"
        return UserInputError(
            f"checkpoint {name} {what}; expected a checkpoint file (.safetensors with its .json, "
            f"or .pth/.ckpt){hint}"
        )
    return UserInputError(
        f"checkpoint {name} does not exist and is not a published weights name; expected a "
        f"checkpoint path or one of: {names} (see `thinkingearth weights list`)"
    )


def get(name: str) -> PublishedWeights:
    """The registry entry for ``name``.

    Raises:
        UserInputError: For an unknown name (one line listing the names).
    """
    if name not in WEIGHTS:
        hint = (
            f" ({name!r} is an architecture: create_encoder({name!r}) gives random weights)"
            if name in CONFIGS
            else ""
        )
        raise UserInputError(
            f"unknown published weights {name!r}{hint}; expected one of: "
            f"{', '.join(list_weights())}"
        )
    return WEIGHTS[name]


# ----------------------------------------------------------------------------------------------
# Where files are looked for
# ----------------------------------------------------------------------------------------------


def _env_path(variable: str) -> Path | None:
    value = os.environ.get(variable)
    return Path(os.path.expandvars(value)).expanduser() if value else None


def weights_dir() -> Path:
    """The plain folder checked first: ``$THINKINGEARTH_WEIGHTS``, else a default under the cache."""
    configured = _env_path(WEIGHTS_ENV)
    if configured is not None:
        return configured
    return user_cache_dir() / "weights"


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (as huggingface_hub does)."""
    # huggingface_hub reads these once at import; reading them per call keeps a later change
    # (a test, a notebook) effective, with the same precedence.
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        path = _env_path(variable)
        if path is not None:
            return path
    home = _env_path("HF_HOME")
    if home is not None:
        return home / "hub"
    if "XDG_CACHE_HOME" in os.environ:
        return (_env_path("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface" / "hub"
    return Path(hf_constants.HF_HUB_CACHE)


def _offline() -> bool:
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if variable in os.environ:
            return os.environ[variable].strip().upper() in _TRUE
    return bool(hf_constants.HF_HUB_OFFLINE)


def _hub_candidates(entry: PublishedWeights) -> list[Path]:
    cache = hub_cache_dir()
    found: list[Path] = []
    for revision in dict.fromkeys((entry.revision, None)):  # the pinned one, then the branch
        hit = try_to_load_from_cache(
            entry.repo_id, entry.filename, cache_dir=cache, revision=revision
        )
        if isinstance(hit, str):
            found.append(Path(hit))
    # A file downloaded at another revision still counts; its checksum decides.
    snapshots = cache / f"models--{entry.repo_id.replace('/', '--')}" / "snapshots"
    if snapshots.is_dir():
        found.extend(sorted(snapshots.glob(f"*/{entry.filename}")))
    return [p for p in dict.fromkeys(found) if p.is_file()]


def find_cached(name: str) -> Path | None:
    """The local file for ``name`` (weights folder first, then the hub cache), not yet verified."""
    entry = get(name)
    local = weights_dir() / entry.filename
    if local.is_file():
        return local
    candidates = _hub_candidates(entry)
    return candidates[0] if candidates else None


# ----------------------------------------------------------------------------------------------
# Verification, download, loading
# ----------------------------------------------------------------------------------------------


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, entry: PublishedWeights) -> None:
    again = f"delete it and run `thinkingearth weights fetch {entry.name}`"
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        raise ChecksumError(
            f"{path}: {size} bytes, but published weights {entry.name!r} ({entry.repo_id}/"
            f"{entry.filename}) are {entry.size} bytes; not loaded: {again}"
        )
    digest = sha256_of(path)
    if not digest.startswith(entry.sha256):
        kind = "SHA-256" if entry.full_checksum else "SHA-256 prefix"
        raise ChecksumError(
            f"{path}: SHA-256 {digest[:16]}... does not match the published {kind} "
            f"{entry.sha256[:16]}... of {entry.name!r} ({entry.repo_id}/{entry.filename}); "
            f"not loaded: {again}"
        )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    line = text.splitlines()[0].strip() if text else type(error).__name__
    return line if len(line) <= 160 else line[:157] + "..."


def _unavailable(entry: PublishedWeights, reason: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"published weights {entry.name!r} are not cached and {reason}; put {entry.filename} "
        f"(from {entry.url}) into {weights_dir()}, or run `thinkingearth weights fetch "
        f"{entry.name}` where the network is reachable"
    )


def _download_errors() -> tuple[type[BaseException], ...]:
    # Connection problems reach us as OSError subclasses (requests, huggingface_hub's own
    # LocalEntryNotFoundError / OfflineModeIsEnabled / HfHubHTTPError) or as httpx errors
    # (huggingface_hub >= 1.0), depending on the version.
    errors: list[type[BaseException]] = [OSError, EntryNotFoundError]
    try:
        import httpx

        errors.append(httpx.HTTPError)
    except ImportError:  # pragma: no cover - huggingface_hub < 1.0 uses requests
        pass
    return tuple(errors)


_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def _unresolvable_host() -> str | None:
    """The hub's host name when it does not resolve (no network), else ``None``.

    huggingface_hub retries a failed request five times over about 25 s, logging two lines per
    try; a machine that cannot even resolve the host is told so at once. Behind a proxy the
    proxy resolves names, so nothing is checked here.
    """
    if any(os.environ.get(variable) for variable in _PROXY_VARIABLES):
        return None
    host = urlsplit(hf_constants.ENDPOINT).hostname
    if not host:
        return None
    try:
        socket.getaddrinfo(host, 443)
    except (socket.gaierror, UnicodeError):
        return host
    return None


@contextlib.contextmanager
def _hub_warnings_silenced() -> Iterator[None]:
    """huggingface_hub's retry warnings off for one call: its failure becomes our one line."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(level)


def _download(entry: PublishedWeights) -> Path:
    if _offline():
        raise _unavailable(entry, "downloads are off (HF_HUB_OFFLINE=1)")
    host = _unresolvable_host()
    if host is not None:
        raise _unavailable(entry, f"the download failed (no network: {host} does not resolve)")
    try:
        with _hub_warnings_silenced():
            path = hf_hub_download(
                repo_id=entry.repo_id,
                filename=entry.filename,
                revision=entry.revision,
                cache_dir=hub_cache_dir(),
            )
    except _download_errors() as error:
        raise _unavailable(entry, f"the download failed ({_first_line(error)})") from None
    return Path(path)


def resolve(name: str, *, download: bool = True) -> Path:
    """The verified local file for published weights ``name``.

    Args:
        name: A registry name (:func:`list_weights`).
        download: Download into the Hugging Face cache when no local copy exists (never when
            ``HF_HUB_OFFLINE=1``).

    Returns:
        The path of a file whose size and SHA-256 are the published ones.

    Raises:
        UserInputError: An unknown name; :class:`WeightsUnavailableError` when the file is not
            local and cannot be downloaded (one line naming the file and the folder);
            :class:`ChecksumError` when the file found or downloaded is not the published one.
    """
    entry = get(name)
    path = find_cached(name)
    if path is None:
        if not download:
            raise _unavailable(entry, "downloading was not requested")
        path = _download(entry)
    _verify(path, entry)
    return path


def fetch(name: str) -> Path:
    """Download (if needed) and verify published weights; returns the local path."""
    return resolve(name, download=True)


def load_published(
    name: str,
    *,
    reference: Reference = "auto",
    language_table: str | Path | Mapping[str, Tensor] | None = None,
    precision: Precision = "fp32",
    cache_dir: str | Path | None = None,
) -> Encoder:
    """Load published weights by name, through the same import as ``load(path)``.

    Args:
        name: A registry name (:func:`list_weights`).
        reference: As for :func:`~thinkingearth.models.weights.load`; ``"auto"`` takes the
            entry's own reference.
        language_table: As for :func:`~thinkingearth.models.weights.load`.
        precision: As for :func:`~thinkingearth.models.weights.load`.
        cache_dir: As for :func:`~thinkingearth.models.weights.load` (int8 graphs).

    Returns:
        The encoder in eval mode.
    """
    entry = get(name)
    path = resolve(name)
    return load(
        path,
        reference=entry.reference if reference == "auto" else reference,
        language_table=language_table,
        precision=precision,
        cache_dir=cache_dir,
    )


@dataclasses.dataclass(frozen=True)
class WeightsStatus:
    """One row of ``thinkingearth weights list``: an entry and its local file, if any."""

    entry: PublishedWeights
    path: Path | None

    @property
    def size(self) -> int | None:
        """Bytes of the local file, else the published size where known."""
        return self.path.stat().st_size if self.path is not None else self.entry.size


def status() -> list[WeightsStatus]:
    """Every registry entry with its local file (found, not verified: listing stays fast)."""
    return [WeightsStatus(WEIGHTS[name], find_cached(name)) for name in list_weights()]
