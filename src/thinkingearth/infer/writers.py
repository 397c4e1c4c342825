"""Writers of scene predictions: the class map, its uncertainty, styles QGIS reads, a quicklook.

``predict --out flood.tif`` writes, all on the input's grid:

* ``flood.tif``: the class map, a Cloud-Optimised GeoTIFF with one ``uint8`` band of class ids
  (255 = no data) and a colour table, one colour per class;
* ``flood.tif.aux.xml``: the class names as GDAL category names. GDAL keeps the category names
  of a GeoTIFF in this sidecar (its PAM file; ``GDALSetRasterCategoryNames`` on a GeoTIFF
  writes exactly this), reads it whenever it opens the map, and QGIS labels the colour table's
  classes with them;
* ``flood_uncertainty.tif``: the uncertainty, a COG with one ``float32`` band per measure in
  nats and NaN as no data: the predictive entropy (:data:`UNCERTAINTY_BANDS`, band description
  ``entropy``), or with ``predict --uncertainty split`` the entropy and its aleatoric and
  epistemic parts (:data:`SPLIT_UNCERTAINTY_BANDS`: ``entropy``, ``aleatoric``, ``epistemic``);
* ``flood.qml`` and ``flood_uncertainty.qml``: QGIS styles, loaded automatically for a raster
  of the same name: the classes with their names and colours (only the model's classes: a
  GeoTIFF colour table always has 256 entries, which QGIS would otherwise list), and the
  uncertainty on a colour ramp from 0 (certain) to ln K (uniform over K classes);
* ``flood.png``: a quicklook (:func:`write_quicklook`).

A GeoTIFF has one data type for all its bands, so the ``uint8`` classes (which carry the colour
table) and the ``float32`` uncertainty (which needs NaN) are two files. The class names and the
model's provenance are also in both files' tags.

The entropy is stored with 10 mantissa bits (relative precision 0.1 %, :func:`quantize`): the
noise in the low bits is what makes float rasters slow to compress, and dropping it halves the
file and the time to write it.

The predictor streams finished rows into uncompressed tiled GeoTIFFs (:class:`RowWriter`), then
:func:`write_cog` copies each to a deflate-compressed COG with overviews; both run under a
bounded GDAL block cache (the caller's :func:`gdal_env`), so memory does not grow with the scene.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import rasterio
import rasterio.shutil
from matplotlib.colors import to_hex, to_rgba
from matplotlib.patches import Patch
from rasterio.enums import Resampling
from rasterio.windows import Window

from thinkingearth.data.scene import Grid
from thinkingearth.viz import class_colours, legend_handles

__all__ = [
    "NODATA",
    "SPLIT_UNCERTAINTY_BANDS",
    "UNCERTAINTY_BANDS",
    "RowWriter",
    "categories_path",
    "category_names_xml",
    "class_style_qml",
    "gdal_env",
    "output_paths",
    "quantize",
    "style_path",
    "uncertainty_path",
    "uncertainty_style_qml",
    "write_cog",
    "write_quicklook",
]

#: No-data value of the class map (class ids are 0-254).
NODATA = 255
#: The uncertainty measures, one band each, in band order (descriptions of the bands).
UNCERTAINTY_BANDS: tuple[str, ...] = ("entropy",)
#: The bands of ``predict --uncertainty split``: the entropy, then its aleatoric and epistemic
#: parts (they sum to it).
SPLIT_UNCERTAINTY_BANDS: tuple[str, ...] = ("entropy", "aleatoric", "epistemic")
#: The uncertainty's colour ramp, in the quicklook and the QGIS style.
UNCERTAINTY_CMAP = "viridis"
#: How the quicklook and the QGIS style show pixels without data.
NODATA_COLOUR = "#c8c8c8"
NODATA_HATCH_COLOUR = "#6e6e6e"


def uncertainty_path(out: Path) -> Path:
    """The uncertainty COG beside a class map: ``flood.tif`` -> ``flood_uncertainty.tif``."""
    return out.with_name(f"{out.stem}_uncertainty{out.suffix}")


def categories_path(raster: Path) -> Path:
    """GDAL's sidecar of a raster (category names): ``flood.tif`` -> ``flood.tif.aux.xml``."""
    return raster.with_name(raster.name + ".aux.xml")


