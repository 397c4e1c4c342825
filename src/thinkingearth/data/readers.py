"""Readers by name: one call opens a split of any labelled data set the toolkit reads.

Configured commands (``thinkingearth finetune``) name their data as ``reader`` + ``root`` +
``options``; :func:`open_split` turns that into the reader's dataset of Samples. Each reader
keeps its own home in :mod:`thinkingearth.data.formats` (or :mod:`thinkingearth.data.synthetic`);
this module only knows their names, their options and which splits they publish.

Readers and their options:

* ``synthetic``: :class:`~thinkingearth.data.synthetic.SyntheticCopernicus` (no data needed);
  ``task``, ``sensor``, ``n`` (a number, or one per split), ``size``, ``seed``, ``bands``,
  ``cloud_cover``, ``world`` (shift settings: ``biome``, ``vegetation_shift``,
  ``soil_brightness``, ``phenology_shift_days``, ``soil_moisture_db``, ``speckle_looks``,
  ``flood_type``, ``season``; see :class:`~thinkingearth.data.synthetic.WorldConfig`);
* ``kurosiwo``: :class:`~thinkingearth.data.formats.kurosiwo.KuroSiwo`; ``events``,
  ``exclude_events``;
* ``sen1floods11``: :class:`~thinkingearth.data.formats.sen1floods11.Sen1Floods11`; ``sensor``
  (``s1`` or ``s2``), ``bands``;
* ``bigearthnet``: :class:`~thinkingearth.data.formats.bigearthnet.BigEarthNet`; ``version``
  (default: found from the layout, :func:`bigearthnet_version`), ``sensor``, ``num_classes``,
  ``bands``, ``countries`` (v2: the ``metadata.parquet`` countries to keep);
* ``eurosat-ms``: :class:`~thinkingearth.data.formats.eurosat.EuroSATMS`; ``bands``;
* ``copernicus-bench``: :class:`~thinkingearth.data.formats.copernicusbench.CopernicusBench`;
  ``task`` (required, e.g. ``eurosat_s2``), ``bands``, ``mode``;
* ``bigearthnet-txt``: :class:`~thinkingearth.data.formats.bigearthnet_txt.BigEarthNetTxt`
  (captions, question-answer pairs and referring expressions of BigEarthNet v2 patches; splits
  ``train``, ``val``, ``test``, ``bench``); ``types``, ``sensor``, ``bands``, ``images_root``,
  ``text_file``, ``missing``;
* ``gaia``: :class:`~thinkingearth.data.formats.gaia.GAIA` (five captions per image);
  ``rgb`` (required: what the 8-bit renderings show, ``true-colour``), ``caption_index``,
  ``seed``, ``unmapped``;
* ``rsvqa-lr``: :class:`~thinkingearth.data.formats.rsvqa.RSVQALR`; ``sensor``;
* ``rsvqaxben``: :class:`~thinkingearth.data.formats.rsvqa.RSVQAxBEN`; ``sensor``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from torch.utils.data import Dataset

from thinkingearth.errors import UserInputError

__all__ = [
    "LABELLED_READERS",
    "READERS",
    "ReaderName",
    "bigearthnet_version",
    "open_split",
    "reader_options",
]

ReaderName = Literal[
    "synthetic",
    "kurosiwo",
    "sen1floods11",
    "bigearthnet",
    "eurosat-ms",
    "copernicus-bench",
    "bigearthnet-txt",
    "gaia",
    "rsvqa-lr",
    "rsvqaxben",
]
READERS: tuple[str, ...] = get_args(ReaderName)
#: The readers whose Samples carry task labels (``mask``, ``label`` or ``target``) once per image;
#: the vision-language ones give text per annotation and serve ``embed`` and captions instead.
LABELLED_READERS: tuple[str, ...] = (
    "synthetic",
    "kurosiwo",
    "sen1floods11",
    "bigearthnet",
    "eurosat-ms",
    "copernicus-bench",
)

_OPTIONS: Mapping[str, frozenset[str]] = {
    "synthetic": frozenset(
        {"task", "sensor", "n", "size", "seed", "bands", "cloud_cover", "world"}
    ),
    "kurosiwo": frozenset({"events", "exclude_events"}),
    "sen1floods11": frozenset({"sensor", "bands"}),
    "bigearthnet": frozenset({"version", "sensor", "num_classes", "bands", "countries"}),
    "eurosat-ms": frozenset({"bands"}),
    "copernicus-bench": frozenset({"task", "bands", "mode"}),
    "bigearthnet-txt": frozenset(
        {"types", "sensor", "bands", "images_root", "text_file", "missing"}
    ),
    "gaia": frozenset({"rgb", "caption_index", "seed", "unmapped"}),
    "rsvqa-lr": frozenset({"sensor"}),
    "rsvqaxben": frozenset({"sensor"}),
}


def reader_options(reader: str) -> frozenset[str]:
    """The options a reader takes.

    Raises:
        UserInputError: For an unknown reader, listing the readers.
    """
    if reader not in _OPTIONS:
        raise UserInputError(f"unknown reader {reader!r}; expected one of: {', '.join(READERS)}")
    return _OPTIONS[reader]


def bigearthnet_version(root: str | Path) -> Literal[1, 2]:
    """BigEarthNet's version from its layout: v2 (reBEN) keeps ``metadata.parquet`` at the root."""
    return 2 if (Path(root) / "metadata.parquet").is_file() else 1


