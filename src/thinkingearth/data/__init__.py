"""Data: the Sample contract, the synthetic Copernicus world and the readers of real data sets.

The readers are exported here by name (``from thinkingearth.data import KuroSiwo``); each one
lives in its format module under :mod:`thinkingearth.data.formats`:

* :class:`KuroSiwo` (:mod:`~thinkingearth.data.formats.kurosiwo`): Kuro Siwo GRD flood mapping;
* :class:`BigEarthNet` (:mod:`~thinkingearth.data.formats.bigearthnet`): BigEarthNet v1 and v2
  (reBEN);
* :class:`Sen1Floods11` (:mod:`~thinkingearth.data.formats.sen1floods11`): hand-labelled chips;
* :class:`EuroSATMS` (:mod:`~thinkingearth.data.formats.eurosat`): EuroSAT multispectral;
* :class:`CopernicusBench` (:mod:`~thinkingearth.data.formats.copernicusbench`): the
  Copernicus-Bench tasks via torchgeo;
* :class:`BigEarthNetTxt` (:mod:`~thinkingearth.data.formats.bigearthnet_txt`): BigEarthNet.txt
  captions, question-answer pairs and referring expressions on BigEarthNet v2 patches;
* :class:`GAIA` (:mod:`~thinkingearth.data.formats.gaia`): GAIA image-caption records and shards;
* :class:`RSVQALR`, :class:`RSVQAxBEN` (:mod:`~thinkingearth.data.formats.rsvqa`): remote
  sensing visual question answering;
* :class:`SyntheticCopernicus` (:mod:`~thinkingearth.data.synthetic`): the synthetic world.

Split protocols that measure domain shift (:mod:`~thinkingearth.data.domains`):
:class:`SplitSpec`, :func:`open_domain_splits` and the :class:`DomainSplits` it returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from thinkingearth.data.domains import DomainSplits, SplitSpec, open_domain_splits
    from thinkingearth.data.formats.bigearthnet import BigEarthNet
    from thinkingearth.data.formats.bigearthnet_txt import BigEarthNetTxt
    from thinkingearth.data.formats.copernicusbench import CopernicusBench
    from thinkingearth.data.formats.eurosat import EuroSATMS
    from thinkingearth.data.formats.gaia import GAIA
    from thinkingearth.data.formats.kurosiwo import KuroSiwo
    from thinkingearth.data.formats.rsvqa import RSVQALR, RSVQAxBEN
    from thinkingearth.data.formats.sen1floods11 import Sen1Floods11
    from thinkingearth.data.synthetic import SyntheticCopernicus

__all__ = [
    "GAIA",
    "RSVQALR",
    "BigEarthNet",
    "BigEarthNetTxt",
    "CopernicusBench",
    "DomainSplits",
    "EuroSATMS",
    "KuroSiwo",
    "RSVQAxBEN",
    "Sen1Floods11",
    "SplitSpec",
    "SyntheticCopernicus",
    "open_domain_splits",
]

# Readers, imported on first use so that ``import thinkingearth.data`` (and the light modules
# under it, such as ``thinkingearth.data.sample``) pulls in neither rasterio, h5py nor torchgeo.
_LAZY: dict[str, str] = {
    "KuroSiwo": "thinkingearth.data.formats.kurosiwo",
    "BigEarthNet": "thinkingearth.data.formats.bigearthnet",
    "Sen1Floods11": "thinkingearth.data.formats.sen1floods11",
    "EuroSATMS": "thinkingearth.data.formats.eurosat",
    "CopernicusBench": "thinkingearth.data.formats.copernicusbench",
    "SyntheticCopernicus": "thinkingearth.data.synthetic",
    "BigEarthNetTxt": "thinkingearth.data.formats.bigearthnet_txt",
    "GAIA": "thinkingearth.data.formats.gaia",
    "RSVQALR": "thinkingearth.data.formats.rsvqa",
    "RSVQAxBEN": "thinkingearth.data.formats.rsvqa",
    "SplitSpec": "thinkingearth.data.domains",
    "DomainSplits": "thinkingearth.data.domains",
    "open_domain_splits": "thinkingearth.data.domains",
}


def __getattr__(name: str) -> object:
    """Import a reader lazily (``from thinkingearth.data import KuroSiwo``)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names, the lazy readers included."""
    return sorted({*globals(), *__all__})
