"""BigEarthNet.txt: captions, question-answer pairs and referring expressions for BigEarthNet v2.

Layout facts (the dataset card of ``BIFOLD-BigEarthNetv2-0/BigEarthNet.txt`` on the Hugging Face
Hub, and its ``ben_txt_datamodule.py``):

* one file, ``BigEarthNet.txt.parquet`` (about 9.6 million rows, 467 MB), one row per text
  annotation, with the columns ``ID`` (unique integer), ``s1_name`` (the BigEarthNet v2
  Sentinel-1 patch), ``patch_id`` (the BigEarthNet v2 Sentinel-2 patch), ``input`` (the
  instruction or question), ``output`` (the reference answer), ``type`` (``binary``, ``mcq``,
  ``captioning`` or ``bounding box``), ``category`` (the fine-grained task: presence, area,
  counting, adjacency, relative position, country, season, climate zone, …), ``split``
  (``train``, ``validation``, ``test`` or ``bench``), ``latitude``, ``longitude`` (patch centre),
  ``country``, ``season`` and ``climate_zone`` (Köppen-Geiger);
* no imagery: the images are the BigEarthNet v2 (reBEN) patches, joined by ``patch_id`` (or
  ``s1_name`` for Sentinel-1) and read here through
  :class:`~thinkingearth.data.formats.bigearthnet.BigEarthNet` (``version=2``);
* ``bounding box`` rows are referring expressions: ``input`` names a region (``<ref>…</ref>``,
  sometimes a ``<point>(x, y)</point>``), ``output`` its box ``[x1, y1, x2, y2]`` in fractions
  of the patch (0 … 1).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import torch
from torch.utils.data import Dataset

from thinkingearth.errors import DataLayoutError, UserInputError

__all__ = ["TEXT_FILE", "TEXT_TYPES", "BigEarthNetTxt", "TextType", "parse_box"]

#: The published file name.
TEXT_FILE = "BigEarthNet.txt.parquet"
#: The annotation types (``type`` column), as published.
TextType = Literal["binary", "mcq", "captioning", "bounding box"]
TEXT_TYPES: tuple[str, ...] = get_args(TextType)

_REQUIRED = ("ID", "s1_name", "patch_id", "input", "output", "type", "split")
_OPTIONAL = ("category", "latitude", "longitude", "country", "season", "climate_zone")
_SPLIT_VALUES = {
    "train": ("train",),
    "val": ("validation", "val"),
    "test": ("test",),
    "bench": ("bench",),
}
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def parse_box(text: str) -> tuple[float, float, float, float] | None:
    """The box of a ``bounding box`` answer: four numbers ``x1, y1, x2, y2`` in 0 … 1.

    Returns:
        The box, or ``None`` when the text does not hold exactly four numbers forming a box
        inside the unit square with ``x1 <= x2`` and ``y1 <= y2``.
    """
    values = [float(v) for v in _NUMBER.findall(str(text))]
    if len(values) != 4:
        return None
    x1, y1, x2, y2 = values
    if not (0.0 <= x1 <= x2 <= 1.0 and 0.0 <= y1 <= y2 <= 1.0):
        return None
    return x1, y1, x2, y2


def _find_text_file(root: Path, text_file: str | Path | None) -> Path:
    if text_file is not None:
        path = Path(text_file)
        if not path.is_absolute() and not path.exists():
            path = root / path
        if not path.is_file():
            raise DataLayoutError(f"BigEarthNet.txt parquet not found: {path}")
        return path
    for candidate in (root / TEXT_FILE, root / "BigEarthNet.txt" / TEXT_FILE):
        if candidate.is_file():
            return candidate
    raise DataLayoutError(
        f"BigEarthNet.txt: {TEXT_FILE} not found in {root} (nor in {root / 'BigEarthNet.txt'}); "
        "download it from the Hugging Face dataset BIFOLD-BigEarthNetv2-0/BigEarthNet.txt"
    )


class BigEarthNetTxt(Dataset):
    """BigEarthNet.txt: text annotations of BigEarthNet v2 patches, one Sample per annotation.

    `BigEarthNet.txt <https://txt.bigearth.net>`__ pairs the 464,044 co-registered Sentinel-1 /
    Sentinel-2 patches of BigEarthNet v2 (reBEN, ten European countries, 1.2 km × 1.2 km) with
    about 9.6 million text annotations: geographically anchored captions of land use / land
    cover and its spatial relations, binary and multiple-choice visual question answering
    (presence, area, counting, adjacency, relative position, country, season, climate zone) and
    referring expressions with bounding boxes. A manually verified ``bench`` split (1,082 image
    pairs, 15,029 annotations) is meant for evaluation. Licence CDLA-Permissive-1.0.

    Dataset format (see the module docstring): ``root`` holds ``BigEarthNet.txt.parquet`` (or
    the cloned folder ``BigEarthNet.txt/`` with it, or give ``text_file``) and the BigEarthNet v2
    tree — ``metadata.parquet``, ``BigEarthNet-S2/`` and/or ``BigEarthNet-S1/`` — either in
    ``root`` too or in ``images_root``. Reading needs ``pyarrow``.

    Each sample is the :class:`~thinkingearth.data.formats.bigearthnet.BigEarthNet` Sample of
    the annotated patch (``image``, ``bands``, ``sensor``, ``label`` with the 19 classes,
    ``lon``/``lat``/``time``/``gsd``, ``crs``, ``transform``, ``name``) plus its text:

    * every row: ``text_id`` (``ID``), ``text_type`` (``type``), ``category``, ``split``,
      ``country``, ``season``, ``climate_zone`` (strings; ``""`` where the file has none),
      ``patch_id`` and ``s1_name``;
    * ``captioning``: ``caption`` (the reference caption, ``output``) and ``instruction``
      (``input``);
    * ``binary`` and ``mcq``: ``question`` (``input``), ``answer`` (``output``) and
      ``question_type`` (the ``type``);
    * ``bounding box``: ``referring`` (the referring expression, ``input``), ``answer`` (the box
      as published) and ``box``, float32 ``[4]`` ``x1, y1, x2, y2`` in fractions of the patch
      (NaN when the answer is not such a box, see :func:`parse_box`).

    The patch's ``lon``/``lat`` come from its raster; where that has no CRS the parquet's
    ``longitude``/``latitude`` are used.

    If you use this dataset in your research, please cite:

    .. code-block:: bibtex

        @article{herzog2026bigearthnettxt,
          title={{BigEarthNet.txt}: A Large-Scale Multi-Sensor Image-Text Dataset and Benchmark
                 for Earth Observation},
          author={Herzog, Johann-Ludwig and Adler, Mathis J{\\"u}rgen and Hackel, Leonard and
                  Shu, Yan and Zavras, Angelos and Papoutsis, Ioannis and Rota, Paolo and
                  Demir, Beg{\\"u}m},
          journal={arXiv preprint arXiv:2603.29630},
          year={2026}
        }

    and BigEarthNet v2 (see :class:`~thinkingearth.data.formats.bigearthnet.BigEarthNet`).
    """

    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test", "bench")

    def __init__(
        self,
        root: str | Path,
        split: Literal["train", "val", "test", "bench"] | None = None,
        types: Sequence[TextType] | None = None,
        sensor: Literal["s2", "s1"] = "s2",
        bands: Sequence[str] | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        *,
        images_root: str | Path | None = None,
        text_file: str | Path | None = None,
        missing: Literal["error", "skip"] = "error",
    ) -> None:
        """Read the annotations of a split and join them to the BigEarthNet v2 patches.

        Args:
            root: folder with ``BigEarthNet.txt.parquet`` (and the BigEarthNet v2 tree, unless
                ``images_root`` is given).
            split: ``"train"``, ``"val"`` (the file's ``validation``), ``"test"`` or ``"bench"``;
                ``None`` for every row.
            types: keep only these annotation types (default: all four).
            sensor: ``"s2"`` joins on ``patch_id``, ``"s1"`` on ``s1_name``.
            bands: band subset of the sensor (default: all).
            transforms: function applied to each sample dict.
            images_root: the BigEarthNet v2 folder, if not ``root``.
            text_file: the parquet, if not found in ``root``.
            missing: ``"error"`` refuses annotations of patches not on disk (naming one);
                ``"skip"`` leaves them out (:attr:`skipped` counts them).

        Raises:
            UserInputError: for a bad argument.
            DataLayoutError: for a missing or unreadable parquet, missing columns, missing
                patches (with ``missing="error"``) or an empty selection.
        """
        if split is not None and split not in self.splits:
            raise UserInputError(
                f"BigEarthNet.txt split must be one of {', '.join(self.splits)} or None, got {split!r}"
            )
        chosen_types = tuple(TEXT_TYPES if types is None else types)
        if isinstance(types, str):
            chosen_types = (types,)
        for kind in chosen_types:
            if kind not in TEXT_TYPES:
                raise UserInputError(
                    f"unknown BigEarthNet.txt type {kind!r}; expected some of: {', '.join(TEXT_TYPES)}"
                )
        if not chosen_types:
            raise UserInputError("BigEarthNet.txt types must name at least one type")
        if missing not in ("error", "skip"):
            raise UserInputError(f"missing must be 'error' or 'skip', got {missing!r}")
        if sensor not in ("s2", "s1"):
            raise UserInputError(f"BigEarthNet.txt sensor must be 's2' or 's1', got {sensor!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataLayoutError(f"BigEarthNet.txt folder not found: {self.root}")
        self.split = split
        self.types = chosen_types
        self.sensor = sensor
        self.transforms = transforms
        self.text_path = _find_text_file(self.root, text_file)
        table = self._read_text(self.text_path, split, chosen_types)

        import pyarrow as pa
        import pyarrow.compute as pc

        from thinkingearth.data.formats.bigearthnet import BigEarthNet

        image_dir = Path(images_root) if images_root is not None else self.root
        # every patch on disk, whatever reBEN's own split or snow/cloud flags: BigEarthNet.txt
        # decides which patches it annotates and in which split
        try:
            self.images = BigEarthNet(
                image_dir, version=2, sensor=sensor, bands=bands, exclude_snow_cloud=False
            )
        except (pa.ArrowException, OSError) as exc:  # e.g. a corrupt reBEN metadata.parquet
            message = " ".join(str(exc).split()) or type(exc).__name__
            raise DataLayoutError(
                f"cannot read BigEarthNet v2 metadata in {image_dir}: {message}"
            ) from None
        key_column = "patch_id" if sensor == "s2" else "s1_name"
        # the join runs in Arrow: the full file has ~9.6 M rows, too many for Python lists
        found = pc.index_in(
            table.column(key_column).cast(pa.string()),
            value_set=pa.array(self.images.names, type=pa.string()),
        )
        image_index = found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        absent = np.flatnonzero(image_index < 0)
        self.skipped = int(absent.size)
        if absent.size and missing == "error":
            example = table.column(key_column)[int(absent[0])].as_py()
            raise DataLayoutError(
                f"BigEarthNet.txt annotates {absent.size} row(s) of patches not found under "
                f"{image_dir}, e.g. {example} (pass missing='skip' to leave them out)"
            )
        keep = np.flatnonzero(image_index >= 0)
        if keep.size == 0:
            which = "" if split is None else f" of split {split}"
            raise DataLayoutError(
                f"no BigEarthNet.txt annotations{which} with their patch under {image_dir}"
            )
        self._image_index = image_index[keep]
        self._table = table.take(pa.array(keep)) if absent.size else table

    @staticmethod
    def _read_text(path: Path, split: str | None, types: Sequence[str]) -> Any:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise UserInputError(
                f"reading BigEarthNet.txt {path} needs pyarrow: pip install pyarrow"
            ) from None
        try:
            names = pq.read_schema(path).names
        except (pa.ArrowException, OSError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataLayoutError(
                f"BigEarthNet.txt {path} is not a readable parquet: {first}"
            ) from None
        absent = [c for c in _REQUIRED if c not in names]
        if absent:
            raise DataLayoutError(
                f"BigEarthNet.txt {path} lacks the column(s) {', '.join(absent)} "
                f"(expected {', '.join(_REQUIRED + _OPTIONAL)})"
            )
        wanted = [c for c in _REQUIRED + _OPTIONAL if c in names]
        filters: list[tuple[str, str, list[str]]] = [("type", "in", list(types))]
        if split is not None:
            filters.append(("split", "in", list(_SPLIT_VALUES[split])))
        try:
            table = pq.read_table(path, columns=wanted, filters=filters)
        except (pa.ArrowException, OSError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataLayoutError(f"cannot read BigEarthNet.txt {path}: {first}") from None
        return table

    def __len__(self) -> int:
        """Number of annotations."""
        return int(self._image_index.size)

    def _value(self, name: str, index: int) -> Any:
        if name not in self._table.column_names:
            return None
        return self._table.column(name)[index].as_py()

    def _text(self, name: str, index: int) -> str:
        value = self._value(name, index)
        return "" if value is None else str(value)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """One annotation with its patch as a Sample (see the class docstring)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} annotations")
        index %= len(self)
        sample = dict(self.images[int(self._image_index[index])])
        kind = self._text("type", index)
        text_in, text_out = self._text("input", index), self._text("output", index)
        sample.update(
            {
                "text_id": int(self._value("ID", index)),
                "text_type": kind,
                "category": self._text("category", index),
                "split": self._text("split", index),
                "country": self._text("country", index),
                "season": self._text("season", index),
                "climate_zone": self._text("climate_zone", index),
                "patch_id": self._text("patch_id", index),
                "s1_name": self._text("s1_name", index),
            }
        )
        if kind == "captioning":
            sample["caption"] = text_out
            sample["instruction"] = text_in
        elif kind == "bounding box":
            sample["referring"] = text_in
            sample["answer"] = text_out
            box = parse_box(text_out)
            sample["box"] = torch.tensor(
                box if box is not None else (math.nan,) * 4, dtype=torch.float32
            )
        else:
            sample["question"] = text_in
            sample["answer"] = text_out
            sample["question_type"] = kind
        for key, column in (("lon", "longitude"), ("lat", "latitude")):
            value = sample.get(key)
            stated = self._value(column, index)
            if (value is None or math.isnan(float(value))) and stated is not None:
                sample[key] = float(stated)
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample
