"""RSVQA-LR and RSVQAxBEN: remote sensing visual question answering, in their published JSON layout.

Layout facts (the Zenodo records of the datasets — RSVQA-LR 6344334, RSVQAxBEN 5084904 — and
the loaders of torchrs and ConfigILM that read them):

* per split three JSON files, ``<prefix>_split_<split>_questions.json``, ``…_answers.json`` and
  ``…_images.json`` (``<prefix>`` is ``LR`` or ``RSVQAxBEN``; ``<split>`` is ``train``, ``val``
  or ``test``), each one object holding one list: ``{"questions": [...]}``,
  ``{"answers": [...]}``, ``{"images": [...]}``;
* an image record has ``id``, ``active`` and ``questions_ids``; a question record ``id``,
  ``img_id``, ``type``, ``question``, ``answers_ids`` and ``active``; an answer record ``id``,
  ``question_id``, ``answer`` and ``active``. Inactive records are not part of the dataset;
* images are GeoTIFFs named by image id: ``Images_LR/<id>.tif`` (RSVQA-LR) and
  ``Images/<id>.tif`` (RSVQAxBEN). The all-splits files (``LRBEN*.json``, ``all_*``) are not
  read: the split files are the published splits.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import rasterio
import rasterio.warp
import torch
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioIOError
from torch.utils.data import Dataset

from thinkingearth.errors import DataLayoutError, UserInputError
from thinkingearth.sensors import get_sensor

__all__ = ["RSVQALR", "RSVQAxBEN"]

# Channel order of a three-band RGB image, as the papers describe it (red, green, blue).
_S2_RGB = ("B04", "B03", "B02")
# Channel order of twelve-band BigEarthNet Sentinel-2 patches.
_BEN_S2 = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _load_list(path: Path, key: str) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataLayoutError(f"RSVQA file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataLayoutError(f"RSVQA file {path} is not valid JSON: {_one_line(exc)}") from None
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise DataLayoutError(
            f"RSVQA file {path} has no {key!r} list (expected {{{key!r}: [...]}})"
        )
    records = data[key]
    for record in records:
        if not isinstance(record, dict) or "id" not in record:
            raise DataLayoutError(f"RSVQA file {path}: every {key} entry needs an 'id'")
    return records


class _RSVQA(Dataset):
    """Shared reader of the RSVQA JSON layout; see :class:`RSVQALR` and :class:`RSVQAxBEN`."""

    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    prefix: ClassVar[str] = ""
    image_dir: ClassVar[str] = ""
    dataset_name: ClassVar[str] = ""

    def __init__(
        self,
        root: str | Path,
        split: Literal["train", "val", "test"] = "train",
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        *,
        sensor: Literal["sentinel-2-l2a", "sentinel-2-l1c"] = "sentinel-2-l2a",
    ) -> None:
        if split not in self.splits:
            raise UserInputError(
                f"{self.dataset_name} split must be one of {', '.join(self.splits)}, got {split!r}"
            )
        self.sensor = get_sensor(sensor).name
        if not self.sensor.startswith("sentinel-2"):
            raise UserInputError(
                f"{self.dataset_name} images are Sentinel-2: sensor must be sentinel-2-l2a or "
                f"sentinel-2-l1c, got {sensor!r}"
            )
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataLayoutError(f"{self.dataset_name} folder not found: {self.root}")
        self.split = split
        self.transforms = transforms
        stem = f"{self.prefix}_split_{split}"
        images = _load_list(self.root / f"{stem}_images.json", "images")
        questions = _load_list(self.root / f"{stem}_questions.json", "questions")
        answers = _load_list(self.root / f"{stem}_answers.json", "answers")
        self.images_path = self.root / self.image_dir
        if not self.images_path.is_dir():
            raise DataLayoutError(
                f"{self.dataset_name} image folder {self.image_dir}/ not found in {self.root}"
            )

        active_images = {rec["id"]: rec for rec in images if rec.get("active", True)}
        answer_of: dict[Any, str] = {}  # question id -> its first active answer
        answer_by_id: dict[Any, str] = {}
        for rec in answers:
            if rec.get("active", True) and "answer" in rec:
                answer_by_id[rec["id"]] = str(rec["answer"])
                if "question_id" in rec:
                    answer_of.setdefault(rec["question_id"], str(rec["answer"]))
        self._items: list[tuple[Any, Any, str, str, str]] = []
        for rec in questions:
            if not rec.get("active", True) or rec.get("img_id") not in active_images:
                continue
            if "question" not in rec or "type" not in rec:
                raise DataLayoutError(
                    f"{self.dataset_name} question {rec['id']} in {stem}_questions.json lacks "
                    "'question' or 'type'"
                )
            # the first active answer listed by the question, else the first naming it
            ids = rec.get("answers_ids") or []
            answer = next((answer_by_id[a] for a in ids if a in answer_by_id), None)
            if answer is None:
                answer = answer_of.get(rec["id"])
            if answer is None:
                raise DataLayoutError(
                    f"{self.dataset_name} question {rec['id']} has no active answer in "
                    f"{stem}_answers.json"
                )
            self._items.append(
                (rec["id"], rec["img_id"], str(rec["question"]), answer, str(rec["type"]))
            )
        if not self._items:
            raise DataLayoutError(f"no active {self.dataset_name} questions in split {split}")
        self._image_records: Mapping[Any, dict[str, Any]] = active_images

    def __len__(self) -> int:
        """Number of question-answer pairs."""
        return len(self._items)

    @property
    def question_types(self) -> tuple[str, ...]:
        """The question types present, sorted."""
        return tuple(sorted({item[4] for item in self._items}))

    def _read_image(self, image_id: Any) -> tuple[torch.Tensor, tuple[str, ...], dict[str, Any]]:
        path = self.images_path / f"{image_id}.tif"
        if not path.is_file():
            raise DataLayoutError(
                f"{self.dataset_name} image {path.name} not found in {self.images_path}"
            )
        try:
            with warnings.catch_warnings():
                # web-distributed RGB patches often carry no georeferencing: NaN lon/lat then
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                ds = rasterio.open(path)
            with ds:
                array = ds.read()
                crs, transform = ds.crs, ds.transform
                descriptions = tuple(d or "" for d in ds.descriptions)
                dtype = ds.dtypes[0]
        except RasterioIOError as exc:
            raise DataLayoutError(
                f"cannot read {self.dataset_name} image {path}: {_one_line(exc)}"
            ) from None
        bands = self._bands(array.shape[0], descriptions, path)
        meta: dict[str, Any] = {"lon": math.nan, "lat": math.nan, "gsd": math.nan}
        if crs is not None:
            height, width = array.shape[-2:]
            a, b, c, d, e, f = tuple(transform)[:6]
            x, y = a * width / 2 + b * height / 2 + c, d * width / 2 + e * height / 2 + f
            try:
                lons, lats = rasterio.warp.transform(crs, "EPSG:4326", [x], [y])
                meta.update(lon=float(lons[0]), lat=float(lats[0]))
            except (CRSError, ValueError):
                pass
            if crs.is_projected:
                meta["gsd"] = float(
                    math.sqrt(abs(transform.a * transform.e - transform.b * transform.d))
                )
            meta.update(crs=crs.to_string(), transform=tuple(transform)[:6])
        if dtype == "uint8":
            # 8-bit renderings, not digital numbers: registry statistics do not apply to them
            meta["rendering"] = "rgb8"
        image = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        return image, bands, meta

    def _bands(self, count: int, descriptions: tuple[str, ...], path: Path) -> tuple[str, ...]:
        sensor = get_sensor(self.sensor)
        if descriptions and all(descriptions):
            try:  # band names written in the file win over the dataset's description
                return tuple(sensor.band(d).name for d in descriptions)
            except UserInputError:
                pass
        if count == 3:
            return _S2_RGB
        if count == len(_BEN_S2):
            return _BEN_S2
        raise DataLayoutError(
            f"{self.dataset_name} image {path} has {count} bands without registry band names; "
            "expected 3 (red, green, blue) or the 12 BigEarthNet Sentinel-2 bands"
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        """One question with its answer and image as a Sample (see the class docstring)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} questions")
        question_id, image_id, question, answer, kind = self._items[index]
        image, bands, meta = self._read_image(image_id)
        record = self._image_records[image_id]
        sample: dict[str, Any] = {
            "image": image,
            "bands": bands,
            "sensor": self.sensor,
            "time": math.nan,
            **meta,
            "question": question,
            "answer": answer,
            "question_type": kind,
            "question_id": question_id,
            "image_id": image_id,
            "name": str(record.get("original_name") or image_id),
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample


class RSVQALR(_RSVQA):
    """RSVQA-LR: visual question answering on Sentinel-2 RGB images of the Netherlands.

    `RSVQA <https://rsvqa.sylvainlobry.com/>`__ (Lobry et al., 2020), low-resolution part:
    nine Sentinel-2 tiles over the Netherlands cut into 772 images of 256 × 256 pixels at 10 m
    (6.55 km²) keeping the red, green and blue bands, with question-answer pairs generated
    from OpenStreetMap. Question types (``type``): ``presence``, ``comp``
    (comparison), ``rural_urban`` and ``count``. Splits at tile level: train 77.8 %, val 11.1 %,
    test 11.1 %.

    Dataset format (module docstring): ``root`` holds ``LR_split_<split>_{images,questions,
    answers}.json`` and ``Images_LR/<id>.tif``.

    Each sample is one active question of an active image: ``image`` float32 ``[3, H, W]`` in
    stored values, ``bands`` ``("B04", "B03", "B02")`` (the file's band descriptions if it has
    registry names), ``sensor`` (``sensor`` argument: the dataset does not state the product
    level; the default names L2A — pass ``"sentinel-2-l1c"`` if your copy is L1C),
    ``question``, ``answer`` (the first active answer), ``question_type``, ``question_id``,
    ``image_id``, ``name``; ``lon``/``lat``/``gsd``/``crs``/``transform`` from the GeoTIFF when
    it is georeferenced (NaN otherwise), ``time`` NaN. Images stored as 8-bit values carry
    ``rendering="rgb8"``: they are display renderings, and the registry's normalisation
    statistics (digital numbers) do not apply to them.

    If you use this dataset in your research, please cite:

    .. code-block:: bibtex

        @article{lobry2020rsvqa,
          title={{RSVQA}: Visual Question Answering for Remote Sensing Data},
          author={Lobry, Sylvain and Marcos, Diego and Murray, Jesse and Tuia, Devis},
          journal={IEEE Transactions on Geoscience and Remote Sensing},
          volume={58},
          number={12},
          pages={8555--8566},
          year={2020},
          doi={10.1109/TGRS.2020.2988782}
        }
    """

    prefix = "LR"
    image_dir = "Images_LR"
    dataset_name = "RSVQA-LR"


class RSVQAxBEN(_RSVQA):
    """RSVQAxBEN: visual question answering on BigEarthNet Sentinel-2 patches.

    `RSVQAxBEN <https://rsvqa.sylvainlobry.com/>`__ (Lobry et al., 2021) builds about 15
    million image/question/answer triplets from the 590,326 BigEarthNet v1 Sentinel-2 patches
    (120 × 120 pixels at 10 m, ten European countries) and their CORINE labels: yes/no and
    land-cover questions (``type``). Splits follow BigEarthNet's geography.

    Dataset format (module docstring): ``root`` holds ``RSVQAxBEN_split_<split>_{images,
    questions,answers}.json`` and ``Images/<id>.tif``.

    Samples as for :class:`RSVQALR`: three-band images are read as ``("B04", "B03", "B02")``,
    twelve-band ones as the BigEarthNet Sentinel-2 bands ``B01 … B12`` (no ``B10``), unless the
    file names its bands. ``name`` is the image record's ``original_name`` (the BigEarthNet
    patch) when present. BigEarthNet's Sentinel-2 patches are L2A, the default ``sensor``.

    If you use this dataset in your research, please cite:

    .. code-block:: bibtex

        @inproceedings{lobry2021rsvqaxben,
          title={{RSVQA} Meets {BigEarthNet}: A New, Large-Scale, Visual Question Answering
                 Dataset for Remote Sensing},
          author={Lobry, Sylvain and Demir, Beg{\\"u}m and Tuia, Devis},
          booktitle={IGARSS 2021 - 2021 IEEE International Geoscience and Remote Sensing
                     Symposium},
          year={2021}
        }
    """

    prefix = "RSVQAxBEN"
    image_dir = "Images"
    dataset_name = "RSVQAxBEN"
