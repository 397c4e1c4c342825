"""GAIA: remote sensing images with five captions each, from their JSON records and shards.

Layout facts (the dataset card of ``azavras/GAIA`` on the Hugging Face Hub and the README of
Orion-AI-Lab/GAIA):

* the splits (train 70 %, test 20 %, validation 10 %, spatio-temporally stratified) are JSON
  files ``<split>_data.json`` (``train_data.json``, ``test_data.json``, ``val_data.json``)
  written for the img2dataset tool: one record per image with ``id``, ``image_src`` (the URL of
  the web-scraped image), ``image_alt``, ``captions`` (five synthetic captions), ``credits``,
  ``location``, ``lat``, ``lon``, ``tag``, ``resolution``, ``satellite``, ``sensor`` and
  ``modalities`` (the last five extracted from the source text; lists or strings). The file
  holds a list of records (pandas' ``records`` orientation); column-oriented JSON
  (``{"id": [...], ...}`` or ``{"id": {"0": ...}, ...}``) and JSON Lines are read too;
* the images are not in the release: they are downloaded with img2dataset, which the authors
  ran with ``--output_format webdataset --save_additional_columns "['id','captions']"
  --image_size 512 --resize_mode keep_ratio --encode_format png``. That writes
  ``<split>/00000.tar, 00001.tar, …`` whose members are ``<key>.png`` (the image),
  ``<key>.txt`` (``image_alt``) and ``<key>.json`` (img2dataset's record: ``key``, ``status``,
  ``url``, ``width``, ``height``, … plus the saved ``id`` and ``captions``). With
  ``--output_format files`` the same triples lie in ``<split>/00000/<key>.png`` etc.
"""

from __future__ import annotations

import io
import json
import math
import re
import tarfile
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from thinkingearth.errors import DataLayoutError, UserInputError

__all__ = ["GAIA", "RGB_BANDS", "parse_resolution_m", "registry_sensor"]

#: The registry bands a true-colour rendering shows, per registry sensor GAIA images map to.
RGB_BANDS: Mapping[str, tuple[str, str, str]] = {
    "sentinel-2-l2a": ("B04", "B03", "B02"),
    "landsat-8-9": ("B4", "B3", "B2"),
}
_SPLIT_FILES = {
    "train": ("train_data.json",),
    "val": ("val_data.json", "validation_data.json"),
    "test": ("test_data.json",),
}
_SPLIT_DIRS = {"train": ("train",), "val": ("val", "validation"), "test": ("test",)}
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# Sentinel/Landsat names as GAIA's extracted metadata spells them ("Copernicus Sentinel-2",
# "Sentinel-2A", "Landsat 8", "Landsat-9", "OLI", "MSI"): patterns -> registry family.
_SENSOR_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"sentinel[\s_-]*1(?![0-9])|\bsar-c\b"), "sentinel-1"),
    (re.compile(r"sentinel[\s_-]*2(?![0-9])|\bmsi\b"), "sentinel-2"),
    (re.compile(r"sentinel[\s_-]*3(?![0-9])|\bolci\b|\bslstr\b"), "sentinel-3"),
    (re.compile(r"sentinel[\s_-]*5\s*p|\btropomi\b"), "sentinel-5p"),
    (re.compile(r"landsat[\s_-]*(8|9)(?![0-9])|\boli(-2)?\b|\btirs\b"), "landsat-8-9"),
    (re.compile(r"landsat[\s_-]*[1-7](?![0-9])|\betm\+?|\bmss\b|\btm\b"), "landsat-older"),
)
# Families the registry has as true-colour-renderable optical sensors.
_FAMILY_SENSOR = {"sentinel-2": "sentinel-2-l2a", "landsat-8-9": "landsat-8-9"}
_UNITS_M = {"cm": 0.01, "m": 1.0, "meter": 1.0, "meters": 1.0, "metre": 1.0, "metres": 1.0,
            "km": 1000.0, "kilometer": 1000.0, "kilometers": 1000.0, "kilometre": 1000.0,
            "kilometres": 1000.0}  # fmt: skip
