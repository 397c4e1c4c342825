"""Pretraining data as WebDataset tar shards: written once, streamed by any number of processes.

**Layout** (``thinkingearth shard --config FILE --out DIR``)::

    DIR/shard-000000.tar     WebDataset layout: a plain (ustar) tar whose members are
                             <key>.json + <key>.safetensors, one pair per sample, in order
    DIR/shard-000001.tar     ...
    DIR/index.json           each shard's name, sample count, size in bytes and group; the total;
                             written last, so a folder without it is an unfinished write

Each sample's ``<key>.safetensors`` holds every tensor of the Sample (``image``; ``labels``,
``label``, ``mask``, ``target``, a per-step ``time`` and any other tensor extras under their own
names); ``<key>.json`` holds everything else (``sensor``, ``bands``, ``units``, ``lon``, ``lat``,
``time``, ``gsd``, ``crs``, ``transform``, ``caption``...) and which keys were tuples or numpy
arrays, so that the Sample read back is equal to the one written (numpy scalars come back as
Python numbers). A co-registered pair (``{"a": Sample, "b": Sample}``, recipe ``cross_sensor``)
is one record: its tensors are named ``a/image``, ``b/image``... Nothing is ever unpickled:
safetensors and JSON only. Shards are written under a temporary name (``.shard-000003.tar.tmp-…``),
fsynced and renamed when complete; a new shard starts when the group (sensor and bands, or the
pair's) changes, so every shard holds one group (``ShardDataset(group=…)`` streams one sensor).

**Reading** (:class:`ShardDataset`, an ``IterableDataset``). Per epoch ``e`` the shards are put
in a seeded permutation (``seed``, ``e``) and dealt, in that order, each to the reader with the
fewest samples so far (balanced by the index's counts). The readers are the ``world × workers``
pairs of DDP rank and DataLoader worker, reader ``worker * world + rank``; each shard goes to
exactly one reader, so every sample is read exactly once per epoch across all ranks and workers.
A reader streams its shards' samples in order through a seeded shuffle buffer
(``shuffle_buffer`` samples; ``seed``, ``e``, reader). Its stream is endless: epoch after epoch
(``epochs`` stops it, for inspection and tests). Ranks need not hold equal numbers of samples in
an epoch: each rank's stream never ends, so every rank has a batch at every step.

**Position.** The position of a rank is ``start``: the number of samples that rank has trained
on, i.e. ``trainer.global_step * batch_size`` (the trainer's count is the truth; what the
DataLoader has prefetched is not consumed, exactly as
:class:`~thinkingearth.pretrain.data.ResumableLoader` does for the map-style path). A DataLoader
with ``W`` workers takes batch ``i`` from worker ``i mod W`` (in order, each worker's batches of
``batch_size`` consecutive samples of its stream), so after ``k = start / batch_size`` batches
worker ``w`` has given ``ceil((k - w) / W)`` batches; :meth:`ShardDataset.worker_start` turns
``start`` into that worker's own count, which is an epoch and an offset within it (each epoch's
length comes from the index). A resumed DataLoader takes its first batch from worker 0, so its
worker ``w`` plays reader ``(w + k) mod W`` (:meth:`ShardDataset.role`). The turn-taking holds
while every worker has samples, as the endless stream always has (with ``epochs`` set and
``W > 1``, a worker that ends first shifts it; positions are then exact for ``W = 1`` only). A
resumed reader replays its shuffle buffer on sample positions alone (no data read), opens only
the shards that still hold unread samples, and continues exactly where the interrupted run
stopped. The stream depends on ``seed``, ``shuffle_buffer``, the world size, the number of
workers and ``batch_size``: resume with the same values.

**Corrupt shards.** A shard that is missing or whose size differs from the index is left out of
a reader's epoch before its plan is made (a ``stat``, every epoch), so the stream, and a resume,
stay exact. A shard that fails while being read (bad tar, missing member, undecodable JSON or
safetensors, a count that differs from the index) is dropped whole (none of its samples is
yielded) with one :class:`CorruptShardWarning` naming it, not a crash. Only this case bends
the resume: the resumed reader does not read that shard again to learn that it is corrupt, so
it counts the shard's samples as given and repeats up to that many samples for each epoch in
which it had met the shard before its position. Replace or rewrite a shard that warns.
"""

from __future__ import annotations

import bisect
import heapq
import io
import json
import math
import os
import re
import tarfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch.utils.data import IterableDataset, get_worker_info

from thinkingearth.errors import UserInputError
from thinkingearth.fileio import atomic_file, check_writable_parent

if TYPE_CHECKING:
    from thinkingearth.pretrain.config import PretrainConfig

__all__ = [
    "INDEX_NAME",
    "CorruptShardWarning",
    "ShardDataset",
    "ShardIndex",
    "ShardInfo",
    "assign_shards",
    "config_records",
    "decode_record",
    "encode_record",
    "read_shard",
    "shard_config",
    "write_shards",
]

#: The index written last in a shards folder.
INDEX_NAME = "index.json"
FORMAT = "thinkingearth-shards"
FORMAT_VERSION = 1
#: Extensions of a record's members (``<key>.json``, ``<key>.safetensors``).
JSON_EXT, TENSORS_EXT = "json", "safetensors"
#: Pair records (recipe ``cross_sensor``): the two parts, in order.
PAIR_PARTS: tuple[str, ...] = ("a", "b")
_SHARD_NAME = re.compile(r"shard-\d{6,}\.tar")
#: Sample positions drawn per block by the shuffle buffer (draws do not depend on the data).
_DRAW_BLOCK = 65536

Record = dict[str, Any]


class CorruptShardWarning(UserWarning):
    """A shard could not be read; its samples are left out of the epoch."""


class CorruptShardError(ValueError):
    """A shard's bytes are not a valid shard (raised while reading, turned into a warning)."""


# ----------------------------------------------------------------------------------------------
# One record: a Sample (or a pair of Samples) <-> safetensors bytes + JSON bytes
# ----------------------------------------------------------------------------------------------


def _json_value(key: str, value: Any) -> Any:
    """A JSON-safe copy of a non-tensor value (numpy scalars become Python numbers)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_json_value(key, v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json_value(key, v) for k, v in value.items()}
    raise TypeError(
        f"sample key {key!r}: cannot store a {type(value).__name__} in a shard; expected a tensor, "
        "a numpy array, a string, a number, or lists and mappings of them"
    )


def _encode_sample(
    sample: Mapping[str, Any], prefix: str, tensors: dict[str, torch.Tensor]
) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    arrays: dict[str, str] = {}
    tuples: list[str] = []
    for key, value in sample.items():
        if not isinstance(key, str) or "/" in key:
            raise TypeError(f"sample key {key!r}: keys must be strings without '/'")
        if isinstance(value, torch.Tensor):
            # a private contiguous copy: safetensors refuses views and shared storage
            tensors[prefix + key] = value.detach().cpu().contiguous().clone()
            arrays[key] = "torch"
        elif isinstance(value, np.ndarray):
            if value.dtype == object:
                raise TypeError(f"sample key {key!r}: numpy arrays of objects cannot be stored")
            tensors[prefix + key] = torch.from_numpy(np.ascontiguousarray(value).copy())
            arrays[key] = "numpy"
        else:
            fields[key] = _json_value(key, value)
            if isinstance(value, tuple):
                tuples.append(key)
    return {"fields": fields, "arrays": arrays, "tuples": tuples}


def _is_pair(record: Mapping[str, Any]) -> bool:
    return "image" not in record and set(record) == set(PAIR_PARTS)


def encode_record(record: Mapping[str, Any]) -> tuple[bytes, bytes, dict[str, Any]]:
    """A Sample, or a pair ``{"a": Sample, "b": Sample}``, as safetensors and JSON bytes.

    Returns:
        ``(safetensors bytes, JSON bytes, group)``; ``group`` names the record's sensor and bands
        (a pair: both parts'), the unit that shards are cut along.

    Raises:
        TypeError: A value that is neither a tensor, a numpy array nor JSON-able.
    """
    tensors: dict[str, torch.Tensor] = {}
    if _is_pair(record):
        parts = {p: _encode_sample(record[p], f"{p}/", tensors) for p in PAIR_PARTS}
        doc: dict[str, Any] = {"pair": parts}
        group: dict[str, Any] = {"pair": {p: _group_of(record[p]) for p in PAIR_PARTS}}
    else:
        doc = {"sample": _encode_sample(record, "", tensors)}
        group = _group_of(record)
    # NaN metadata is part of the contract: Python's JSON writes and reads it as NaN.
    text = json.dumps(doc, separators=(",", ":"), allow_nan=True)
    return save_tensors(tensors), text.encode("utf-8"), group


def _group_of(sample: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "sensor": str(sample.get("sensor", "")),
        "bands": [str(b) for b in sample.get("bands", ())],
    }


def _decode_sample(spec: Any, prefix: str, tensors: Mapping[str, torch.Tensor]) -> Record:
    if not isinstance(spec, Mapping) or not {"fields", "arrays", "tuples"} <= set(spec):
        raise CorruptShardError("a record's JSON lacks fields/arrays/tuples")
    sample: Record = {}
    for key, value in spec["fields"].items():
        sample[key] = tuple(value) if key in spec["tuples"] and isinstance(value, list) else value
    for key, kind in spec["arrays"].items():
        tensor = tensors.get(prefix + key)
        if tensor is None:
            raise CorruptShardError(f"the record's tensors lack {prefix + key!r}")
        sample[key] = tensor.numpy() if kind == "numpy" else tensor
    return sample


def decode_record(tensor_bytes: bytes, json_bytes: bytes) -> Record:
    """The record that :func:`encode_record` wrote (safetensors and JSON only; no pickle).

    Raises:
        CorruptShardError: Bytes that are not a record.
    """
    try:
        doc = json.loads(json_bytes.decode("utf-8"))
        tensors = load_tensors(tensor_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError, SafetensorError) as exc:
        raise CorruptShardError(f"undecodable record ({exc})") from None
    except Exception as exc:  # safetensors raises other errors on some truncated headers
        raise CorruptShardError(f"undecodable record ({type(exc).__name__}: {exc})") from None
    if not isinstance(doc, Mapping):
        raise CorruptShardError("a record's JSON is not an object")
    if "pair" in doc:
        pair = doc["pair"]
        if not isinstance(pair, Mapping) or set(pair) != set(PAIR_PARTS):
            raise CorruptShardError("a pair record's JSON lacks its parts")
        return {p: _decode_sample(pair[p], f"{p}/", tensors) for p in PAIR_PARTS}
    if "sample" not in doc:
        raise CorruptShardError("a record's JSON has neither 'sample' nor 'pair'")
    return _decode_sample(doc["sample"], "", tensors)


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def _shard_name(number: int) -> str:
    return f"shard-{number:06d}.tar"


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0  # the same samples give byte-identical shards
    tar.addfile(info, io.BytesIO(data))


class _ShardWriter:
    """One shard being written under a temporary name; :meth:`close` renames it into place."""

    def __init__(self, folder: Path, number: int, group: int) -> None:
        self.name = _shard_name(number)
        self.final = folder / self.name
        self.tmp = folder / f".{self.name}.tmp-{uuid.uuid4().hex[:8]}"
        self.group = group
        self.count = 0
        self._file = open(self.tmp, "wb")  # noqa: SIM115 - closed in close()/abort()
        self._tar = tarfile.open(  # noqa: SIM115 - closed in close()
            fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT
        )

    def add(self, key: str, tensor_bytes: bytes, json_bytes: bytes) -> None:
        _tar_member(self._tar, f"{key}.{JSON_EXT}", json_bytes)
        _tar_member(self._tar, f"{key}.{TENSORS_EXT}", tensor_bytes)
        self.count += 1

    def close(self) -> dict[str, Any]:
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())  # complete on disk before it gets its final name
        self._file.close()
        size = self.tmp.stat().st_size
        os.replace(self.tmp, self.final)
        return {"name": self.name, "count": self.count, "bytes": size, "group": self.group}

    def abort(self) -> None:
        self._file.close()  # the tar is left unfinished: the file is deleted
        self.tmp.unlink(missing_ok=True)


def _prepare_folder(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} is a file; expected a folder for the shards")
    check_writable_parent(out / INDEX_NAME)
    if not out.is_dir():
        return
    ours = [p for p in out.iterdir() if _is_our_output(p.name)]
    if not ours:
        return
    if not overwrite:
        what = (
            "shards" if (out / INDEX_NAME).exists() else "an unfinished shard write (no index.json)"
        )
        raise UserInputError(
            f"--out {out} already holds {what}; pass --overwrite to replace them, or choose "
            "another folder"
        )
    for path in ours:
        path.unlink()


def _is_our_output(name: str) -> bool:
    return (
        name == INDEX_NAME
        or _SHARD_NAME.fullmatch(name) is not None
        or (name.startswith(".shard-") and ".tar.tmp-" in name)
        or (name.startswith(f".{INDEX_NAME}.tmp-"))
    )


def write_shards(
    samples: Iterable[Mapping[str, Any]],
    out: str | Path,
    *,
    shard_size: int = 256,
    max_samples: int | None = None,
    total: int | None = None,
    overwrite: bool = False,
    source: Mapping[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> ShardIndex:
    """Write Samples (or pairs) as WebDataset tar shards plus ``index.json`` (see the module).

    Args:
        samples: The records, in the order to store them.
        out: The shards folder (created; must hold no shards unless ``overwrite``).
        shard_size: Samples per shard (a shard also ends where the group changes).
        max_samples: Stop after this many samples.
        total: The number of samples expected, for progress lines only.
        overwrite: Replace the shards (and index) already in ``out``; other files are kept.
        source: What the samples are (e.g. the config's data section), recorded in the index.
        log: Where progress lines go (``None`` = silent).

    Returns:
        The index written.

    Raises:
        UserInputError: ``shard_size`` or ``max_samples`` below 1, ``out`` unusable or already
            holding shards, no samples at all.
    """
    if shard_size < 1:
        raise UserInputError(f"--shard-size must be >= 1, got {shard_size}")
    if max_samples is not None and max_samples < 1:
        raise UserInputError(f"--max-samples must be >= 1, got {max_samples}")
    out = Path(out)
    _prepare_folder(out, overwrite)
    say = log or (lambda _message: None)
    if max_samples is not None:
        samples = islice(samples, max_samples)
        total = max_samples if total is None else min(total, max_samples)
    groups: list[dict[str, Any]] = []
    shards: list[dict[str, Any]] = []
    writer: _ShardWriter | None = None
    written = 0
    started = last_line = time.perf_counter()
    try:
        for record in samples:
            tensor_bytes, json_bytes, group = encode_record(record)
            if group not in groups:
                groups.append(group)
            gid = groups.index(group)
            if writer is not None and (writer.count >= shard_size or writer.group != gid):
                shards.append(writer.close())
                writer = None
            if writer is None:
                out.mkdir(parents=True, exist_ok=True)
                writer = _ShardWriter(out, len(shards), gid)
            writer.add(f"{written:09d}", tensor_bytes, json_bytes)
            written += 1
            now = time.perf_counter()
            if now - last_line >= 5.0:
                last_line = now
                of = f" of {total}" if total is not None else ""
                say(f"[shard] {written}{of} samples, {len(shards)} shards closed")
        if writer is not None:
            shards.append(writer.close())
            writer = None
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if not written:
        raise UserInputError("no samples to write: the data source is empty")
    totals = [0] * len(groups)
    for shard in shards:
        totals[shard["group"]] += shard["count"]
    document = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "total": written,
        "groups": [{**g, "count": n} for g, n in zip(groups, totals, strict=True)],
        "shards": shards,
        "source": dict(source) if source is not None else None,
    }
    with atomic_file(out / INDEX_NAME) as tmp:
        tmp.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    seconds = time.perf_counter() - started
    say(f"[shard] {written} samples in {len(shards)} shards, {out} ({seconds:.1f} s)")
    return ShardIndex.read(out)


# ----------------------------------------------------------------------------------------------
# The index
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardInfo:
    """One shard of the index: file name, samples, size in bytes, group number."""

    name: str
    count: int
    bytes: int
    group: int


@dataclass(frozen=True)
class ShardIndex:
    """The ``index.json`` of a shards folder.

    Attributes:
        root: The folder.
        shards: The shards in writing order.
        groups: Per group: ``sensor``, ``bands`` and ``count`` (a pair: ``pair`` of both).
        total: The number of samples.
        source: What was written (the config's data section), if recorded.
    """

    root: Path
    shards: tuple[ShardInfo, ...]
    groups: tuple[dict[str, Any], ...]
    total: int
    source: dict[str, Any] | None = None

    @classmethod
    def read(cls, root: str | Path) -> ShardIndex:
        """Read and check ``root/index.json``.

        Raises:
            UserInputError: No folder, no index (an unfinished write says so), or an index that
                is not this format.
        """
        root = Path(root)
        path = root / INDEX_NAME
        if not root.is_dir():
            raise UserInputError(f"shards folder {root} does not exist")
        if not path.is_file():
            unfinished = any(_SHARD_NAME.fullmatch(p.name) for p in root.iterdir())
            hint = (
                "; its shard write did not finish: run thinkingearth shard again with --overwrite"
                if unfinished
                else "; write shards with thinkingearth shard --config FILE --out DIR"
            )
            raise UserInputError(f"{root} has no {INDEX_NAME}{hint}")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("format") != FORMAT:
                raise ValueError("not a thinkingearth shards index")
            if int(doc["version"]) > FORMAT_VERSION:
                raise ValueError(f"version {doc['version']} is newer than this reader's")
            shards = tuple(
                ShardInfo(str(s["name"]), int(s["count"]), int(s["bytes"]), int(s["group"]))
                for s in doc["shards"]
            )
            groups = tuple(dict(g) for g in doc["groups"])
            total = int(doc["total"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UserInputError(f"{path} is not a shards index: {exc}") from None
        for s in shards:
            if not _SHARD_NAME.fullmatch(s.name) or s.count < 1 or not 0 <= s.group < len(groups):
                raise UserInputError(f"{path}: invalid shard entry {s}")
        if sum(s.count for s in shards) != total:
            raise UserInputError(f"{path}: the shards' counts do not add up to total {total}")
        return cls(root, shards, groups, total, doc.get("source"))


# ----------------------------------------------------------------------------------------------
# Reading one shard
# ----------------------------------------------------------------------------------------------


def read_shard(path: str | Path, count: int | None = None) -> list[tuple[str, Record]]:
    """Every ``(key, record)`` of one shard, in order; all or nothing.

    Args:
        path: The shard.
        count: The number of records the index promises (checked).

    Raises:
        CorruptShardError: The file is not a complete shard of this format.
        OSError: The file cannot be opened or read.
    """
    records: list[tuple[str, Record]] = []
    pending: dict[str, bytes] = {}
    key: str | None = None

    def finish() -> None:
        if key is None:
            return
        if set(pending) != {JSON_EXT, TENSORS_EXT}:
            raise CorruptShardError(f"record {key} has members {sorted(pending)}")
        records.append((key, decode_record(pending[TENSORS_EXT], pending[JSON_EXT])))

    try:
        with open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    raise CorruptShardError(f"member {member.name!r} is not a file")
                stem, dot, ext = member.name.partition(".")
                if not dot or ext not in (JSON_EXT, TENSORS_EXT) or "/" in stem:
                    raise CorruptShardError(f"unexpected member {member.name!r}")
                if stem != key:
                    finish()
                    key, pending = stem, {}
                if ext in pending:
                    raise CorruptShardError(f"member {member.name!r} appears twice")
                extracted = tar.extractfile(member)
                assert extracted is not None  # a regular file
                data = extracted.read()
                if len(data) != member.size:
                    raise CorruptShardError(f"member {member.name!r} is truncated")
                pending[ext] = data
            finish()
    except tarfile.TarError as exc:
        raise CorruptShardError(f"not a readable tar ({exc})") from None
    except EOFError:
        raise CorruptShardError("truncated tar") from None
    if count is not None and len(records) != count:
        raise CorruptShardError(f"{len(records)} records, the index says {count}")
    return records


# ----------------------------------------------------------------------------------------------
# Dealing shards to readers, and the shuffle buffer
# ----------------------------------------------------------------------------------------------


def assign_shards(counts: Sequence[int], readers: int, seed: int, epoch: int) -> list[list[int]]:
    """Deal shards to ``readers`` for one epoch: each shard to exactly one reader.

    The shards are visited in a permutation seeded by ``(seed, epoch)``; each goes to the reader
    with the fewest samples so far (ties: the lowest reader number), so readers' sample counts
    differ by at most one shard's count.

    Returns:
        Per reader, its shard numbers in the order it reads them.
    """
    order = np.random.default_rng([seed, epoch, 0x5A4D]).permutation(len(counts))
    heap = [(0, r) for r in range(readers)]
    shares: list[list[int]] = [[] for _ in range(readers)]
    for shard in order.tolist():
        load, reader = heapq.heappop(heap)
        shares[reader].append(shard)
        heapq.heappush(heap, (load + int(counts[shard]), reader))
    return shares


class _ShuffleBuffer:
    """A seeded shuffle buffer run on sample positions ``0 .. n-1`` (never on the data).

    The buffer fills with the first ``size`` positions; then each next position replaces a
    uniformly drawn one, which is emitted; at the end the rest is emitted in a seeded order.
    The draws do not depend on the data, so a resumed reader replays the buffer on positions
    alone and knows which samples are still to come (:attr:`pending`, :attr:`next_input`).
    """

    def __init__(self, n: int, size: int, rng: np.random.Generator) -> None:
        self.n = n
        self.rng = rng
        fill = min(max(size, 1), n)
        self.buffer = list(range(fill))
        self.next_input = fill
        self._draws: list[int] = []
        self._tail: list[int] | None = None
        self.size = fill

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        if self.size <= 1 and self._tail is None:  # no shuffling: positions in order
            if self.buffer:
                position = self.buffer.pop()
                if self.next_input < self.n:
                    self.buffer.append(self.next_input)
                    self.next_input += 1
                return position
            raise StopIteration
        if self.next_input < self.n:
            if not self._draws:
                block = min(_DRAW_BLOCK, self.n - self.next_input)
                self._draws = self.rng.integers(0, self.size, size=block).tolist()[::-1]
            slot = self._draws.pop()
            position = self.buffer[slot]
            self.buffer[slot] = self.next_input
            self.next_input += 1
            return position
        if self._tail is None:
            self._tail = [self.buffer[i] for i in self.rng.permutation(len(self.buffer)).tolist()]
            self._tail.reverse()
            self.buffer = []
        if self._tail:
            return self._tail.pop()
        raise StopIteration

    @property
    def pending(self) -> list[int]:
        """Positions entered but not yet emitted."""
        if self._tail is not None:
            return list(self._tail)
        return list(self.buffer)


class _EpochLoader:
    """A reader's shards for one epoch, loaded whole and in order as positions are asked for."""

    def __init__(
        self,
        dataset: ShardDataset,
        shards: Sequence[ShardInfo],
        keep: Callable[[int], bool],
        first: int,
    ) -> None:
        self.dataset = dataset
        self.shards = shards
        self.starts = np.cumsum([0] + [s.count for s in shards]).tolist()
        self.keep = keep
        # shards before the first wanted position are never opened
        self.next_shard = max(0, bisect.bisect_right(self.starts, first) - 1)
        self.pool: dict[int, Record] = {}

    def get(self, position: int) -> Record | None:
        """The record at ``position``, or ``None`` when its shard is corrupt."""
        while position >= self.starts[self.next_shard] and self.next_shard < len(self.shards):
            self._load(self.next_shard)
            self.next_shard += 1
        return self.pool.pop(position, None)

    def _load(self, number: int) -> None:
        shard = self.shards[number]
        records = self.dataset._read(shard)
        if records is None:
            return
        start = self.starts[number]
        for i, (key, record) in enumerate(records):
            if self.keep(start + i):
                if self.dataset.keys:
                    _tag(record, f"{shard.name}/{key}")
                self.pool[start + i] = record


def _tag(record: Record, key: str) -> None:
    if _is_pair(record):
        for part in PAIR_PARTS:
            record[part]["shard_key"] = key
    else:
        record["shard_key"] = key


# ----------------------------------------------------------------------------------------------
# The streaming dataset
# ----------------------------------------------------------------------------------------------


class ShardDataset(IterableDataset[Record]):
    """Stream a shards folder: split across ranks and workers, shuffled, resumable.

    See the module docstring for the split, the shuffle, the position and corrupt shards.

    Args:
        root: The shards folder (``index.json`` and its shards).
        seed: Seed of the shard permutation per epoch and of the shuffle buffers.
        shuffle_buffer: Samples held by each reader's shuffle buffer (memory: this many decoded
            samples plus one shard); ``0`` or ``1`` reads in shard order.
        rank: This process's DDP rank (default: ``torch.distributed``'s, else 0).
        world: The number of DDP processes (default: ``torch.distributed``'s, else 1).
        start: Samples this rank has already trained on (``global_step * batch_size``).
        batch_size: The DataLoader's batch size (workers hand out whole batches in turn).
        epochs: Stop after this many epochs in all (counted from epoch 0); ``None``: endless.
        group: Only the shards of this group (``ShardIndex.groups``: one sensor and band set).
        keys: Add ``shard_key`` (``"shard-000003.tar/000000771"``) to every sample.

    Raises:
        UserInputError: An unreadable index, an unknown group, or a bad argument.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        seed: int,
        shuffle_buffer: int = 1024,
        rank: int | None = None,
        world: int | None = None,
        start: int = 0,
        batch_size: int = 1,
        epochs: int | None = None,
        group: int | None = None,
        keys: bool = False,
    ) -> None:
        """Read the index; nothing else is opened until iteration."""
        super().__init__()
        self.index = ShardIndex.read(root)
        self.root = self.index.root
        if (rank is None) != (world is None):
            raise UserInputError("give both rank and world, or neither")
        if world is not None and (world < 1 or not 0 <= int(rank) < world):  # type: ignore[arg-type]
            raise UserInputError(f"rank {rank} is not in 0..{world - 1}")
        for name, value, low in (
            ("start", start, 0),
            ("shuffle_buffer", shuffle_buffer, 0),
            ("batch_size", batch_size, 1),
        ):
            if value < low:
                raise UserInputError(f"{name} must be >= {low}, got {value}")
        if epochs is not None and epochs < 0:
            raise UserInputError(f"epochs must be >= 0, got {epochs}")
        if group is not None and not 0 <= group < len(self.index.groups):
            raise UserInputError(
                f"group {group}: {self.root} has groups 0..{len(self.index.groups) - 1}"
            )
        self.seed = int(seed)
        self.shuffle_buffer = int(shuffle_buffer)
        self.rank, self.world = rank, world
        self.start = int(start)
        self.batch_size = int(batch_size)
        self.epochs = epochs
        self.group = group
        self.keys = keys
        self.shards = tuple(s for s in self.index.shards if group is None or s.group == group)
        self._counts = [s.count for s in self.shards]
        self._bad: set[str] = set()  # shards that failed to read in this process
        self._warned: set[str] = set()  # one warning per corrupt shard and process

    # -- layout ----------------------------------------------------------------------------------

    def rank_world(self) -> tuple[int, int]:
        """This process's rank and the world size (given, else ``torch.distributed``'s)."""
        if self.rank is not None and self.world is not None:
            return int(self.rank), int(self.world)
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def check_readers(self, workers: int) -> None:
        """Raise unless every rank × worker reader gets at least one shard per epoch."""
        _, world = self.rank_world()
        readers = world * max(workers, 1)
        if len(self.shards) < readers:
            raise UserInputError(
                f"{len(self.shards)} shards in {self.root} cannot feed {world} processes x "
                f"{max(workers, 1)} workers = {readers} readers (one shard each at least): write "
                "smaller shards (--shard-size) or use fewer data-loader workers"
            )

    def _batches_done(self, workers: int) -> int:
        if workers <= 1:
            return 0
        if self.start % self.batch_size:
            raise UserInputError(
                f"start {self.start} is not a whole number of batches of {self.batch_size}; "
                "with data-loader workers the position must be global_step * batch_size"
            )
        return self.start // self.batch_size

    def role(self, worker: int, workers: int) -> int:
        """The reader a DataLoader worker plays: ``(worker + k) mod workers`` after ``k`` batches.

        A loader started at batch ``k`` (``start / batch_size``) takes its first batch from
        worker 0, which must go on with the stream that gave batch ``k`` of the run.
        """
        return (worker + self._batches_done(workers)) % max(workers, 1)

    def worker_start(self, role: int, workers: int) -> int:
        """Samples of reader ``role``'s own stream already consumed, from this rank's ``start``.

        The DataLoader takes batch ``i`` from worker ``i mod workers``: after
        ``k = start / batch_size`` batches, reader ``r`` gave ``ceil((k - r) / workers)``.
        """
        if workers <= 1:
            return self.start
        batches = self._batches_done(workers)
        mine = max(0, -(-(batches - role) // workers))
        return mine * self.batch_size

    def reader_shards(self, epoch: int, role: int = 0, workers: int = 1) -> list[ShardInfo]:
        """The shards this rank's reader ``role`` (of ``workers``) reads in ``epoch``, in order."""
        rank, world = self.rank_world()
        shares = assign_shards(self._counts, world * workers, self.seed, epoch)
        return [self.shards[i] for i in shares[role * world + rank]]

    # -- iteration --------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Record]:
        """This worker's stream (the DataLoader worker from ``get_worker_info``)."""
        info = get_worker_info()
        if info is None:
            return self.stream()
        return self.stream(info.id, info.num_workers)

    def stream(self, worker: int = 0, workers: int = 1) -> Iterator[Record]:
        """The records of DataLoader worker ``worker`` of ``workers`` on this rank, from ``start``."""
        self.check_readers(workers)
        if not any([self._present(s) for s in self.shards]):  # every one warned about
            raise UserInputError(f"no shard of {self.root} is readable")
        rank, world = self.rank_world()
        role = self.role(worker, workers)
        reader = role * world + rank
        skip = self.worker_start(role, workers)
        epoch = 0
        while self.epochs is None or epoch < self.epochs:
            shards = [s for s in self.reader_shards(epoch, role, workers) if self._present(s)]
            length = sum(s.count for s in shards)
            if skip >= length:
                skip -= length  # a whole epoch already consumed: nothing is read
                epoch += 1
                continue
            yield from self._epoch(shards, epoch, reader, skip)
            skip = 0
            epoch += 1

    def _epoch(
        self, shards: Sequence[ShardInfo], epoch: int, reader: int, skip: int
    ) -> Iterator[Record]:
        n = sum(s.count for s in shards)
        rng = np.random.default_rng([self.seed, epoch, reader, 0xB0FF])
        plan = _ShuffleBuffer(n, self.shuffle_buffer, rng)
        for _ in range(skip):  # replay the consumed part on positions alone
            next(plan)
        if skip:
            pending = set(plan.pending)
            after = plan.next_input
            loader = _EpochLoader(
                self, shards, lambda p: p >= after or p in pending, min([after, *pending])
            )
        else:
            loader = _EpochLoader(self, shards, lambda _p: True, 0)
        for position in plan:
            record = loader.get(position)
            if record is not None:
                yield record

    # -- shards ------------------------------------------------------------------------------------

    def _present(self, shard: ShardInfo) -> bool:
        """A ``stat``: the shard exists with the index's size (else warned once, left out)."""
        try:
            size = (self.root / shard.name).stat().st_size
        except OSError:
            self._corrupt(shard, "missing")
            return False
        if size != shard.bytes:
            self._corrupt(shard, f"{size} bytes, the index says {shard.bytes}")
            return False
        return True

    def _read(self, shard: ShardInfo) -> list[tuple[str, Record]] | None:
        # A shard that failed once stays in the plans (as a resumed reader's would) but is not
        # read again: its positions yield nothing.
        if shard.name in self._bad:
            return None
        try:
            return read_shard(self.root / shard.name, shard.count)
        except (CorruptShardError, OSError) as exc:
            self._bad.add(shard.name)
            self._corrupt(shard, str(exc))
            return None

    def _corrupt(self, shard: ShardInfo, why: str) -> None:
        if shard.name in self._warned:
            return
        self._warned.add(shard.name)
        warnings.warn(
            f"skipping corrupt shard {self.root / shard.name}: {why}; its {shard.count} samples "
            "are left out of this epoch",
            CorruptShardWarning,
            stacklevel=2,
        )


# ----------------------------------------------------------------------------------------------
# A pretraining config's data, written as shards
# ----------------------------------------------------------------------------------------------


def _quotas(sizes: Sequence[int], limit: int | None) -> list[int]:
    """Samples to take from each group: all, or ``limit`` shared in proportion to the sizes."""
    total = sum(sizes)
    if limit is None or limit >= total:
        return list(sizes)
    exact = [limit * n / total for n in sizes]
    quotas = [math.floor(x) for x in exact]
    left = limit - sum(quotas)
    by_remainder = sorted(range(len(sizes)), key=lambda g: (quotas[g] - exact[g], g))
    for g in by_remainder[:left]:
        quotas[g] += 1
    return quotas


def config_records(
    config: PretrainConfig, max_samples: int | None = None
) -> tuple[int, Iterator[Record]]:
    """The training records of a pretraining config, through its own data module.

    :class:`~thinkingearth.pretrain.data.PretrainDataModule` builds the datasets exactly as
    ``pretrain`` does (any ``data.source``); its groups (one per sensor, or the pair for
    ``cross_sensor``) are read in order, group after group, so shards hold one group each.

    Args:
        config: A validated pretraining configuration.
        max_samples: Keep this many records in all, shared among the groups in proportion to
            their sizes (the first ones of each).

    Returns:
        ``(number of records, iterator over them)``.
    """
    from thinkingearth.pretrain.data import PretrainDataModule
    from thinkingearth.pretrain.transforms import Normaliser

    module = PretrainDataModule(config, Normaliser())
    module.build()
    dataset = module.dataset
    sizes = [int(n) for n in module.group_sizes]
    has_items = hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")
    if dataset is not None and has_items and sum(sizes) == len(dataset):  # type: ignore[arg-type]
        quotas = _quotas(sizes, max_samples)
        offsets = np.cumsum([0, *sizes[:-1]]).tolist()

        def records() -> Iterator[Record]:
            for offset, quota in zip(offsets, quotas, strict=True):
                for i in range(quota):
                    yield dataset[offset + i]  # type: ignore[index]

        return sum(quotas), records()
    if dataset is None:  # pragma: no cover - build() always makes one
        raise UserInputError("the config's data section made no dataset")
    stream: Iterator[Record] = iter(dataset)  # type: ignore[call-overload]
    if max_samples is None:
        raise UserInputError(
            "this data source is a stream without an end; give --max-samples to bound it"
        )
    return max_samples, islice(stream, max_samples)


def shard_config(
    config: PretrainConfig,
    out: str | Path,
    *,
    shard_size: int = 256,
    max_samples: int | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> ShardIndex:
    """``thinkingearth shard``: write a pretraining config's data section as shards.

    Raises:
        UserInputError: Bad sizes, an unusable ``out``, or a config that already reads shards.
    """
    if shard_size < 1:
        raise UserInputError(f"--shard-size must be >= 1, got {shard_size}")
    if max_samples is not None and max_samples < 1:
        raise UserInputError(f"--max-samples must be >= 1, got {max_samples}")
    if str(getattr(config.data, "source", "")) == "shards":
        raise UserInputError(
            "data.source is already shards; give a config whose data section reads the archive"
        )
    _prepare_folder(Path(out), overwrite)  # refuse before any sample is made
    total, records = config_records(config, max_samples)
    say = log or (lambda _message: None)
    say(f"[shard] {config.name}: {total} samples ({config.data.source}) -> {out}")
    source = {"config": config.name, "recipe": config.recipe, "data": config.to_dict()["data"]}
    return write_shards(
        records,
        out,
        shard_size=shard_size,
        total=total,
        overwrite=overwrite,
        source=source,
        log=log,
    )
