"""WebDataset shards: exact round trip, atomic writes, the rank x worker split, resume, corruption."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import tarfile
import textwrap
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from thinkingearth.cli import main
from thinkingearth.errors import UserInputError
from thinkingearth.pretrain.shards import (
    INDEX_NAME,
    CorruptShardWarning,
    ShardDataset,
    ShardIndex,
    assign_shards,
    config_records,
    read_shard,
    shard_config,
    write_shards,
)

# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _equal(a: Any, b: Any) -> bool:
    """Exact equality: same types, tensors equal in dtype and values, NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, Mapping):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _strip_key(record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    record = dict(record)
    if "a" in record and "image" not in record:
        parts = {p: dict(record[p]) for p in ("a", "b")}
        key = parts["a"].pop("shard_key")
        parts["b"].pop("shard_key")
        return key, parts
    return record.pop("shard_key"), record


def _index_of(key: str) -> int:
    """The writing order of a record from its ``shard_key`` (``shard-000001.tar/000000007``)."""
    return int(key.split("/")[1])


def _records(n: int, *, sensors: Sequence[str] = ("sentinel-2-l2a",)) -> list[dict[str, Any]]:
    """Small hand-made Samples with every kind of value a Sample carries."""
    generator = torch.Generator().manual_seed(n)
    records = []
    for i in range(n):
        sensor = sensors[i * len(sensors) // n]
        bands = ("B02", "B03", "B04") if sensor.startswith("sentinel-2") else ("VV", "VH")
        record: dict[str, Any] = {
            "image": torch.randn(len(bands), 4, 4, generator=generator),
            "bands": bands,
            "sensor": sensor,
            "lon": 10.0 + i / 7,
            "lat": math.nan if i % 5 == 0 else 45.0 - i / 3,
            "time": 19000.0 + i,
            "gsd": 10.0,
            "labels": torch.randint(0, 2, (5,), generator=generator),
            "crs": "EPSG:32632",
            "transform": (10.0, 0.0, 500000.0 + i, 0.0, -10.0, 5000000.0),
        }
        if sensor == "sentinel-1-grd":
            record["units"] = "linear"
        records.append(record)
    return records


def _keys(stream: Iterator[dict[str, Any]], limit: int | None = None) -> list[str]:
    keys = []
    for record in stream:
        keys.append(record["shard_key"])
        if limit is not None and len(keys) == limit:
            break
    return keys


def _rank_stream(dataset_for: Any, workers: int, batch_size: int, limit: int) -> list[str]:
    """A rank's samples as an in-order DataLoader gives them: batch i from worker i mod W."""
    streams = [dataset_for().stream(w, workers) for w in range(workers)]
    keys: list[str] = []
    batch = 0
    while len(keys) < limit:
        stream = streams[batch % workers]
        keys.extend(
            record["shard_key"] for _, record in zip(range(batch_size), stream, strict=False)
        )
        batch += 1
    return keys[:limit]


def _all_keys(root: Path, without: Sequence[str] = ()) -> list[str]:
    """Every ``shard_key`` of a shards folder, from the shards themselves (sorted)."""
    index = ShardIndex.read(root)
    return sorted(
        f"{s.name}/{key}"
        for s in index.shards
        if s.name not in without
        for key, _ in read_shard(root / s.name)
    )


def _list_collate(batch: list[dict[str, Any]]) -> list[str]:
    return [record["shard_key"] for record in batch]


@pytest.fixture
def many(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """37 hand-made samples of two sensors (19 + 18) in shards of 4: 10 shards, two short."""
    records = _records(37, sensors=("sentinel-2-l2a", "sentinel-1-grd"))
    root = tmp_path / "many"
    write_shards(records, root, shard_size=4)
    return root, records


# ----------------------------------------------------------------------------------------------
# Writing and round trip
# ----------------------------------------------------------------------------------------------


def test_synthetic_source_round_trips_exactly(tiny: Any, tmp_path: Path) -> None:
    config = tiny(
        data={"sensors": [{"sensor": "sentinel-2-l2a", "n": 5}, {"sensor": "s1", "n": 4}]}
    )
    index = shard_config(config, tmp_path / "shards", shard_size=3)
    total, expected = config_records(config)  # the same deterministic world, made again
    expected = list(expected)
    assert total == len(expected) == index.total == 9
    # the index: per-shard counts, one group (sensor and bands) per shard, totals per group
    assert [s.count for s in index.shards] == [3, 2, 3, 1]
    assert [s.group for s in index.shards] == [0, 0, 1, 1]
    assert [(g["sensor"], g["count"]) for g in index.groups] == [
        ("sentinel-2-l2a", 5),
        ("sentinel-1-grd", 4),
    ]
    assert index.source is not None and index.source["config"] == config.name
    for shard in index.shards:
        assert (index.root / shard.name).stat().st_size == shard.bytes
    # WebDataset layout: plain tar, <key>.json + <key>.safetensors per sample, in order
    with tarfile.open(index.root / "shard-000000.tar") as tar:
        names = tar.getnames()
    assert names == [f"00000000{i}.{ext}" for i in range(3) for ext in ("json", "safetensors")]
    header = json.loads((index.root / INDEX_NAME).read_text())
    assert header["total"] == 9 and len(header["shards"]) == 4
    got = list(ShardDataset(index.root, seed=0, epochs=1, keys=True))
    assert len(got) == 9
    by_index = {_index_of(k): r for k, r in map(_strip_key, got)}
    for i, record in enumerate(expected):
        assert set(record) >= {"image", "bands", "sensor", "lon", "lat", "time", "gsd", "labels"}
        assert _equal(by_index[i], record), i
    assert by_index[0]["image"].dtype == torch.float32
    assert isinstance(by_index[0]["bands"], tuple)
    assert by_index[8]["units"] == "linear"  # Sentinel-1 says its units


def test_cross_sensor_pairs_round_trip(tiny: Any, tmp_path: Path) -> None:
    config = tiny(
        recipe="cross_sensor",
        data={
            "pair": ["sentinel-1-grd", "sentinel-2-l2a"],
            "sensors": [{"sensor": "sentinel-2-l2a", "n": 3}, {"sensor": "s1", "n": 3}],
        },
        contrastive={"targets": "simclr"},
    )
    index = shard_config(config, tmp_path / "pairs", shard_size=2)
    assert index.total == 3 and [s.count for s in index.shards] == [2, 1]
    assert set(index.groups[0]["pair"]) == {"a", "b"}
    _, expected = config_records(config)
    got = dict(map(_strip_key, ShardDataset(index.root, seed=1, epochs=1, keys=True)))
    for i, pair in enumerate(expected):
        assert _equal(got[f"shard-{i // 2:06d}.tar/{i:09d}"], pair)
        assert pair["a"]["sensor"] == "sentinel-1-grd" and pair["b"]["sensor"] == "sentinel-2-l2a"


def test_every_kind_of_value_round_trips(tmp_path: Path) -> None:
    records = _records(6)
    records[1]["time"] = torch.tensor([18000.0, 18012.0], dtype=torch.float64)  # a series
    records[2]["extra_array"] = np.arange(6, dtype=np.int16).reshape(2, 3)
    records[3]["mask"] = torch.zeros(4, 4, dtype=torch.int64)
    records[4]["tags"] = {"tile": "32TNS", "orbit": [1, 2]}
    records[5]["lon"] = np.float32(7.25)  # a numpy scalar comes back as a Python float
    write_shards(records, tmp_path / "s", shard_size=4)
    got = dict(map(_strip_key, ShardDataset(tmp_path / "s", seed=0, epochs=1, keys=True)))
    by_index = {_index_of(k): r for k, r in got.items()}
    for i in range(5):
        assert _equal(by_index[i], records[i]), i
    assert by_index[5]["lon"] == 7.25 and type(by_index[5]["lon"]) is float
    with pytest.raises(TypeError, match="'bad'"):
        write_shards([{**records[0], "bad": object()}], tmp_path / "t")


def test_an_interrupted_write_leaves_no_partial_shard(tmp_path: Path) -> None:
    records = _records(10)

    def failing() -> Iterator[dict[str, Any]]:
        for i, record in enumerate(records):
            if i == 7:
                raise RuntimeError("the source broke")
            yield record

    out = tmp_path / "shards"
    with pytest.raises(RuntimeError, match="the source broke"):
        write_shards(failing(), out, shard_size=3)
    # the two full shards are complete under their names; the third never got one
    assert sorted(p.name for p in out.iterdir()) == ["shard-000000.tar", "shard-000001.tar"]
    assert [len(read_shard(out / f"shard-00000{i}.tar")) for i in (0, 1)] == [3, 3]
    with pytest.raises(UserInputError, match="did not finish"):
        ShardDataset(out, seed=0)
    with pytest.raises(UserInputError, match="unfinished shard write"):
        write_shards(records, out, shard_size=3)
    index = write_shards(records, out, shard_size=3, overwrite=True)
    assert index.total == 10 and len(index.shards) == 4


def test_bad_arguments_are_one_line_errors(
    tiny: Any, tmp_path: Path, many: tuple[Path, list]
) -> None:
    root, _ = many
    reads_shards = tiny(data={"source": "shards", "root": str(root), "sensors": ["s2"]})
    with pytest.raises(UserInputError, match="already shards"):
        shard_config(reads_shards, tmp_path / "again")
    with pytest.raises(UserInputError, match="shard-size"):
        write_shards(_records(2), tmp_path / "x", shard_size=0)
    with pytest.raises(UserInputError, match="empty"):
        write_shards([], tmp_path / "y")
    with pytest.raises(UserInputError, match=r"no index\.json"):
        ShardDataset(tmp_path, seed=0)
    with pytest.raises(UserInputError, match="both rank and world"):
        ShardDataset(root, seed=0, rank=1)
    with pytest.raises(UserInputError, match="cannot feed"):
        next(ShardDataset(root, seed=0, rank=0, world=4).stream(0, 3))
    with pytest.raises(UserInputError, match="whole number of batches"):
        ShardDataset(root, seed=0, start=3, batch_size=2).worker_start(0, 2)


def test_cli_writes_shards(tiny: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(tiny().to_dict()))  # JSON is YAML
    out = tmp_path / "cli"
    argv = ["shard", "--config", str(config), "--out", str(out), "--shard-size", "2"]
    assert main([*argv, "--max-samples", "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples"] == 5 and result["shards"] == 3  # 3 S2 (2 + 1) and 2 S1
    assert [g["count"] for g in result["groups"]] == [3, 2]  # shared in proportion (16:16)
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert ShardIndex.read(out).total == 5  # the refused run left the shards alone


# ----------------------------------------------------------------------------------------------
# The split: every sample exactly once per epoch across ranks x workers
# ----------------------------------------------------------------------------------------------


def test_every_sample_once_per_epoch_across_ranks_and_workers(
    many: tuple[Path, list[dict[str, Any]]],
) -> None:
    root, records = many
    world, workers = 2, 2
    epochs: list[list[str]] = [[], []]
    per_rank: list[int] = []
    for rank in range(world):
        ds = ShardDataset(
            root, seed=3, shuffle_buffer=6, rank=rank, world=world, epochs=2, keys=True
        )
        mine = 0
        for worker in range(workers):
            keys = _keys(ds.stream(worker, workers))
            first = sum(s.count for s in ds.reader_shards(0, worker, workers))
            epochs[0] += keys[:first]
            epochs[1] += keys[first:]
            mine += first
        per_rank.append(mine)
    everything = _all_keys(root)
    assert len(everything) == len(records)
    assert sorted(epochs[0]) == everything and sorted(epochs[1]) == everything
    assert epochs[0] != epochs[1]  # a new permutation and shuffle each epoch
    assert abs(per_rank[0] - per_rank[1]) <= 2 * 4  # balanced by sample counts (shards of <= 4)


def test_assignment_is_balanced_by_sample_counts() -> None:
    counts = [256] * 10 + [3, 3, 3, 3]
    for epoch in range(5):
        shares = assign_shards(counts, 4, seed=0, epoch=epoch)
        assert sorted(i for share in shares for i in share) == list(range(len(counts)))
        loads = [sum(counts[i] for i in share) for share in shares]
        assert max(loads) - min(loads) <= 256
    assert assign_shards(counts, 4, 0, 0) != assign_shards(counts, 4, 0, 1)


def test_dataloader_workers_read_every_sample_once(many: tuple[Path, list]) -> None:
    root, records = many
    ds = ShardDataset(root, seed=0, shuffle_buffer=5, epochs=1, keys=True, batch_size=3)
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=_list_collate)
    keys = [k for batch in loader for k in batch]
    assert len(keys) == len(records) and len(set(keys)) == len(records)


# ----------------------------------------------------------------------------------------------
# Resume: no repeats, no skips
# ----------------------------------------------------------------------------------------------


def test_resume_continues_exactly_across_epochs(many: tuple[Path, list]) -> None:
    root, _ = many

    def dataset(start: int = 0) -> ShardDataset:
        return ShardDataset(root, seed=5, shuffle_buffer=7, start=start, keys=True)

    full = _keys(iter(dataset()), 100)  # 37 a pass: crosses two epoch boundaries
    assert sorted(full[:37]) == sorted(full[37:74])
    for k in (1, 6, 20, 36, 37, 40, 80):
        assert _keys(iter(dataset(k)), 100 - k) == full[k:], k


def test_resume_follows_the_dataloader_order_with_workers(many: tuple[Path, list]) -> None:
    root, _ = many
    b = 3

    def dataset(start: int = 0) -> ShardDataset:
        return ShardDataset(
            root, seed=2, shuffle_buffer=4, rank=1, world=2, start=start, batch_size=b, keys=True
        )

    full = _rank_stream(dataset, 2, b, 60)
    for step in (1, 2, 5, 9):
        resumed = _rank_stream(lambda s=step: dataset(s * b), 2, b, 60 - step * b)
        assert resumed == full[step * b :], step
    # a real DataLoader gives batch i from worker i mod 2, as assumed
    loader = DataLoader(dataset(), batch_size=b, num_workers=2, collate_fn=_list_collate)
    real = [k for _, batch in zip(range(10), loader, strict=False) for k in batch]
    assert real == full[: 10 * b]
    loader = DataLoader(dataset(4 * b), batch_size=b, num_workers=2, collate_fn=_list_collate)
    again = [k for _, batch in zip(range(6), loader, strict=False) for k in batch]
    assert again == full[4 * b : 10 * b]


def test_resume_opens_only_shards_with_unread_samples(
    many: tuple[Path, list], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = many
    opened: list[str] = []
    real = read_shard

    def spy(path: Path, count: int | None = None) -> Any:
        opened.append(Path(path).name)
        return real(path, count)

    monkeypatch.setattr("thinkingearth.pretrain.shards.read_shard", spy)
    ds = ShardDataset(root, seed=0, shuffle_buffer=2, start=30, keys=True, epochs=1)
    rest = _keys(iter(ds))
    assert len(rest) == 7
    assert len(opened) <= 3  # the last two or three shards of the epoch, not all eleven


# ----------------------------------------------------------------------------------------------
# Corrupt shards
# ----------------------------------------------------------------------------------------------


def _corrupt_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, CorruptShardWarning)]


def test_a_truncated_shard_is_skipped_with_one_warning(many: tuple[Path, list]) -> None:
    root, records = many
    path = root / "shard-000002.tar"
    path.write_bytes(path.read_bytes()[:1500])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keys = _keys(iter(ShardDataset(root, seed=0, shuffle_buffer=3, epochs=2, keys=True)))
    messages = _corrupt_warnings(caught)
    assert len(messages) == 1 and "shard-000002.tar" in messages[0]
    left = _all_keys(root, without=["shard-000002.tar"])
    assert len(left) == len(records) - 4
    assert sorted(keys[: len(left)]) == left and sorted(keys[len(left) :]) == left


def test_a_shard_with_garbled_content_is_dropped_whole(many: tuple[Path, list]) -> None:
    root, records = many
    path = root / "shard-000004.tar"  # the short one: the last 3 Sentinel-2 samples
    assert ShardIndex.read(root).shards[4].count == 3
    data = bytearray(path.read_bytes())
    start = data.index(b'{"sample"', 0) + 10  # inside the second record's JSON, same size
    start = data.index(b'{"sample"', start)
    data[start : start + 8] = b"\x00garble\xff"
    path.write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keys = _keys(iter(ShardDataset(root, seed=0, epochs=1, keys=True)))
    messages = _corrupt_warnings(caught)
    assert len(messages) == 1 and "shard-000004.tar" in messages[0]
    assert not any(k.startswith("shard-000004.tar/") for k in keys)  # none of its samples
    assert len(keys) == len(records) - 3 and len(set(keys)) == len(keys)  # its 3 are gone


def test_missing_shards_are_warned_once_and_none_left_is_an_error(many: tuple[Path, list]) -> None:
    root, _ = many
    (root / "shard-000007.tar").unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keys = _keys(iter(ShardDataset(root, seed=0, epochs=3, keys=True)))
    assert len(_corrupt_warnings(caught)) == 1 and len(keys) == 3 * (37 - 4)
    for path in root.glob("shard-*.tar"):
        path.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UserInputError, match="no shard"):
            next(iter(ShardDataset(root, seed=0)))


# ----------------------------------------------------------------------------------------------
# DDP: 2 gloo processes
# ----------------------------------------------------------------------------------------------

_DDP_READER = textwrap.dedent(
    """
    import json, sys
    import torch.distributed as dist
    from thinkingearth.pretrain.shards import ShardDataset

    root, out, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    dist.init_process_group("gloo")
    from torch.utils.data import DataLoader

    ds = ShardDataset(root, seed=7, shuffle_buffer=5, epochs=1, keys=True, batch_size=2)
    loader = DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=lambda b: b)
    keys = [r["shard_key"] for batch in loader for r in batch]
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, keys)
    if dist.get_rank() == 0:
        with open(out, "w") as f:
            json.dump(everyone, f)
    dist.destroy_process_group()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_gloo_ranks_see_every_sample_once(many: tuple[Path, list], tmp_path: Path) -> None:
    root, records = many
    script = tmp_path / "reader.py"
    script.write_text(_DDP_READER)
    out = tmp_path / "keys.json"
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "RANK": str(rank),
            "WORLD_SIZE": "2",
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), str(root), str(out), "2"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        _, err = proc.communicate(timeout=170)
        assert proc.returncode == 0, err[-3000:]
    per_rank = json.loads(out.read_text())
    assert len(per_rank) == 2 and all(per_rank)
    seen = Counter(k for keys in per_rank for k in keys)
    assert len(seen) == len(records) and set(seen.values()) == {1}
