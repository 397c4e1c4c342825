"""Real pretraining data: one module per ``data.source``, one reader per sensor.

* ``folder`` (:mod:`.folder`): any folder tree of GeoTIFF/COG files per sensor entry's ``root``;
* ``bigearthnet`` (:mod:`.bigearthnet`): BigEarthNet v1/v2, Sentinel-2 L2A and Sentinel-1, with
  the multi-labels SoftCon reads;
* ``kurosiwo`` (:mod:`.kurosiwo`): Kuro Siwo's labelled tiles and unlabelled SAR set;
* ``ssl4eo-s12`` (:mod:`.ssl4eo`): SSL4EO-S12 Sentinel-1 and Sentinel-2 L1C/L2A;
* ``copernicus-pretrain`` (:mod:`.copernicus_pretrain`): the Copernicus-Pretrain shards.

(``synthetic`` is :mod:`thinkingearth.data.synthetic`; ``shards`` is
:mod:`thinkingearth.pretrain.shards`.) Every sample is a window of ``data.size`` pixels, drawn
per ``(seed, sample)`` (:mod:`.base`); :func:`open_sensor` gives a sensor's samples and
:func:`open_pair` the co-registered pairs of ``data.pair`` for ``cross_sensor``.
"""

from __future__ import annotations

from thinkingearth.errors import UserInputError
from thinkingearth.pretrain.config import PretrainConfig
from thinkingearth.pretrain.sources.base import PairSamples, SensorReader, WindowSamples
from thinkingearth.sensors import get_sensor

__all__ = ["SOURCES", "PairSamples", "SensorReader", "WindowSamples", "open_pair", "open_sensor"]

#: The real sources this package reads.
SOURCES: tuple[str, ...] = (
    "folder",
    "bigearthnet",
    "kurosiwo",
    "ssl4eo-s12",
    "copernicus-pretrain",
)


def open_reader(config: PretrainConfig, sensor: str) -> SensorReader:
    """The reader of ``sensor`` for ``config.data.source``."""
    source = config.data.source
    if source == "folder":
        from thinkingearth.pretrain.sources.folder import open_folder

        return open_folder(config, sensor)
    if source == "bigearthnet":
        from thinkingearth.pretrain.sources.bigearthnet import open_bigearthnet

        return open_bigearthnet(config, sensor)
    if source == "kurosiwo":
        from thinkingearth.pretrain.sources.kurosiwo import open_kurosiwo

        return open_kurosiwo(config, sensor)
    if source == "ssl4eo-s12":
        from thinkingearth.pretrain.sources.ssl4eo import open_ssl4eo

        return open_ssl4eo(config, sensor)
    if source == "copernicus-pretrain":
        from thinkingearth.pretrain.sources.copernicus_pretrain import open_copernicus

        return open_copernicus(config, sensor)
    raise UserInputError(
        f"data.source {source!r} is not read here; expected one of: {', '.join(SOURCES)}"
    )


def open_sensor(config: PretrainConfig, sensor: str) -> WindowSamples:
    """``sensor``'s samples of the run: ``n`` of them per pass (``data.sensors`` entry)."""
    reader = open_reader(config, sensor)
    return WindowSamples(reader, config.seed, config.source_for(sensor).n)


def open_pair(config: PretrainConfig) -> PairSamples:
    """The co-registered pairs of ``data.pair`` (``cross_sensor``).

    Each pair is ``{"a": Sample, "b": Sample}`` with ``a`` of the pair's first sensor. Pairs per
    pass: the smaller ``n`` of the two sensors' entries (``None``: every pair).
    """
    assert config.data.pair is not None
    first, second = (get_sensor(s).name for s in config.data.pair)
    counts = [config.source_for(s).n for s in (first, second)]
    n = min((c for c in counts if c is not None), default=None)
    source = config.data.source
    if source == "copernicus-pretrain":
        from thinkingearth.pretrain.sources.copernicus_pretrain import (
            copernicus_pairs,
            open_copernicus,
        )

        a_reader = open_copernicus(config, first)
        b_reader = open_copernicus(config, second, a_reader.samples)
        a, b, pairs = copernicus_pairs(a_reader, b_reader)
        return PairSamples(a, b, pairs, config.seed, n)
    a_any, b_any = open_reader(config, first), open_reader(config, second)
    if source == "folder":
        from thinkingearth.pretrain.sources.folder import FolderReader, folder_pairs

        assert isinstance(a_any, FolderReader) and isinstance(b_any, FolderReader)
        pairs = folder_pairs(a_any, b_any)
    elif source == "bigearthnet":
        from thinkingearth.pretrain.sources.bigearthnet import BigEarthNetReader, bigearthnet_pairs

        assert isinstance(a_any, BigEarthNetReader) and isinstance(b_any, BigEarthNetReader)
        pairs = bigearthnet_pairs(a_any, b_any)
    elif source == "ssl4eo-s12":
        from thinkingearth.pretrain.sources.ssl4eo import SSL4EOReader, ssl4eo_pairs

        assert isinstance(a_any, SSL4EOReader) and isinstance(b_any, SSL4EOReader)
        pairs = ssl4eo_pairs(a_any, b_any)
    else:
        raise UserInputError(f"data.source {source} has no cross-sensor pairs")
    return PairSamples(a_any, b_any, pairs, config.seed, n)
