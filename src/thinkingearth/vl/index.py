"""The embedding index: one GeoParquet table of rows, an approximate-nearest-neighbour index, a manifest.

An index is a folder ``INDEX`` that :mod:`thinkingearth.vl.embed` writes and
``thinkingearth search`` reads:

* ``index.json``: the manifest (format, the SHA-256 of the vision-language model the rows were
  embedded with, where that model was, the embedding width, created and updated times (UTC), the
  row count, and the names of the current table and ANN files);
* ``rows-<generation>.parquet``: GeoParquet 1.1, one row per sample or tile: ``id`` (the reader's
  sample id, or ``file@col,row,WxH`` for a scene tile), ``key`` (what makes a row unique:
  the reader, its root, split and id, or the file's absolute path and window), ``source`` (the
  scene file, or ``reader:root:split``), ``sensor``, ``time`` (UTC acquisition time, null when
  unknown), ``geometry`` (the footprint in WGS84, null when the sample has no georeferencing),
  its covering ``bbox``, ``thumbnail`` (a PNG path relative to the folder) and ``embedding``
  (float32, L2-normalised, ``dim`` wide);
* ``rows-<generation>.arrow``: the table's columns a search filters on and shows (no
  embeddings; the bbox as four columns), as an uncompressed Arrow IPC file that search
  memory-maps, so taking a hit's row costs microseconds at any size (a Parquet row group must be
  decompressed whole);
* ``ann-<generation>.usearch``: a usearch HNSW index (inner product on half-precision vectors)
  whose keys are row numbers of the table; opened as a memory-mapped view, so ``search`` does not
  read it into memory. usearch was chosen by measurement against faiss-cpu and LanceDB
  (``benchmarks/search_latency.md``);
* ``thumbnails/``: small PNGs, one per row.

Writes are atomic. A new index is assembled in a temporary sibling folder and renamed into place.
An update (new rows) writes a new table and ANN file under a new generation name, then replaces
the manifest (the commit point: readers follow the manifest, so they see the old index or the new
one, never half of one), then deletes the previous generation. Files of a generation that never
reached the manifest (a killed update) are swept by the next update.

Bad input is one line (:class:`IndexError_`, a :class:`~thinkingearth.errors.UserInputError`): a
folder without a manifest, a manifest, table or ANN file that cannot be read or that disagree, an
empty index, a query vector of another width, or a model whose SHA-256 is not the one recorded.
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from thinkingearth.errors import UserInputError

__all__ = [
    "INDEX_FORMAT",
    "MANIFEST_NAME",
    "EmbeddingIndex",
    "Filters",
    "Hit",
    "IndexError_",
    "IndexRows",
    "Manifest",
    "check_model",
    "footprint_lonlat",
    "is_index",
    "load_all_embeddings",
    "open_index",
    "parse_bbox",
    "read_rows",
    "write_index",
]

#: Format marker of the manifest.
INDEX_FORMAT = "thinkingearth.vl_index"
_FORMAT_VERSION = 1
MANIFEST_NAME = "index.json"
THUMBNAILS = "thumbnails"
_GENERATION_FILE = re.compile(r"^(rows|ann)-([0-9a-f]{12})\.(parquet|arrow|usearch)$")
#: HNSW settings (benchmarks/search_latency.md: recall@10 and latency at 1 M rows).
_CONNECTIVITY = 16
_EXPANSION_ADD = 64
_EXPANSION_SEARCH = 64
#: Filtered searches whose candidate count would pass this score the filtered rows exactly.
_EXACT_LIMIT = 50_000
#: A row counts as reachable in the graph when a search for its own vector returns it among
#: this many (room for a few exact duplicates, which are equally good answers).
_REACH_CHECK = 8
#: Rows per Parquet row group (search reads whole groups: small ones keep that fast).
_ROW_GROUP = 2048


class IndexError_(UserInputError):
    """An index that cannot be used: missing, corrupt, empty, or built by another model."""


# --- rows ------------------------------------------------------------------------------------


@dataclass
class IndexRows:
    """Rows to add to an index, column by column (one entry per row in every list).

    Attributes:
        ids: the reader's sample id, or ``file@col,row,WxH`` for a scene tile.
        keys: unique keys (an existing key is not added twice).
        sources: the scene file, or ``reader:root:split``.
        sensors: registry sensor names.
        times: acquisition times, days since 1970-01-01 UTC (NaN: unknown).
        footprints: WGS84 rings ``[(lon, lat), ...]`` (closed or not), or ``None``.
        thumbnails: PNG paths relative to the index folder (``""``: none).
        embeddings: ``[N, dim]`` float32, L2-normalised.
    """

    ids: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    sensors: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    footprints: list[Sequence[tuple[float, float]] | None] = field(default_factory=list)
    thumbnails: list[str] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def extend(self, other: IndexRows) -> None:
        """Append ``other``'s rows."""
        for name in (
            "ids",
            "keys",
            "sources",
            "sensors",
            "times",
            "footprints",
            "thumbnails",
            "embeddings",
        ):
            getattr(self, name).extend(getattr(other, name))

    def matrix(self, dim: int) -> np.ndarray:
        """The embeddings as one ``[N, dim]`` float32 array."""
        if not self.embeddings:
            return np.zeros((0, dim), dtype=np.float32)
        out = np.stack([np.asarray(e, dtype=np.float32).reshape(-1) for e in self.embeddings])
        if out.shape[1] != dim:
            raise IndexError_(f"embeddings are {out.shape[1]}-d; the index holds {dim}-d ones")
        return out


def footprint_lonlat(
    crs: Any, transform: Sequence[float], height: int, width: int, points_per_side: int = 2
) -> list[tuple[float, float]] | None:
    """The outline of a raster window in WGS84 (lon, lat), densified along each side.

    Args:
        crs: the window's CRS (anything rasterio's ``CRS.from_user_input`` takes; EPSG string or
            WKT as Samples carry it).
        transform: the affine transform (``a, b, c, d, e, f``) of the window's top-left pixel.
        height, width: the window's size in pixels.
        points_per_side: points along each side (a projected square is not a lon/lat square).

    Returns:
        The closed ring, or ``None`` without a usable CRS.
    """
    from rasterio.crs import CRS
    from rasterio.errors import CRSError
    from rasterio.warp import transform as warp_transform

    if crs in (None, ""):
        return None
    try:
        source = CRS.from_user_input(crs)
    except (CRSError, ValueError, TypeError):
        return None
    a, b, c, d, e, f = (float(v) for v in tuple(transform)[:6])
    steps = np.linspace(0.0, 1.0, points_per_side + 1)[:-1]
    cols = np.concatenate(
        [steps * width, np.full_like(steps, width), (1 - steps) * width, np.zeros_like(steps)]
    )
    rows = np.concatenate(
        [np.zeros_like(steps), steps * height, np.full_like(steps, height), (1 - steps) * height]
    )
    xs = a * cols + b * rows + c
    ys = d * cols + e * rows + f
    try:
        lons, lats = warp_transform(source, "EPSG:4326", xs.tolist(), ys.tolist())
    except Exception:
        return None
    ring = [(float(x), float(y)) for x, y in zip(lons, lats, strict=True)]
    if not all(math.isfinite(x) and math.isfinite(y) for x, y in ring):
        return None
    return [*ring, ring[0]]


# --- manifest --------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Manifest:
    """What ``index.json`` records (module docs)."""

    model_sha256: str
    model_path: str
    embed_dim: int
    rows: int
    table: str
    ann: str
    created: str
    updated: str
    ann_library: str = "usearch"
    ann_version: str = ""
    metric: str = "inner product (cosine of L2-normalised vectors)"
    model: Mapping[str, Any] = field(default_factory=dict)
    #: Rows the HNSW graph does not lead to (found at build time); every search scores them
    #: exactly, so no row is invisible (an index written before this field: none recorded).
    unreached: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON data."""
        return {
            "format": INDEX_FORMAT,
            "format_version": _FORMAT_VERSION,
            "model_sha256": self.model_sha256,
            "model_path": self.model_path,
            "model": dict(self.model),
            "embed_dim": self.embed_dim,
            "rows": self.rows,
            "table": self.table,
            "ann": {
                "file": self.ann,
                "library": self.ann_library,
                "version": self.ann_version,
                "metric": self.metric,
                "connectivity": _CONNECTIVITY,
                "expansion_add": _EXPANSION_ADD,
                "expansion_search": _EXPANSION_SEARCH,
                "dtype": "f16",
                "unreached_rows": list(self.unreached),
            },
            "created": self.created,
            "updated": self.updated,
        }

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        """The manifest of ``folder``; one-line :class:`IndexError_` when it cannot be used."""
        path = folder / MANIFEST_NAME
        if not folder.is_dir():
            raise IndexError_(
                f"index {folder} does not exist; build one with thinkingearth embed --out {folder}"
            )
        if not path.is_file():
            raise IndexError_(
                f"{folder} is not an embedding index (no {MANIFEST_NAME}); build one with "
                f"thinkingearth embed --out {folder}"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise IndexError_(
                f"{path}: not a readable JSON manifest ({_first_line(exc)})"
            ) from None
        if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
            raise IndexError_(f"{path}: expected an index manifest (format {INDEX_FORMAT!r})")
        try:
            ann = data["ann"]
            return cls(
                model_sha256=str(data["model_sha256"]),
                model_path=str(data["model_path"]),
                embed_dim=int(data["embed_dim"]),
                rows=int(data["rows"]),
                table=str(data["table"]),
                ann=str(ann["file"]),
                created=str(data["created"]),
                updated=str(data["updated"]),
                ann_library=str(ann.get("library", "usearch")),
                ann_version=str(ann.get("version", "")),
                model=dict(data.get("model") or {}),
                unreached=tuple(int(r) for r in ann.get("unreached_rows", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexError_(f"{path}: incomplete manifest ({_first_line(exc)})") from None

    def write(self, folder: Path) -> None:
        """Replace ``folder/index.json`` atomically (fsynced before the rename)."""
        path = folder / MANIFEST_NAME
        tmp = folder / f".{MANIFEST_NAME}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with tmp.open("w", encoding="utf-8") as handle:
                handle.write(json.dumps(self.to_dict(), indent=2) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def _umask() -> int:
    from thinkingearth.fileio import current_umask

    return current_umask()


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:200]


def is_index(folder: str | Path) -> bool:
    """Whether ``folder`` holds an index manifest."""
    return (Path(folder) / MANIFEST_NAME).is_file()


def check_model(manifest: Manifest, sha256: str | None, what: str, folder: Path) -> None:
    """Refuse a model other than the one the index was built with (one line).

    Raises:
        IndexError_: ``sha256`` differs from the manifest's (or is unknown).
    """
    if sha256 != manifest.model_sha256:
        got = "an unsaved model" if sha256 is None else f"SHA-256 {sha256[:12]}..."
        raise IndexError_(
            f"index {folder} was built with the model of SHA-256 {manifest.model_sha256[:12]}... "
            f"({manifest.model_path}) but {what} is {got}: embeddings of two models cannot be "
            f"compared; use that model, or build a new index (thinkingearth embed --overwrite)"
        )


# --- the table --------------------------------------------------------------------------------


def _table(rows: IndexRows, dim: int) -> Any:
    """The rows as a GeoParquet-ready Arrow table (``geo`` metadata, covering ``bbox``)."""
    import geopandas as gpd
    import pyarrow as pa
    import shapely
    from geopandas.io.arrow import _geopandas_to_arrow

    geometries = [None if ring is None else shapely.Polygon(ring) for ring in rows.footprints]
    times = [
        None if t is None or not math.isfinite(t) else round(t * 86_400_000) for t in rows.times
    ]
    frame = gpd.GeoDataFrame(
        {
            "id": rows.ids,
            "key": rows.keys,
            "source": rows.sources,
            "sensor": rows.sensors,
            "thumbnail": rows.thumbnails,
        },
        geometry=gpd.GeoSeries(geometries, crs="EPSG:4326"),
    )
    table = _geopandas_to_arrow(
        frame, index=False, geometry_encoding="WKB", write_covering_bbox=True
    )
    # Plain WKB binary with the GeoParquet "geo" metadata (what GeoParquet readers use), without
    # the geoarrow extension type: every read of an extension column pyarrow does not know makes
    # it look for a module to load it, milliseconds per search.
    position = table.schema.get_field_index("geometry")
    column = table.column("geometry")
    storage = pa.chunked_array(
        [getattr(chunk, "storage", chunk) for chunk in column.chunks], type=pa.binary()
    )
    table = table.set_column(position, pa.field("geometry", pa.binary()), storage)
    time_array = pa.array(times, type=pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
    table = table.add_column(table.schema.get_field_index("sensor") + 1, "time", time_array)
    matrix = rows.matrix(dim)
    flat = pa.array(matrix.reshape(-1), type=pa.float32())
    return table.append_column("embedding", pa.FixedSizeListArray.from_arrays(flat, dim))


def _read_table(path: Path, columns: Sequence[str] | None = None) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, columns=list(columns) if columns else None)
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise IndexError_(f"cannot read the index table {path}: {_first_line(exc)}") from None


def _embeddings(table: Any, dim: int) -> np.ndarray:
    column = table.column("embedding").combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float32).reshape(-1, dim)


def _rows_from_table(table: Any, dim: int) -> IndexRows:
    """An index table back as :class:`IndexRows` (to write it again with new rows)."""
    import shapely

    rows = IndexRows()
    rows.ids = table.column("id").to_pylist()
    rows.keys = table.column("key").to_pylist()
    rows.sources = table.column("source").to_pylist()
    rows.sensors = table.column("sensor").to_pylist()
    times = table.column("time").cast("int64").to_pylist()
    rows.times = [math.nan if t is None else t / 86_400_000 for t in times]
    rows.thumbnails = table.column("thumbnail").to_pylist()
    rows.footprints = [
        None if wkb is None else list(shapely.from_wkb(wkb).exterior.coords)
        for wkb in table.column("geometry").to_pylist()
    ]
    rows.embeddings = list(_embeddings(table, dim))
    return rows


# --- the ANN index ----------------------------------------------------------------------------


def _build_ann(matrix: np.ndarray, path: Path, threads: int | None = None) -> tuple[int, ...]:
    """Build and save the HNSW graph; return the rows it does not lead to.

    An HNSW graph leaves a few nodes that no search reaches, more when built from several
    threads: about 3 rows in 2,000 clustered vectors per 2-thread build (a search for all 2,000
    rows returned 1,997), 50-60 in 100,000 on one thread or two
    (``benchmarks/ann_reachability.md``). Every row is searched for by its own vector once, with
    the search settings queries use, and those not returned are listed for exact scoring. The
    check costs about as much as the build itself (measured there); it runs once per index
    generation, and a row that cannot be found is a wrong answer, not a slow one.
    """
    from usearch.index import Index

    index = Index(
        ndim=matrix.shape[1],
        metric="ip",
        dtype="f16",
        connectivity=_CONNECTIVITY,
        expansion_add=_EXPANSION_ADD,
        expansion_search=_EXPANSION_SEARCH,  # the reachability check searches as queries do
    )
    if len(matrix):
        index.add(
            np.arange(len(matrix), dtype=np.uint64),
            np.ascontiguousarray(matrix, dtype=np.float32),
            threads=threads or (os.cpu_count() or 1),
        )
    index.save(str(path))
    if not len(matrix):
        return ()
    found = index.search(
        np.ascontiguousarray(matrix, dtype=np.float32),
        min(_REACH_CHECK, len(matrix)),
        threads=threads or (os.cpu_count() or 1),
    )
    keys = np.asarray(found.keys, dtype=np.int64).reshape(len(matrix), -1)
    reached = (keys == np.arange(len(matrix))[:, None]).any(axis=1)
    return tuple(int(r) for r in np.flatnonzero(~reached))


def _usearch_version() -> str:
    from importlib.metadata import version

    return version("usearch")


# --- writing ----------------------------------------------------------------------------------


def _generation() -> str:
    return uuid.uuid4().hex[:12]


def _write_generation(
    folder: Path, rows: IndexRows, dim: int, gen: str
) -> tuple[str, str, tuple[int, ...]]:
    import pyarrow.parquet as pq

    table_name, ann_name = f"rows-{gen}.parquet", f"ann-{gen}.usearch"
    lookup_name = lookup_file(table_name)
    table = _table(rows, dim)
    temporaries = {name: folder / f".{name}.tmp" for name in (table_name, lookup_name, ann_name)}
    try:
        pq.write_table(
            table, temporaries[table_name], row_group_size=_ROW_GROUP, compression="zstd"
        )
        _write_lookup(table, temporaries[lookup_name])
        unreached = _build_ann(rows.matrix(dim), temporaries[ann_name])
        for tmp in temporaries.values():
            with tmp.open("rb") as handle:
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
        for name, tmp in temporaries.items():
            os.replace(tmp, folder / name)
    finally:
        for tmp in temporaries.values():
            tmp.unlink(missing_ok=True)
    return table_name, ann_name, unreached


def lookup_file(table_name: str) -> str:
    """The name of the search lookup file of a table (``rows-<generation>.arrow``)."""
    return table_name.rsplit(".", 1)[0] + ".arrow"


#: Columns of the lookup file: what a search filters on and shows, without the embeddings.
_LOOKUP = (
    "id",
    "source",
    "sensor",
    "time",
    "xmin",
    "ymin",
    "xmax",
    "ymax",
    "geometry",
    "thumbnail",
)


def _write_lookup(table: Any, path: Path) -> None:
    """The table's search columns as an uncompressed Arrow IPC file (memory-mapped by search)."""
    import pyarrow as pa

    bbox = table.column("bbox").combine_chunks()
    columns = {
        "id": table.column("id"),
        "source": table.column("source"),
        "sensor": table.column("sensor"),
        "time": table.column("time").cast(pa.int64()),
        **{name: bbox.field(name) for name in ("xmin", "ymin", "xmax", "ymax")},
        "geometry": table.column("geometry"),
        "thumbnail": table.column("thumbnail"),
    }
    lookup = pa.table(columns)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, lookup.schema) as writer:
        writer.write_table(lookup)


def _sweep(folder: Path, keep: Iterable[str]) -> None:
    """Delete generation files (and temporaries) the manifest does not name."""
    keep = set(keep)
    for path in folder.iterdir():
        name = path.name
        stale = _GENERATION_FILE.match(name) and name not in keep
        temporary = name.startswith((".rows-", ".ann-", f".{MANIFEST_NAME}.tmp-"))
        if (stale or temporary) and path.is_file():
            path.unlink(missing_ok=True)


def write_index(
    folder: Path,
    rows: IndexRows,
    *,
    model_sha256: str,
    model_path: str,
    dim: int,
    model_info: Mapping[str, Any] | None = None,
    previous: Manifest | None = None,
) -> Manifest:
    """Write ``rows`` (all of them, old and new) as the index's next generation and commit it.

    ``folder`` exists (a new index's temporary folder, or the index being updated, with any new
    thumbnails already in it). The manifest is replaced last (module docs).

    Returns:
        The manifest written.
    """
    gen = _generation()
    table_name, ann_name, unreached = _write_generation(folder, rows, dim, gen)
    now = _now()
    manifest = Manifest(
        model_sha256=model_sha256,
        model_path=model_path,
        embed_dim=dim,
        rows=len(rows),
        table=table_name,
        ann=ann_name,
        created=previous.created if previous is not None else now,
        updated=now,
        ann_version=_usearch_version(),
        model=dict(model_info or {}),
        unreached=unreached,
    )
    manifest.write(folder)
    _sweep(folder, (table_name, lookup_file(table_name), ann_name))
    return manifest


def read_rows(folder: Path) -> tuple[Manifest, IndexRows]:
    """Every row of an index (to add new ones), with its manifest."""
    manifest = Manifest.read(folder)
    table = _read_table(folder / manifest.table)
    _check_table(folder, manifest, table.num_rows, table.schema.names)
    return manifest, _rows_from_table(table, manifest.embed_dim)


_COLUMNS = ("id", "key", "source", "sensor", "time", "geometry", "thumbnail", "embedding")


def _check_table(folder: Path, manifest: Manifest, num_rows: int, names: Sequence[str]) -> None:
    missing = [c for c in _COLUMNS if c not in names]
    if missing:
        raise IndexError_(
            f"the index table {folder / manifest.table} lacks column(s) {', '.join(missing)}"
        )
    if num_rows != manifest.rows:
        raise IndexError_(
            f"the index table {folder / manifest.table} has {num_rows} rows but {MANIFEST_NAME} "
            f"records {manifest.rows}: the index is damaged; rebuild it (embed --overwrite)"
        )


# --- searching --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """One search result.

    Attributes:
        rank: 1 for the best.
        id: the reader's sample id, or ``file@col,row,WxH`` for a scene tile.
        score: cosine similarity of the query and the row's embedding.
        sensor: registry sensor name.
        time: ISO 8601 UTC acquisition time, or ``None``.
        footprint: GeoJSON polygon (WGS84), or ``None``.
        thumbnail: the thumbnail PNG, or ``None``.
        source: the scene file or ``reader:root:split``.
        row: the row number in the table.
    """

    rank: int
    id: str
    score: float
    sensor: str
    time: str | None
    footprint: dict[str, Any] | None
    thumbnail: Path | None
    source: str
    row: int

    def centre(self) -> tuple[float, float] | None:
        """Mean lon/lat of the footprint's corners, or ``None``."""
        if self.footprint is None:
            return None
        ring = self.footprint["coordinates"][0][:-1]
        return (sum(p[0] for p in ring) / len(ring), sum(p[1] for p in ring) / len(ring))

    def centre_text(self) -> str:
        """The centre as ``45.1234N 7.5678E``, or ``-``."""
        centre = self.centre()
        if centre is None:
            return "-"
        lon, lat = centre
        return f"{abs(lat):.4f}{'N' if lat >= 0 else 'S'} {abs(lon):.4f}{'E' if lon >= 0 else 'W'}"

    def to_dict(self) -> dict[str, Any]:
        """JSON data (``thumbnail`` as a path string)."""
        return {
            "rank": self.rank,
            "id": self.id,
            "score": round(self.score, 6),
            "sensor": self.sensor,
            "time": self.time,
            "footprint": self.footprint,
            "thumbnail": None if self.thumbnail is None else str(self.thumbnail),
            "source": self.source,
        }


