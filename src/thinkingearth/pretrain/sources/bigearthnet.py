"""Source ``bigearthnet``: BigEarthNet v1 or v2 (reBEN), Sentinel-2 L2A and Sentinel-1, labelled.

Read through :class:`thinkingearth.data.formats.bigearthnet.BigEarthNet` (its layouts, splits and
snow/cloud exclusion): ``data.root`` holds ``metadata.parquet`` (v2) or the v1 patch folders
(directly, or in ``BigEarthNet-v1.0/``, ``S2/``, ``BigEarthNet-S1-v1.0/``, ``S1/``). ``data.split``
is the official split (``null``: every patch). Every sample carries ``labels``, the 19-class
multi-hot vector of Sumbul et al. (2021) (SoftCon's targets; a v1 patch whose classes the
19-class nomenclature drops has all zeros, which SoftCon treats as similar to nothing). Patches
are 120 px on the 10 m grid; samples are windows of ``data.size`` of them. Sentinel-1 is stored
in dB; samples carry linear sigma0.

Pairs for ``cross_sensor`` (Sentinel-1 with Sentinel-2): v1 pairs each S1 patch with the S2
patch named by its JSON's ``corresponding_s2_patch``; v2 pairs ``s1_name`` with ``patch_id`` of
each ``metadata.parquet`` row. Both patches of a pair cover the same 1.2 km, so one window of
both shows the same ground.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from thinkingearth.data.formats.bigearthnet import BigEarthNet
from thinkingearth.errors import DataLayoutError, UserInputError
from thinkingearth.pretrain.config import PretrainConfig
from thinkingearth.pretrain.sources.base import (
    Draw,
    SensorReader,
    cut_window,
    db_to_linear,
    grid_metadata,
    grid_of,
)
from thinkingearth.sensors import get_sensor

__all__ = ["BigEarthNetReader", "bigearthnet_pairs", "open_bigearthnet"]

_KEYS = {"sentinel-2-l2a": "s2", "sentinel-1-grd": "s1"}
_LABELS_SUFFIX = "_labels_metadata.json"


class BigEarthNetReader(SensorReader):
    """One sensor's BigEarthNet patches (see the module docstring).

    Args:
        root: The data set folder.
        sensor: ``sentinel-2-l2a`` or ``sentinel-1-grd``.
        bands: Registry band names to read; ``None`` = every band of the archive.
        split: Official split, or ``None`` for every patch.
        size: Window side in pixels (at most the patches' 120).
    """

    source = "bigearthnet"

    def __init__(
        self,
        root: str | Path,
        sensor: str,
        bands: tuple[str, ...] | None,
        split: str | None,
        size: int,
    ) -> None:
        """Index the patches and check that they are at least ``size`` pixels."""
        spec = get_sensor(sensor)
        if spec.name not in _KEYS:
            raise UserInputError(
                f"BigEarthNet has no {spec.name}; expected one of: {', '.join(_KEYS)}"
            )
        self.sensor = spec.name
        self.size = int(size)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataLayoutError(f"data.root {self.root} is not a folder; expected BigEarthNet")
        self.version = 2 if (self.root / "metadata.parquet").is_file() else 1
        names = None if bands is None else [spec.band(b).name for b in bands]
        self.dataset = BigEarthNet(
            self.root,
            split=split,  # type: ignore[arg-type]
            version=self.version,  # type: ignore[arg-type]
            sensor=_KEYS[spec.name],  # type: ignore[arg-type]
            num_classes=19,
            bands=names,
        )
        self.bands = tuple(spec.band(b).name for b in self.dataset.bands)
        first = self.dataset[0]["image"]
        height, width = first.shape[-2:]
        if height < self.size or width < self.size:
            raise DataLayoutError(
                f"BigEarthNet patches are {height}x{width} px, smaller than data.size "
                f"{self.size}; lower data.size"
            )
        which = "every patch" if split is None else f"split {split}"
        self.notes = [
            f"bigearthnet v{self.version} {self.sensor}: {len(self.dataset)} patches ({which}), "
            f"19-class labels, windows of {self.size} of {height} px"
        ]

    def __len__(self) -> int:
        return len(self.dataset)

    def name(self, item: int) -> str:
        return self.dataset.names[item]

    def read(self, item: int, choice: Draw) -> dict[str, Any]:
        """The drawn window of patch ``item`` with its labels."""
        patch = self.dataset[item]
        image = patch["image"].numpy()
        height, width = image.shape[-2:]
        window, row, col = cut_window(image, self.size, choice.row, choice.col)
        sample: dict[str, Any] = {
            "image": torch.from_numpy(window),
            "bands": self.bands,
            "sensor": self.sensor,
            "time": patch["time"],
            "labels": patch["label"],
            "name": patch["name"],
        }
        if patch.get("units") == "db":  # pretraining normalises linear sigma0
            sample["image"] = torch.from_numpy(db_to_linear(window))
            sample["units"] = "linear"
        crs = patch.get("crs") or None
        grid = grid_of(crs, patch["transform"], width, height) if crs else None
        sample.update(grid_metadata(grid, row, col, self.size))
        return sample


def open_bigearthnet(config: PretrainConfig, sensor: str) -> BigEarthNetReader:
    """The BigEarthNet reader of ``sensor`` for ``config``."""
    d = config.data
    assert d.root is not None
    return BigEarthNetReader(d.root, sensor, config.source_for(sensor).bands, d.split, d.size)


def _v1_pairs(s1: BigEarthNetReader, s2: BigEarthNetReader) -> list[tuple[int, int]]:
    """(S1 item, S2 item) from each S1 JSON's ``corresponding_s2_patch``."""
    s2_index = {name: i for i, name in enumerate(s2.dataset.names)}
    pairs: list[tuple[int, int]] = []
    # The reader keeps each patch's folder; a public accessor would be nicer than this.
    for i, patch in enumerate(s1.dataset._patches):
        path = patch.folder / f"{patch.name}{_LABELS_SUFFIX}"
        try:
            with open(path, encoding="utf-8") as f:
                partner = json.load(f).get("corresponding_s2_patch")
        except (OSError, ValueError):
            continue
        if partner in s2_index:
            pairs.append((i, s2_index[partner]))
    return pairs


def _v2_pairs(s1: BigEarthNetReader, s2: BigEarthNetReader) -> list[tuple[int, int]]:
    """(S1 item, S2 item) from the ``s1_name`` and ``patch_id`` of each metadata row."""
    import pyarrow.parquet as pq

    table = pq.read_table(s1.root / "metadata.parquet", columns=["patch_id", "s1_name"])
    s1_names, s2_names = table.column("s1_name").to_pylist(), table.column("patch_id").to_pylist()
    s2_of = dict(zip(s1_names, s2_names, strict=True))
    s2_index = {name: i for i, name in enumerate(s2.dataset.names)}
    return [
        (i, s2_index[s2_of[name]])
        for i, name in enumerate(s1.dataset.names)
        if s2_of.get(name) in s2_index
    ]


def bigearthnet_pairs(a: BigEarthNetReader, b: BigEarthNetReader) -> list[tuple[int, int]]:
    """Co-registered ``(item of a, item of b)`` of a Sentinel-1 and a Sentinel-2 reader.

    Raises:
        DataLayoutError: No Sentinel-1 patch has its Sentinel-2 patch in the data.
    """
    flip = a.sensor != "sentinel-1-grd"
    s1, s2 = (b, a) if flip else (a, b)
    pairs = _v1_pairs(s1, s2) if a.version == 1 else _v2_pairs(s1, s2)
    if not pairs:
        raise DataLayoutError(
            f"no BigEarthNet Sentinel-1 patch in {a.root} has its Sentinel-2 patch there "
            "(v1: the S1 JSON's corresponding_s2_patch; v2: metadata.parquet's s1_name and "
            "patch_id)"
        )
    a.notes.append(
        f"bigearthnet pairs: {len(pairs)} Sentinel-1 + Sentinel-2 patch pair(s) of "
        f"{len(s1)} Sentinel-1 and {len(s2)} Sentinel-2 patches"
    )
    ordered = [(j, i) for i, j in pairs] if flip else pairs
    return sorted(ordered)
