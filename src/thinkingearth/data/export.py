"""Write the synthetic world to disk in real on-disk layouts, so one reader serves both.

* ``kurosiwo``: Kuro Siwo GRD tiles (224×224 px at 10 m, EPSG:3857), read by
  :class:`~thinkingearth.data.formats.kurosiwo.KuroSiwo`; tiles are spread over the published
  train/val/test events (7:1:2).
* ``bigearthnet``: BigEarthNet v1 patches (120×120 px at 10 m, UTM), Sentinel-2 in
  ``BigEarthNet-v1.0/`` and the co-registered Sentinel-1 in ``BigEarthNet-S1-v1.0/``, with
  CORINE labels and the official split CSVs, read by
  :class:`~thinkingearth.data.formats.bigearthnet.BigEarthNet`.
* ``native``: one folder per scene with a multi-band GeoTIFF per sensor (band descriptions are
  registry names), every label raster and a ``scene.json``; the inputs of scene prediction.

Every export is assembled in a temporary folder and renamed into place when complete.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Literal, get_args

import affine
import numpy as np
from rasterio.warp import transform as warp_transform

from thinkingearth.count_progress import CountProgress
from thinkingearth.data.formats.bigearthnet import write_bigearthnet_v1_patch
from thinkingearth.data.formats.kurosiwo import SPLITS, write_kurosiwo_tile
from thinkingearth.data.raster import write_geotiff
from thinkingearth.data.synthetic import (
    BARE,
    BUILT,
    CROP,
    FLOOD_CLASSES,
    GRASS,
    LANDCOVER_CLASSES,
    PRESENCE_THRESHOLD,
    SHRUB,
    TREE,
    WATER,
    WETLAND,
    SyntheticScene,
    WorldConfig,
    generate_scene,
    scene_rng,
)
from thinkingearth.errors import UserInputError
from thinkingearth.fileio import atomic_dir
from thinkingearth.sensors import get_bands, get_sensor

__all__ = ["FORMATS", "ExportFormat", "corine_labels", "export_world", "split_of"]

ExportFormat = Literal["kurosiwo", "bigearthnet", "native"]
FORMATS: tuple[str, ...] = get_args(ExportFormat)
_DEFAULT_SIZE = {"kurosiwo": 224, "bigearthnet": 120, "native": 256}
_EXPORT_STREAM = 7  # scenes on disk come from their own stream, apart from in-memory splits


def split_of(index: int) -> Literal["train", "val", "test"]:
    """The split of the ``index``-th exported sample: 7 train, 1 val, 2 test in every 10."""
    r = index % 10
    return "train" if r < 7 else ("val" if r == 7 else "test")


def corine_labels(scene: SyntheticScene) -> list[str]:
    """CORINE (BigEarthNet 43-class) names of the land cover present in a scene.

    The synthetic classes map to the CORINE class a photo-interpreter would pick in that
    setting: coniferous forest in the north and the mountains, sclerophyllous shrubs in the
    Mediterranean, natural grassland above 1000 m. Snow and ice have no class among
    BigEarthNet's 43 (its snowy patches are flagged and removed), so they give no label.
    """
    frac = scene.class_fractions()
    elevation = float(np.median(scene.dem))
    north = scene.lat > 55.0 or elevation > 1000.0
    names: dict[int, str] = {
        TREE: "Coniferous forest"
        if north
        else ("Mixed forest" if scene.lat > 48 else "Broad-leaved forest"),
        SHRUB: "Sclerophyllous vegetation" if scene.lat < 44.0 else "Transitional woodland/shrub",
        GRASS: "Natural grassland" if elevation > 1000.0 else "Pastures",
        CROP: "Non-irrigated arable land",
        BUILT: "Continuous urban fabric" if frac[BUILT] > 0.3 else "Discontinuous urban fabric",
        BARE: "Bare rock" if elevation > 1500.0 else "Sparsely vegetated areas",
        WETLAND: "Peatbogs" if scene.lat > 55.0 else "Inland marshes",
        WATER: "Water courses" if scene.extras.get("has_river") else "Water bodies",
    }
    labels = [names[k] for k in names if frac[k] >= PRESENCE_THRESHOLD]
    if (
        frac[WATER] >= PRESENCE_THRESHOLD
        and scene.extras.get("has_lake")
        and scene.extras.get("has_river")
    ):
        labels.append("Water bodies")
    return sorted(set(labels))


def _project(lon: float, lat: float, crs: str) -> tuple[float, float]:
    xs, ys = warp_transform("EPSG:4326", crs, [lon], [lat])
    return float(xs[0]), float(ys[0])


def _utm(lon: float, lat: float) -> tuple[str, float, float]:
    zone = int((lon + 180) // 6) + 1
    crs = f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"
    return (crs, *_project(lon, lat, crs))


def _grid(centre_x: float, centre_y: float, shape: tuple[int, int], gsd: float) -> affine.Affine:
    h, w = shape
    # Snap to whole pixels, as archive grids are.
    x0 = math.floor((centre_x - w * gsd / 2) / gsd) * gsd
    y0 = math.ceil((centre_y + h * gsd / 2) / gsd) * gsd
    return affine.Affine(gsd, 0.0, x0, 0.0, -gsd, y0)


def _block_mean(x: np.ndarray, factor: int) -> np.ndarray:
    h, w = x.shape
    return x.reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def _write_kurosiwo(root: Path, scene: SyntheticScene, i: int) -> None:
    split = split_of(i)
    events = SPLITS[split]
    actid = events[(i // 10) % len(events)]
    rng = scene_rng(scene.seed, i, stream=_EXPORT_STREAM + 1)
    tile = uuid.UUID(bytes=rng.bytes(16), version=4).hex
    x, y = _project(scene.lon, scene.lat, "EPSG:3857")
    write_kurosiwo_tile(
        root,
        actid=actid,
        aoi=1 + (i // 10) // len(events),
        tile=tile,
        sar={"SL2": scene.s1[0], "SL1": scene.s1[1], "MS1": scene.s1[2]},
        mlu=scene.flood,
        mna=scene.valid,
        transform=_grid(x, y, scene.shape, scene.gsd),
        crs="EPSG:3857",
        dates={
            k: d.isoformat() for k, d in zip(("SL2", "SL1", "MS1"), scene.s1_dates, strict=True)
        },
        dem=scene.dem,
        info={
            "thinkingearth": {"seed": scene.seed, "index": scene.index, "caption": scene.caption}
        },
    )


def _write_bigearthnet(
    root: Path, scene: SyntheticScene, i: int, splits: dict[str, list[str]]
) -> None:
    crs, x, y = _utm(scene.lon, scene.lat)
    transform = _grid(x, y, scene.shape, scene.gsd)
    stamp = scene.s2_date.strftime("%Y%m%d") + "T101031"
    row, col = divmod(i, 100)
    s2_name = f"S2{'AB'[i % 2]}_MSIL2A_{stamp}_{row}_{col}"
    s1_stamp = scene.s1_dates[-1].strftime("%Y%m%d") + "T054117"
    s1_name = f"S1{'AB'[i % 2]}_IW_GRDH_1SDV_{s1_stamp}_33UUP_{row}_{col}"
    labels = corine_labels(scene)
    bands: dict[str, np.ndarray] = {}
    for k, band in enumerate(get_bands("sentinel-2-l2a")):
        factor = round(band.gsd_m / scene.gsd)
        pixels = _block_mean(scene.s2[k], factor) if factor > 1 else scene.s2[k]
        bands[band.name] = np.round(pixels).astype(np.uint16)
    date = scene.s2_date.isoformat() + " 10:10:31"
    write_bigearthnet_v1_patch(
        root / "BigEarthNet-v1.0",
        s2_name,
        bands=bands,
        labels=labels,
        transform=transform,
        crs=crs,
        acquisition_date=date,
    )
    post = scene.s1[-1]
    db = np.where(post > 0, 10 * np.log10(np.maximum(post, 1e-10)), 0.0).astype(np.float32)
    write_bigearthnet_v1_patch(
        root / "BigEarthNet-S1-v1.0",
        s1_name,
        bands={"VV": db[0], "VH": db[1]},
        labels=labels,
        transform=transform,
        crs=crs,
        acquisition_date=scene.s1_dates[-1].isoformat() + " 05:41:17",
        extra_metadata={"corresponding_s2_patch": s2_name},
    )
    splits[split_of(i)].append(f"{s2_name},{s1_name}")


def _write_native(root: Path, scene: SyntheticScene, i: int) -> None:
    folder = root / f"scene_{i:05d}"
    folder.mkdir()
    crs, x, y = _utm(scene.lon, scene.lat)
    transform = _grid(x, y, scene.shape, scene.gsd)

    def put(
        name: str, array: np.ndarray, nodata: float | None, names: tuple[str, ...] | None
    ) -> None:
        write_geotiff(
            folder / f"{name}.tif",
            array,
            transform=transform,
            crs=crs,
            nodata=nodata,
            descriptions=names,
            tiled=True,
        )

    s1_names = get_sensor("sentinel-1-grd").band_names
    put("s2", scene.s2.astype(np.uint16), 0, scene.s2_bands)
    for step, name in enumerate(("s1_sl2", "s1_sl1", "s1_ms1")):
        put(name, scene.s1[step], 0.0, s1_names)
    put("s3", scene.s3, None, get_sensor("sentinel-3-olci").band_names)
    put("no2", scene.no2, None, ("NO2",))
    put("dem", scene.dem, None, ("DEM",))
    put("landcover", scene.landcover, None, None)
    put("flood", scene.flood, 3, None)
    put("cloud_mask", scene.cloud_mask, None, None)
    put("biomass", scene.biomass, None, None)
    meta = {
        "seed": scene.seed,
        "index": scene.index,
        "lon": scene.lon,
        "lat": scene.lat,
        "gsd": scene.gsd,
        "crs": crs,
        "s2_date": scene.s2_date.isoformat(),
        "s1_dates": {
            k: d.isoformat() for k, d in zip(("SL2", "SL1", "MS1"), scene.s1_dates, strict=True)
        },
        "flooded": scene.flooded,
        "caption": scene.caption,
        "split": split_of(i),
        "landcover_classes": list(LANDCOVER_CLASSES),
        "flood_classes": [*FLOOD_CLASSES, "invalid"],
        "units": {
            "s2": "reflectance x 10000",
            "s1": "linear sigma0",
            "s3": "reflectance",
            "no2": "mol/m^2",
            "dem": "m",
            "biomass": "Mg/ha",
        },
    }
    (folder / "scene.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


def export_world(
    out: str | Path,
    format: ExportFormat,
    *,
    n: int,
    seed: int = 0,
    size: int | None = None,
    cloud_cover: float = 0.0,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
    progress_every_s: float | None = None,
) -> Path:
    """Generate ``n`` scenes and write them in an on-disk layout; returns the output folder.

    Args:
        out: output folder; it must not exist or be empty (unless ``overwrite``).
        format: ``kurosiwo``, ``bigearthnet`` or ``native``.
        n: number of tiles, patches or scenes.
        seed: world seed.
        size: pixels per side (default: the layout's own, 224 / 120 / 256).
        cloud_cover: mean Sentinel-2 cloud fraction.
        overwrite: replace a non-empty ``out``.
        log: where progress lines go (scenes written, rate, time left; ``None``: nowhere, and
            no bar either); a terminal (standard error) gets a bar instead.
        progress_every_s: seconds between plain progress lines (default:
            :data:`~thinkingearth.count_progress.LINE_EVERY_S`).

    Raises:
        UserInputError: an unknown format, a non-positive ``n`` or ``size``, a size the layout
            cannot take, or an output folder that cannot be written.
    """
    if format not in FORMATS:
        raise UserInputError(f"unknown format {format!r}; expected one of: {', '.join(FORMATS)}")
    if n <= 0:
        raise UserInputError(f"n must be a positive number of scenes, got {n}")
    side = _DEFAULT_SIZE[format] if size is None else size
    if side <= 0:
        raise UserInputError(f"size must be a positive number of pixels, got {side}")
    if format == "bigearthnet" and side % 6:
        raise UserInputError(
            f"BigEarthNet patches need a size divisible by 6 (60 m bands), got {side}"
        )
    config = WorldConfig(size=side, cloud_cover=cloud_cover)
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    with (
        atomic_dir(out, overwrite=overwrite) as tmp,
        CountProgress(
            n, unit="scenes", log=log, prefix="[synth]", every_s=progress_every_s
        ) as progress,
    ):
        for i in range(n):
            scene = generate_scene(seed, i, config, stream=_EXPORT_STREAM)
            if format == "kurosiwo":
                _write_kurosiwo(tmp, scene, i)
            elif format == "bigearthnet":
                _write_bigearthnet(tmp, scene, i, splits)
            else:
                _write_native(tmp, scene, i)
            progress.update(i + 1)
        if format == "bigearthnet":
            for split, rows in splits.items():
                (tmp / f"{split}.csv").write_text("".join(r + "\n" for r in rows), encoding="utf-8")
        world = {
            "generator": "thinkingearth synthetic world",
            "format": format,
            "n": n,
            "seed": seed,
            "size": side,
            "gsd": config.gsd,
            "cloud_cover": cloud_cover,
        }
        (tmp / "thinkingearth_world.json").write_text(json.dumps(world, indent=2), encoding="utf-8")
    return Path(out)