def style_path(raster: Path) -> Path:
    """The QGIS style QGIS loads with a raster: ``flood.tif`` -> ``flood.qml``."""
    return raster.with_suffix(".qml")


def output_paths(out: Path) -> tuple[Path, ...]:
    """Every file a prediction writes besides the quicklook, the class map last.

    The predictor renames them into place in this order (after the quicklook), so a class map
    that exists comes with every file beside it.
    """
    unc = uncertainty_path(out)
    return (unc, style_path(unc), categories_path(out), style_path(out), out)


def gdal_env(cache_mb: int = 64, threads: int | str = "ALL_CPUS") -> rasterio.Env:
    """A rasterio environment with GDAL's block cache bounded to ``cache_mb`` megabytes.

    GDAL's default cache is 5 % of RAM; a streaming writer then grows with the scene until the
    cache is full, so the predictor bounds it.
    """
    # rasterio passes an integer GDAL_CACHEMAX to GDALSetCacheMax64, i.e. in bytes.
    return rasterio.Env(GDAL_CACHEMAX=int(cache_mb) * 2**20, GDAL_NUM_THREADS=str(threads))


def quantize(values: np.ndarray, mantissa_bits: int = 10) -> np.ndarray:
    """Round float32 values to ``mantissa_bits`` mantissa bits (in place; NaN stays NaN)."""
    if values.dtype != np.float32:
        raise TypeError(f"quantize works on float32, got {values.dtype}")
    drop = 23 - mantissa_bits
    bits = values.view(np.uint32)
    bits += np.uint32(1 << (drop - 1))  # round to nearest
    bits &= np.uint32((0xFFFFFFFF >> drop) << drop)
    return values


def _rgba255(colour: str) -> tuple[int, int, int, int]:
    r, g, b, a = to_rgba(colour)
    return (round(r * 255), round(g * 255), round(b * 255), round(a * 255))


class RowWriter:
    """Write a prediction row block by row block into two uncompressed tiled GeoTIFFs.

    The class map gets one ``uint8`` band (255 = no data) with a colour table; the uncertainty
    one ``float32`` band per measure (NaN = no data), each described by its name.

    Args:
        classes_path: the class map to create.
        uncertainty_path: the uncertainty file to create.
        grid: the output grid (the input's CRS, transform and size).
        colours: one colour per class (any matplotlib colour), class id ``k`` -> ``colours[k]``.
        tags: metadata of the class map.
        uncertainty_tags: metadata of the uncertainty file.
        uncertainty_bands: the uncertainty measures, in band order.
        uncertainty_units: the unit of each uncertainty band (GDAL's band unit; default
            ``nats`` for every band).
    """

    def __init__(
        self,
        classes_path: Path,
        uncertainty_path: Path,
        grid: Grid,
        *,
        colours: Sequence[str],
        tags: Mapping[str, str] | None = None,
        uncertainty_tags: Mapping[str, str] | None = None,
        uncertainty_bands: Sequence[str] = UNCERTAINTY_BANDS,
        uncertainty_units: Sequence[str] | None = None,
    ) -> None:
        if not 1 <= len(colours) <= NODATA:
            raise ValueError(f"a class map takes 1 to {NODATA} classes, got {len(colours)}")
        if uncertainty_units is None:
            uncertainty_units = ("nats",) * len(uncertainty_bands)
        if len(uncertainty_units) != len(uncertainty_bands):
            raise ValueError("give one unit per uncertainty band")
        base: dict[str, Any] = {
            "driver": "GTiff",
            "width": grid.width,
            "height": grid.height,
            "crs": grid.crs,
            "transform": grid.transform,
            "BIGTIFF": "IF_SAFER",
        }
        if grid.width >= 256 and grid.height >= 256:
            base.update(tiled=True, blockxsize=256, blockysize=256)
        self.paths = (classes_path, uncertainty_path)
        self.bands = tuple(uncertainty_bands)
        self._classes = rasterio.open(
            classes_path, "w", **base, count=1, dtype="uint8", nodata=NODATA
        )
        self._uncertainty = None
        try:
            self._classes.set_band_description(1, "class")
            self._classes.write_colormap(1, {k: _rgba255(c) for k, c in enumerate(colours)})
            if tags:
                self._classes.update_tags(**tags)
            self._uncertainty = rasterio.open(
                uncertainty_path,
                "w",
                **base,
                count=len(self.bands),
                dtype="float32",
                nodata=float("nan"),
            )
            for i, (name, unit) in enumerate(zip(self.bands, uncertainty_units, strict=True), 1):
                self._uncertainty.set_band_description(i, name)
                self._uncertainty.set_band_unit(i, unit)
            if uncertainty_tags:
                self._uncertainty.update_tags(**uncertainty_tags)
        except BaseException:
            self.close()
            raise

    def write(self, row: int, classes: np.ndarray, uncertainty: np.ndarray) -> None:
        """Write rows ``row … row + h``.

        Args:
            row: the first row.
            classes: ``uint8`` ``[h, W]`` class ids, 255 = no data.
            uncertainty: ``float32`` ``[B, h, W]`` (or ``[h, W]`` for one band), NaN = no data;
                rounded in place (:func:`quantize`).
        """
        h, w = classes.shape
        window = Window(0, row, w, h)
        self._classes.write(classes.astype(np.uint8, copy=False), 1, window=window)
        values = uncertainty[None] if uncertainty.ndim == 2 else uncertainty
        assert self._uncertainty is not None
        self._uncertainty.write(quantize(values), window=window)

    def close(self) -> None:
        """Close both files."""
        self._classes.close()
        if self._uncertainty is not None:
            self._uncertainty.close()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def write_cog(source: Path, target: Path) -> None:
    """Copy a GeoTIFF to a deflate-compressed Cloud-Optimised GeoTIFF with nearest overviews.

    Tiles of 512 px, a predictor (horizontal differencing for the class ids, floating point for
    the uncertainty), deflate level 1 (as small as level 6 on these rasters and four times
    faster), overviews down to one tile, all CPUs for the compression; the caller bounds GDAL's
    cache (:func:`gdal_env`). Colour table, band descriptions, units and tags are copied.
    """
    rasterio.shutil.copy(
        str(source),
        str(target),
        driver="COG",
        COMPRESS="DEFLATE",
        LEVEL="1",
        PREDICTOR="YES",
        BLOCKSIZE="512",
        OVERVIEW_RESAMPLING="NEAREST",
        NUM_THREADS="ALL_CPUS",
        BIGTIFF="IF_SAFER",
    )


def category_names_xml(classes: Sequence[str]) -> str:
    """GDAL's PAM sidecar (``.aux.xml``) giving band 1 the class names as category names."""
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    names = ET.SubElement(band, "CategoryNames")
    for name in classes:
        ET.SubElement(names, "Category").text = name
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


_QML_HEAD = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"


def _qml(renderer: ET.Element) -> str:
    root = ET.Element("qgis", version="3.28", styleCategories="Symbology")
    pipe = ET.SubElement(root, "pipe")
    provider = ET.SubElement(pipe, "provider")
    ET.SubElement(
        provider,
        "resampling",
        enabled="false",
        zoomedInResamplingMethod="nearestNeighbour",
        zoomedOutResamplingMethod="nearestNeighbour",
        maxOversampling="2",
    )
    pipe.append(renderer)
    ET.indent(root)
    return _QML_HEAD + ET.tostring(root, encoding="unicode") + "\n"


def class_style_qml(classes: Sequence[str], colours: Sequence[str]) -> str:
    """A QGIS style: a paletted renderer with one entry per class, named and coloured."""
    renderer = ET.Element(
        "rasterrenderer", type="paletted", band="1", opacity="1", alphaBand="-1", nodataColor=""
    )
    ET.SubElement(renderer, "rasterTransparency")
    palette = ET.SubElement(renderer, "colorPalette")
    for k, (name, colour) in enumerate(zip(classes, colours, strict=True)):
        r, g, b, a = _rgba255(colour)
        ET.SubElement(
            palette,
            "paletteEntry",
            value=str(k),
            color=f"#{r:02x}{g:02x}{b:02x}",
            alpha=str(a),
            label=name,
        )
    return _qml(renderer)


def uncertainty_style_qml(max_value: float, *, band: int = 1, stops: int = 6) -> str:
    """A QGIS style: band ``band`` on the uncertainty colour ramp from 0 to ``max_value``."""
    renderer = ET.Element(
        "rasterrenderer",
        type="singlebandpseudocolor",
        band=str(band),
        opacity="1",
        alphaBand="-1",
        nodataColor="",
        classificationMin="0",
        classificationMax=f"{max_value:.6g}",
    )
    ET.SubElement(renderer, "rasterTransparency")
    origin = ET.SubElement(renderer, "minMaxOrigin")
    ET.SubElement(origin, "limits").text = "None"  # the fixed range below, not the data's
    ET.SubElement(origin, "extent").text = "WholeRaster"
    ET.SubElement(origin, "statAccuracy").text = "Estimated"
    shader = ET.SubElement(ET.SubElement(renderer, "rastershader"), "colorrampshader")
    shader.attrib.update(
        colorRampType="INTERPOLATED",
        classificationMode="1",
        clip="0",
        minimumValue="0",
        maximumValue=f"{max_value:.6g}",
        labelPrecision="2",
    )
    cmap = plt.get_cmap(UNCERTAINTY_CMAP)
    for i in range(stops):
        t = i / (stops - 1)
        value = t * max_value
        label = f"{value:.2f}"
        if i == 0:
            label += " (certain)"
        elif i == stops - 1:
            label += " (uniform over the classes)"
        ET.SubElement(
            shader,
            "item",
            value=f"{value:.6g}",
            color=to_hex(cmap(t)),
            alpha="255",
            label=label,
        )
    return _qml(renderer)


def _hatch_nodata(ax: Any, nodata: np.ndarray, extent: tuple[float, float, float, float]) -> None:
    """Grey, hatched pixels where there is no data (drawn over whatever is below)."""
    if not nodata.any():
        return
    grey = np.zeros((*nodata.shape, 4), dtype=np.float32)
    grey[nodata] = to_rgba(NODATA_COLOUR)
    ax.imshow(grey, extent=extent, interpolation="nearest")
    h, w = nodata.shape
    left, right, bottom, top = extent
    xs = left + (np.arange(w) + 0.5) * (right - left) / w
    ys = top + (np.arange(h) + 0.5) * (bottom - top) / h
    hatch = ax.contourf(
        xs, ys, nodata.astype(np.float32), levels=[0.5, 1.5], colors="none", hatches=["////"]
    )
    hatch.set_edgecolor(NODATA_HATCH_COLOUR)
    hatch.set_linewidth(0.0)


def write_quicklook(
    classes_path: Path,
    uncertainty_path: Path,
    target: Path,
    *,
    classes: Sequence[str],
    colours: Sequence[str],
    backdrop: np.ndarray | None = None,
    backdrop_title: str = "input",
    title: str = "",
    max_side: int = 1024,
    class_alpha: float = 0.5,
) -> None:
    """A PNG: the input, the classes over it, and the uncertainty, with a legend.

    No data is grey and hatched in every panel, so it cannot be taken for a class or for zero
    uncertainty. Reads the outputs at reduced resolution (their overviews), never whole.

    Args:
        classes_path: the class map (:class:`RowWriter`'s first file, or its COG).
        uncertainty_path: the uncertainty file; its first band (the total entropy, nats) is
            shown.
        target: the PNG to write.
        classes: the class names.
        colours: one colour per class.
        backdrop: RGB ``[h, w, 3]`` in [0, 1] of the input at any resolution covering the
            whole grid (:func:`thinkingearth.viz.backdrop_rgb`); ``None``: no input panel, and
            the classes drawn opaque.
        backdrop_title: what the backdrop shows.
        title: the figure's title.
        max_side: the longest side read from the outputs, pixels.
        class_alpha: opacity of the classes over the backdrop.
    """
    with rasterio.open(classes_path) as ds:
        height, width = ds.height, ds.width
        factor = max(1, math.ceil(max(height, width) / max_side))
        shape = (math.ceil(height / factor), math.ceil(width / factor))
        cls = ds.read(1, out_shape=shape, resampling=Resampling.nearest)
    with rasterio.open(uncertainty_path) as ds:
        unc = ds.read(1, out_shape=shape, resampling=Resampling.nearest)
    nodata = cls == NODATA
    k = len(classes)
    extent = (0.0, float(width), float(height), 0.0)
    panels = 3 if backdrop is not None else 2
    aspect = min(2.5, max(0.4, width / height))
    side = 4.2  # inches of a panel's longer side
    panel_w, panel_h = (side, side / aspect) if aspect >= 1 else (side * aspect, side)
    fig, axes = plt.subplots(
        1,
        panels,
        figsize=(panels * panel_w + 1.0, panel_h + 1.1 + 0.25 * math.ceil((k + 1) / 6)),
        layout="constrained",
    )
    cmap = class_colours(colours)
    cls_masked = np.ma.masked_where(nodata | (cls >= k), cls)
    if backdrop is not None:
        axes[0].imshow(backdrop, extent=extent, interpolation="bilinear")
        axes[0].set_title(backdrop_title, fontsize=10)
        axes[1].imshow(backdrop, extent=extent, interpolation="bilinear")
        axes[1].imshow(
            cls_masked,
            cmap=cmap,
            vmin=-0.5,
            vmax=k - 0.5,
            alpha=class_alpha,
            extent=extent,
            interpolation="nearest",
        )
        axes[1].set_title("classes over the input", fontsize=10)
    else:
        axes[0].imshow(
            cls_masked, cmap=cmap, vmin=-0.5, vmax=k - 0.5, extent=extent, interpolation="nearest"
        )
        axes[0].set_title("classes", fontsize=10)
    ax_unc = axes[-1]
    max_entropy = math.log(max(2, k))
    image = ax_unc.imshow(
        np.ma.masked_invalid(unc),
        cmap=UNCERTAINTY_CMAP,
        vmin=0.0,
        vmax=max_entropy,
        extent=extent,
        interpolation="nearest",
    )
    ax_unc.set_title("uncertainty: predictive entropy", fontsize=10)
    # Beside the uncertainty panel, taking its room from every panel alike: equal panels.
    bar = fig.colorbar(image, ax=list(axes), fraction=0.02, pad=0.01)
    bar.set_label(f"nats: 0 certain … {max_entropy:.2f} uniform over {k} classes", fontsize=8)
    for ax in axes:
        _hatch_nodata(ax, nodata, extent)
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = legend_handles(list(classes), list(colours))
    handles.append(
        Patch(facecolor=NODATA_COLOUR, edgecolor=NODATA_HATCH_COLOUR, hatch="////", label="no data")
    )
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=min(len(handles), 6),
        fontsize=9,
        frameon=False,
    )
    if title:
        fig.suptitle(title, fontsize=11)
    fig.savefig(target, dpi=90, format="png")
    plt.close(fig)