@dataclass(frozen=True)
class Filters:
    """Row filters of a search: WGS84 box (W, S, E, N), times (days, inclusive), sensor."""

    bbox: tuple[float, float, float, float] | None = None
    after: float | None = None
    before: float | None = None
    sensor: str | None = None

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.bbox, self.after, self.before, self.sensor))


class EmbeddingIndex:
    """An index opened for search (:func:`open_index`): the ANN and the lookup file memory-mapped."""

    def __init__(self, folder: Path, manifest: Manifest) -> None:
        import pyarrow.parquet as pq
        from usearch.index import Index

        self.folder = folder
        self.manifest = manifest
        if manifest.rows == 0:
            raise IndexError_(f"index {folder} is empty: it holds no rows; embed some data first")
        table_path = folder / manifest.table
        try:
            self._parquet = pq.ParquetFile(table_path)
        except (OSError, ValueError, Exception) as exc:
            raise IndexError_(
                f"cannot read the index table {table_path}: {_first_line(exc)}"
            ) from None
        _check_table(
            folder, manifest, self._parquet.metadata.num_rows, self._parquet.schema_arrow.names
        )
        ann_path = folder / manifest.ann
        if not ann_path.is_file():
            raise IndexError_(f"index {folder} lacks its ANN file {manifest.ann}; rebuild it")
        try:
            self._ann = Index.restore(str(ann_path), view=True)
        except Exception as exc:
            raise IndexError_(f"cannot read the ANN index {ann_path}: {_first_line(exc)}") from None
        if (
            self._ann is None
            or len(self._ann) != manifest.rows
            or self._ann.ndim != manifest.embed_dim
        ):
            raise IndexError_(
                f"the ANN index {ann_path} does not match {MANIFEST_NAME} (rows or width); "
                "rebuild the index (embed --overwrite)"
            )
        if any(not 0 <= row < manifest.rows for row in manifest.unreached):
            raise IndexError_(
                f"{folder / MANIFEST_NAME} lists unreached rows outside the index; rebuild it "
                "(embed --overwrite)"
            )
        self._ann.expansion_search = _EXPANSION_SEARCH
        self._lookup = self._open_lookup()
        self._meta: dict[str, np.ndarray] | None = None

    def _open_lookup(self) -> Any:
        """The lookup file, memory-mapped (rows are taken from it without reading the rest)."""
        import pyarrow as pa

        path = self.folder / lookup_file(self.manifest.table)
        try:
            lookup = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
        except (OSError, pa.ArrowException) as exc:
            raise IndexError_(
                f"cannot read the index lookup file {path}: {_first_line(exc)}; rebuild the "
                "index (embed --overwrite)"
            ) from None
        if lookup.num_rows != self.manifest.rows or lookup.schema.names != list(_LOOKUP):
            raise IndexError_(
                f"the index lookup file {path} does not match {MANIFEST_NAME}; rebuild the index "
                "(embed --overwrite)"
            )
        return lookup

    def __len__(self) -> int:
        return self.manifest.rows

    def _metadata(self) -> dict[str, np.ndarray]:
        """Sensor, time (days) and bbox of every row, read once (for filters)."""
        if self._meta is None:
            table = self._lookup
            times = table.column("time")
            meta = {
                "sensor": table.column("sensor").combine_chunks().dictionary_encode(),
                "time": np.where(
                    times.is_null().to_numpy(zero_copy_only=False),
                    np.nan,
                    times.fill_null(0).to_numpy().astype(np.float64) / 86_400_000,
                ),
            }
            for name in ("xmin", "ymin", "xmax", "ymax"):
                values = table.column(name).to_numpy(zero_copy_only=False)
                meta[name] = np.asarray(values, dtype=np.float64)  # null (no footprint): NaN
            self._meta = meta
        return self._meta

    def _mask(self, filters: Filters) -> np.ndarray:
        meta = self._metadata()
        mask = np.ones(len(self), dtype=bool)
        if filters.sensor is not None:
            sensors = meta["sensor"]
            names = sensors.dictionary.to_pylist()
            code = names.index(filters.sensor) if filters.sensor in names else -1
            mask &= sensors.indices.to_numpy(zero_copy_only=False) == code
        if filters.after is not None:
            mask &= meta["time"] >= filters.after  # NaN (unknown time) never passes
        if filters.before is not None:
            mask &= meta["time"] <= filters.before
        if filters.bbox is not None:
            west, south, east, north = filters.bbox
            with np.errstate(invalid="ignore"):
                mask &= (
                    (meta["xmax"] >= west)
                    & (meta["xmin"] <= east)
                    & (meta["ymax"] >= south)
                    & (meta["ymin"] <= north)
                )
        return mask

    def nearest(
        self, query: np.ndarray, k: int, filters: Filters | None = None
    ) -> list[tuple[int, float]]:
        """``(row, score)`` of the ``k`` rows nearest ``query`` that pass ``filters``, best first.

        Without filters: the ANN's top ``k``. With filters: the ANN is asked for more candidates
        (in proportion to the share of rows that pass) until ``k`` of them pass; when that would
        take more than a few tens of thousands of candidates, or every row, the rows that pass
        are scored exactly instead. An HNSW graph asked for (nearly) all its rows may return
        fewer than it holds, so a short answer is completed by exact scoring too. Rows the graph
        does not lead to (:attr:`Manifest.unreached`) are scored exactly in every search.
        """
        vector = np.asarray(query, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self.manifest.embed_dim:
            raise IndexError_(
                f"query is {vector.shape[0]}-d; index {self.folder} holds "
                f"{self.manifest.embed_dim}-d embeddings"
            )
        n = len(self)
        k = max(1, min(int(k), n))
        if filters is None or not filters.any:
            found = self._ann.search(vector, k, threads=1)
            if len(found.keys) >= k:
                hits = [
                    (int(r), _score(d)) for r, d in zip(found.keys, found.distances, strict=True)
                ]
                return self._with_unreached(hits, vector, None, k)
            mask = np.ones(n, dtype=bool)  # the graph gave fewer than k: score every row
        else:
            mask = self._mask(filters)
        passing = int(mask.sum())
        if passing == 0:
            return []
        k = min(k, passing)
        count = min(n, max(4 * k, math.ceil(2 * k * n / passing)))
        while count < n and count <= _EXACT_LIMIT:
            found = self._ann.search(vector, count, threads=1)
            hits = [
                (int(r), _score(d))
                for r, d in zip(found.keys, found.distances, strict=True)
                if mask[int(r)]
            ]
            hits = self._with_unreached(hits, vector, mask, k)
            if len(hits) >= k:
                return hits
            count = min(n, count * 4)
        return self._exact(np.flatnonzero(mask), vector, k)

    def _exact(self, rows: np.ndarray, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The ``k`` best of ``rows`` scored exactly against the graph's stored vectors."""
        if not len(rows):
            return []
        vectors = np.asarray(self._ann.get(rows.astype(np.uint64)), dtype=np.float32)
        scores = vectors.reshape(len(rows), -1) @ vector
        top = np.argsort(-scores, kind="stable")[:k]
        return [(int(rows[i]), min(1.0, max(-1.0, float(scores[i])))) for i in top]

    def _with_unreached(
        self,
        hits: list[tuple[int, float]],
        vector: np.ndarray,
        mask: np.ndarray | None,
        k: int,
    ) -> list[tuple[int, float]]:
        """``hits`` merged with the exactly scored rows the graph does not lead to; best ``k``."""
        if not self.manifest.unreached:
            return hits[:k]
        rows = np.asarray(self.manifest.unreached, dtype=np.int64)
        if mask is not None:
            rows = rows[mask[rows]]
        seen = {row for row, _ in hits}
        extra = self._exact(np.asarray([r for r in rows if r not in seen]), vector, k)
        merged = sorted(hits + extra, key=lambda hit: -hit[1])
        return merged[:k]

    def hits(self, found: Sequence[tuple[int, float]]) -> list[Hit]:
        """The rows of ``found`` read from the table (only their row groups) as :class:`Hit` s."""
        import shapely

        if not found:
            return []
        columns = ["id", "source", "sensor", "time", "geometry", "thumbnail"]
        taken = self._lookup.select(columns).take([row for row, _ in found])
        values = {c: taken.column(c).to_pylist() for c in columns}
        records = {row: {c: values[c][j] for c in columns} for j, (row, _) in enumerate(found)}
        out = []
        for rank, (row, score) in enumerate(found, start=1):
            record = records[row]
            when, geometry, thumb = record["time"], record["geometry"], record["thumbnail"]
            footprint = None
            if geometry is not None:
                polygon = shapely.from_wkb(geometry)
                ring = np.round(shapely.get_coordinates(polygon.exterior), 7).tolist()
                footprint = {"type": "Polygon", "coordinates": [ring]}  # degrees, ~1 cm
            out.append(
                Hit(
                    rank=rank,
                    id=record["id"],
                    score=score,
                    sensor=record["sensor"],
                    time=None if when is None else _iso_utc(when),
                    footprint=footprint,
                    thumbnail=(self.folder / thumb) if thumb else None,
                    source=record["source"],
                    row=row,
                )
            )
        return out

    def search(self, query: np.ndarray, k: int = 20, filters: Filters | None = None) -> list[Hit]:
        """The ``k`` best rows for an embedded query, with their table columns."""
        return self.hits(self.nearest(query, k, filters))


def _iso_utc(milliseconds: int) -> str:
    """ISO 8601 UTC (``...Z``) of milliseconds since 1970."""
    when = datetime.fromtimestamp(milliseconds / 1000, tz=UTC)
    return when.isoformat().replace("+00:00", "Z")


def _score(distance: float) -> float:
    """Cosine similarity from usearch's inner-product distance (1 - dot), clipped to [-1, 1]
    (half-precision vectors can overshoot by about 1e-4)."""
    return min(1.0, max(-1.0, 1.0 - float(distance)))


def open_index(folder: str | Path) -> EmbeddingIndex:
    """Open an index for search.

    Raises:
        IndexError_: a missing folder or manifest, an empty index, a table or ANN file that cannot
            be read or that disagrees with the manifest.
    """
    path = Path(folder)
    return EmbeddingIndex(path, Manifest.read(path))


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``W,S,E,N`` in degrees (WGS84).

    Raises:
        UserInputError: not four numbers, or west > east, south > north, or out of range.
    """
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise UserInputError(
            f"--bbox {text!r}: expected W,S,E,N in degrees, e.g. 5.5,45.0,11.0,48.0"
        )
    west, south, east, north = values
    if not (-180 <= west <= east <= 180 and -90 <= south <= north <= 90):
        raise UserInputError(
            f"--bbox {text!r}: expected west <= east in [-180, 180] and south <= north in [-90, 90]"
        )
    return west, south, east, north


def load_all_embeddings(folder: Path) -> tuple[Manifest, np.ndarray]:
    """The manifest and every embedding of an index (tests, exports)."""
    manifest = Manifest.read(folder)
    table = _read_table(folder / manifest.table, ["embedding"])
    return manifest, _embeddings(table, manifest.embed_dim)