_RESOLUTION = re.compile(r"(\d+(?:\.\d+)?)\s*(cm|km|kilomet(?:er|re)s?|met(?:er|re)s?|m)\b")


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (tarfile and PIL messages span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, Iterable):
        return [str(v) for v in value if v is not None and str(v).strip()]
    return [str(value)]


def registry_sensor(satellite: Any, sensor: Any = None) -> tuple[str | None, str]:
    """The registry sensor a GAIA record's ``satellite``/``sensor`` fields name, if exactly one.

    Args:
        satellite: the record's ``satellite`` (string or list of strings).
        sensor: the record's ``sensor`` (string or list of strings).

    Returns:
        ``(registry name, "")`` when the fields name exactly one mission the toolkit can read a
        true-colour rendering of (Sentinel-2 -> ``sentinel-2-l2a``, the registry's Sentinel-2;
        Landsat 8/9 -> ``landsat-8-9``); otherwise ``(None, reason)``, the reason saying what was
        found (nothing known, several missions, or a mission without a true-colour reading:
        Sentinel-1, -3, -5P, older Landsats, MODIS and the like).
    """
    text = " ".join(_strings(satellite) + _strings(sensor)).lower()
    families = sorted({family for pattern, family in _SENSOR_PATTERNS if pattern.search(text)})
    if not families:
        shown = text.strip() or "nothing"
        return None, f"satellite/sensor {shown!r} is not a Copernicus or Landsat 8/9 mission"
    if len(families) > 1:
        return None, f"several missions named ({', '.join(families)})"
    family = families[0]
    if family not in _FAMILY_SENSOR:
        return None, f"{family} renderings have no true-colour band reading"
    return _FAMILY_SENSOR[family], ""


def parse_resolution_m(value: Any) -> float:
    """The finest resolution in metres a GAIA ``resolution`` field states, NaN if none.

    ``"10 m"``, ``"30m"``, ``"0.5 meters"``, ``"1 km"``, ``["10m", "20m"]`` (-> 10.0), a bare
    number (taken as metres). Words such as ``"high resolution"`` give NaN.
    """
    if isinstance(value, bool):
        return math.nan
    if isinstance(value, int | float):
        return float(value) if math.isfinite(float(value)) and value > 0 else math.nan
    found = []
    for text in _strings(value):
        for number, unit in _RESOLUTION.findall(text.lower()):
            found.append(float(number) * _UNITS_M[unit])
    found = [v for v in found if v > 0]
    return min(found) if found else math.nan