def _root(reader: str, root: str | Path | None) -> Path:
    if root is None:
        raise UserInputError(f"reader {reader} reads data from disk: give data.root or --data-root")
    path = Path(root)
    if not path.is_dir():
        raise UserInputError(f"data root {path} is not a folder (reader {reader})")
    return path


def open_split(
    reader: str,
    root: str | Path | None,
    split: str,
    options: Mapping[str, Any] | None = None,
) -> Dataset[dict[str, Any]]:
    """Open one split of a reader.

    Args:
        reader: One of :data:`READERS`.
        root: The data set's root folder (not used by ``synthetic``).
        split: The reader's split name (``train``, ``val``, ``test``; Sen1Floods11 also
            ``bolivia``, BigEarthNet.txt also ``bench``).
        options: Reader options (see the module table).

    Returns:
        The dataset of Samples in stored units.

    Raises:
        UserInputError: Unknown reader or option, a missing root, or the reader's own one-line
            error for a layout it cannot read.
    """
    options = dict(options or {})
    unknown = sorted(set(options) - reader_options(reader))
    if unknown:
        raise UserInputError(
            f"reader {reader} has no option {unknown[0]!r}; expected some of: "
            + ", ".join(sorted(_OPTIONS[reader]))
        )
    if reader == "synthetic":
        from thinkingearth.data.synthetic import SyntheticCopernicus

        n = options.pop("n", {"train": 256, "val": 64, "test": 128})
        count = n.get(split) if isinstance(n, Mapping) else n
        if not isinstance(count, int) or count < 1:
            raise UserInputError(
                f"reader synthetic: n must give a positive number of samples for split {split}"
            )
        return SyntheticCopernicus(split=split, n=count, **options)  # type: ignore[arg-type]
    path = _root(reader, root)
    if reader == "kurosiwo":
        from thinkingearth.data.formats.kurosiwo import KuroSiwo

        return KuroSiwo(path, split=split, **options)  # type: ignore[arg-type]
    if reader == "sen1floods11":
        from thinkingearth.data.formats.sen1floods11 import Sen1Floods11

        return Sen1Floods11(path, split=split, **options)  # type: ignore[arg-type]
    if reader == "bigearthnet":
        from thinkingearth.data.formats.bigearthnet import BigEarthNet

        options.setdefault("version", bigearthnet_version(path))
        return BigEarthNet(path, split=split, **options)  # type: ignore[arg-type]
    if reader == "eurosat-ms":
        from thinkingearth.data.formats.eurosat import EuroSATMS

        return EuroSATMS(path, split=split, **options)  # type: ignore[arg-type]
    if reader == "bigearthnet-txt":
        from thinkingearth.data.formats.bigearthnet_txt import BigEarthNetTxt

        return BigEarthNetTxt(path, split=split, **options)  # type: ignore[arg-type]
    if reader == "gaia":
        from thinkingearth.data.formats.gaia import GAIA

        return GAIA(path, split=split, **options)  # type: ignore[arg-type]
    if reader in ("rsvqa-lr", "rsvqaxben"):
        from thinkingearth.data.formats.rsvqa import RSVQALR, RSVQAxBEN

        cls = RSVQALR if reader == "rsvqa-lr" else RSVQAxBEN
        return cls(path, split=split, **options)  # type: ignore[arg-type]
    from thinkingearth.data.formats.copernicusbench import CopernicusBench

    name = options.pop("task", None)
    if name is None:
        raise UserInputError("reader copernicus-bench needs options.task, e.g. eurosat_s2")
    return CopernicusBench(name, path, split=split, **options)  # type: ignore[arg-type]