def _load_records(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataLayoutError(f"cannot read GAIA records {path}: {_one_line(exc)}") from None
    try:
        data = json.loads(text)
    except ValueError:
        try:  # JSON Lines: one record per line
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise DataLayoutError(
                f"GAIA records {path} are not valid JSON: {_one_line(exc)}"
            ) from None
    if isinstance(data, dict):  # column-oriented: {"id": [...]} or {"id": {"0": ..., ...}}
        columns = {k: (list(v.values()) if isinstance(v, dict) else v) for k, v in data.items()}
        if not all(isinstance(v, list) for v in columns.values()):
            raise DataLayoutError(
                f"GAIA records {path}: expected a list of records or columns of values"
            )
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1:
            raise DataLayoutError(f"GAIA records {path}: columns of different lengths")
        (length,) = lengths
        data = [{k: v[i] for k, v in columns.items()} for i in range(length)]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataLayoutError(f"GAIA records {path}: expected a list of JSON objects")
    for record in data:
        if "id" not in record or "captions" not in record:
            raise DataLayoutError(
                f"GAIA records {path}: a record lacks 'id' or 'captions' (keys: "
                f"{', '.join(sorted(record)) or 'none'})"
            )
    return data


@dataclass(frozen=True)
class _ImageRef:
    path: Path  # a shard (.tar) or an image file
    offset: int = -1  # byte offset of the member's data in the shard; -1 for a file
    size: int = 0


def _index_shard(path: Path, refs: dict[str, _ImageRef]) -> None:
    """Add the images of one img2dataset shard, keyed by the GAIA ``id`` in their JSON."""
    images: dict[str, tarfile.TarInfo] = {}
    ids: dict[str, str] = {}
    try:
        # uncompressed only ("r:"), as img2dataset writes them: images are later read straight
        # from their byte offsets in the file
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                stem, _, suffix = member.name.rpartition(".")
                suffix = "." + suffix.lower()
                if suffix in _IMAGE_SUFFIXES:
                    images[stem] = member
                elif suffix == ".json":
                    handle = tar.extractfile(member)
                    record = json.loads(handle.read()) if handle is not None else {}
                    if isinstance(record, dict) and record.get("id") is not None:
                        ids[stem] = str(record["id"])
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise DataLayoutError(
            f"GAIA shard {path} is not a readable tar: {_one_line(exc)}"
        ) from None
    for stem, member in images.items():
        if stem in ids:
            refs.setdefault(ids[stem], _ImageRef(path, member.offset_data, member.size))


def _index_files(folder: Path, refs: dict[str, _ImageRef]) -> None:
    """Add images of img2dataset's ``files`` output (``<key>.png`` beside ``<key>.json``)."""
    for meta in sorted(folder.rglob("*.json")):
        if meta.name.endswith("_stats.json"):
            continue
        image = next(
            (meta.with_suffix(s) for s in _IMAGE_SUFFIXES if meta.with_suffix(s).is_file()), None
        )
        if image is None:
            continue
        try:
            record = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataLayoutError(
                f"GAIA image record {meta} is not valid JSON: {_one_line(exc)}"
            ) from None
        if isinstance(record, dict) and record.get("id") is not None:
            refs.setdefault(str(record["id"]), _ImageRef(image))


class GAIA(Dataset):
    """GAIA: global multi-scale remote sensing images with five synthetic captions each.

    `GAIA <https://github.com/Orion-AI-Lab/GAIA>`__ (Zavras et al., 2025) gathers 41,030
    web-scraped remote sensing images (1998–2024, worldwide; NASA, ESA and other reputable
    sources) with five scientifically grounded captions each written by GPT-4o, 205,150
    image-text pairs, plus location, tags, resolution, satellite, sensor and modalities
    extracted from the source text. Licence MIT (metadata; images keep their sources' terms).

    Dataset format (module docstring): ``root`` holds ``<split>_data.json`` and the images that
    img2dataset wrote for that split, as WebDataset shards ``<split>/*.tar`` or as files
    ``<split>/**/<key>.png`` with ``<key>.json``. Images are joined to records by the ``id``
    img2dataset saved in each image's JSON.

    **What a Sample is, and what is left out.** GAIA images are 8-bit display renderings (PNG,
    resized to at most 512 px) and GAIA does not record which bands a rendering shows. The
    reader never guesses: it serves images only when you state what they show with
    ``rgb="true-colour"`` — the three channels are then the red, green and blue bands of the
    record's mission (:data:`RGB_BANDS`: Sentinel-2 ``B04, B03, B02``; Landsat 8/9
    ``B4, B3, B2``). Records are skipped (counted in :attr:`skipped`, by reason) when their
    ``satellite``/``sensor`` fields name no such mission or several missions
    (:func:`registry_sensor`; Sentinel-1 radar, Sentinel-3/5P, MODIS, astronaut photographs and
    older Landsats have no true-colour band reading), or when no downloaded image carries their
    id; ``unmapped="error"`` refuses the first unmapped record instead.

    Each sample: ``image`` float32 ``[3, H, W]`` with the stored 8-bit values (0 … 255),
    ``bands`` (above), ``sensor`` (registry name), ``rendering`` ``"rgb8"`` (the registry's
    normalisation statistics, digital numbers, do not fit 8-bit renderings: normalise with data
    statistics), ``caption`` (one of the five: ``caption_index``, or a choice fixed by ``seed``
    and the record id when ``caption_index=None``), ``captions`` (all five), ``lon``/``lat``
    (the record's, NaN if absent), ``time`` NaN (GAIA has no acquisition date per record),
    ``gsd`` NaN — the stored pixels are a resized rendering, so their ground size is unknown;
    the mission's stated resolution is kept as ``resolution_m`` (metres, the finest stated,
    :func:`parse_resolution_m`) and ``resolution`` (as written) — and ``id``, ``location``,
    ``tags``, ``satellite``, ``modalities``, ``image_alt``, ``credits``.

    If you use this dataset in your research, please cite:

    .. code-block:: bibtex

        @article{zavras2025gaia,
          title={{GAIA}: A Global, Multi-modal, Multi-scale Vision-Language Dataset for Remote
                 Sensing Image Analysis},
          author={Zavras, Angelos and Michail, Dimitrios and Zhu, Xiao Xiang and Demir,
                  Beg{\\"u}m and Papoutsis, Ioannis},
          journal={arXiv preprint arXiv:2502.09598},
          year={2025}
        }
    """

    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")

    def __init__(
        self,
        root: str | Path,
        split: Literal["train", "val", "test"] = "train",
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        *,
        rgb: Literal["true-colour"] | None = None,
        caption_index: int | None = 0,
        seed: int = 0,
        unmapped: Literal["skip", "error"] = "skip",
    ) -> None:
        """Read a split's records and index its downloaded images.

        Args:
            root: the GAIA folder (see the class docstring).
            split: ``"train"``, ``"val"`` or ``"test"``.
            transforms: function applied to each sample dict.
            rgb: what the renderings show; must be ``"true-colour"`` (the only reading the
                toolkit offers), stated by you because GAIA does not record it.
            caption_index: which of the five captions is ``caption`` (0 … 4); ``None`` picks
                one per record, fixed by ``seed`` and the record's id.
            seed: seed of that choice.
            unmapped: ``"skip"`` leaves out records of missions without a true-colour reading;
                ``"error"`` refuses the first one.

        Raises:
            UserInputError: for a bad argument, ``rgb`` not stated included.
            DataLayoutError: for missing or unreadable records or shards, a record without
                captions, no image for any kept record, or (``unmapped="error"``) an unmapped
                record.
        """
        if split not in self.splits:
            raise UserInputError(f"GAIA split must be one of train, val, test, got {split!r}")
        if rgb != "true-colour":
            raise UserInputError(
                "GAIA images are 8-bit renderings and GAIA does not record which bands they "
                "show: pass rgb='true-colour' to read them as the mission's red, green and blue "
                f"bands (got rgb={rgb!r})"
            )
        if caption_index is not None and (
            isinstance(caption_index, bool)
            or not isinstance(caption_index, int)
            or caption_index < 0
        ):
            raise UserInputError(
                f"caption_index must be a caption number 0-4 or None, got {caption_index!r}"
            )
        if unmapped not in ("skip", "error"):
            raise UserInputError(f"unmapped must be 'skip' or 'error', got {unmapped!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataLayoutError(f"GAIA folder not found: {self.root}")
        self.split = split
        self.transforms = transforms
        self.caption_index = caption_index
        self.seed = int(seed)
        records_path = next(
            (self.root / n for n in _SPLIT_FILES[split] if (self.root / n).is_file()), None
        )
        if records_path is None:
            raise DataLayoutError(
                f"GAIA records {_SPLIT_FILES[split][0]} not found in {self.root} (download "
                "the JSON files of the Hugging Face dataset azavras/GAIA)"
            )
        self.records_path = records_path
        records = _load_records(records_path)
        refs = self._index_images()

        self.skipped: dict[str, int] = {}
        self._samples: list[tuple[dict[str, Any], str, _ImageRef]] = []
        for record in records:
            captions = record.get("captions")
            if (
                not isinstance(captions, list)
                or not captions
                or not all(isinstance(c, str) for c in captions)
            ):
                raise DataLayoutError(
                    f"GAIA record {record.get('id')!r} in {records_path.name}: 'captions' must "
                    "be a list of strings"
                )
            if caption_index is not None and caption_index >= len(captions):
                raise UserInputError(
                    f"caption_index {caption_index} but GAIA record {record['id']!r} has "
                    f"{len(captions)} captions"
                )
            sensor, reason = registry_sensor(record.get("satellite"), record.get("sensor"))
            if sensor is None:
                if unmapped == "error":
                    raise DataLayoutError(
                        f"GAIA record {record['id']!r}: {reason} (pass unmapped='skip' to leave "
                        "such records out)"
                    )
                self._skip("no true-colour mission")
                continue
            ref = refs.get(str(record["id"]))
            if ref is None:
                self._skip("image not downloaded")
                continue
            self._samples.append((record, sensor, ref))
        if not self._samples:
            raise DataLayoutError(
                f"no GAIA {split} record with a downloaded Sentinel-2 or Landsat 8/9 image in "
                f"{self.root} ({len(records)} records; skipped: "
                f"{', '.join(f'{k} {v}' for k, v in self.skipped.items()) or 'none'})"
            )

    def _skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def _index_images(self) -> dict[str, _ImageRef]:
        folder = next(
            (self.root / d for d in _SPLIT_DIRS[self.split] if (self.root / d).is_dir()), None
        )
        if folder is None:
            raise DataLayoutError(
                f"GAIA image folder {_SPLIT_DIRS[self.split][0]}/ not found in {self.root} "
                "(img2dataset's output: WebDataset shards or files)"
            )
        refs: dict[str, _ImageRef] = {}
        for shard in sorted(folder.glob("*.tar")):
            _index_shard(shard, refs)
        _index_files(folder, refs)
        return refs

    def __len__(self) -> int:
        """Number of records served (see :attr:`skipped` for the others)."""
        return len(self._samples)

    def _read_image(self, ref: _ImageRef, record_id: Any) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError

        try:
            if ref.offset < 0:
                data = ref.path.read_bytes()
            else:
                with open(ref.path, "rb") as f:
                    f.seek(ref.offset)
                    data = f.read(ref.size)
            with Image.open(io.BytesIO(data)) as img:
                array = np.asarray(img.convert("RGB"), dtype=np.uint8)
        except (OSError, UnidentifiedImageError) as exc:
            raise DataLayoutError(
                f"GAIA image of record {record_id!r} in {ref.path} cannot be decoded: {_one_line(exc)}"
            ) from None
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32))

    def _pick(self, captions: Sequence[str], record_id: Any) -> str:
        if self.caption_index is not None:
            return captions[self.caption_index]
        return captions[zlib.crc32(f"{self.seed}|{record_id}".encode()) % len(captions)]

    def __getitem__(self, index: int) -> dict[str, Any]:
        """One record with its image as a Sample (see the class docstring)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} records")
        record, sensor, ref = self._samples[index]
        captions = list(record["captions"])

        def number(key: str) -> float:
            value = record.get(key)
            try:
                out = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return math.nan
            return out if math.isfinite(out) else math.nan

        sample: dict[str, Any] = {
            "image": self._read_image(ref, record["id"]),
            "bands": RGB_BANDS[sensor],
            "sensor": sensor,
            "rendering": "rgb8",
            "caption": self._pick(captions, record["id"]),
            "captions": captions,
            "lon": number("lon"),
            "lat": number("lat"),
            "time": math.nan,
            "gsd": math.nan,
            "resolution_m": parse_resolution_m(record.get("resolution")),
            "resolution": ", ".join(_strings(record.get("resolution"))),
            "id": str(record["id"]),
            "location": str(record.get("location") or ""),
            "tags": _strings(record.get("tag")),
            "satellite": _strings(record.get("satellite")),
            "modalities": _strings(record.get("modalities")),
            "image_alt": str(record.get("image_alt") or ""),
            "credits": str(record.get("credits") or ""),
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample
