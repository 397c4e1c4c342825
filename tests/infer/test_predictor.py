"""The streaming predictor: georeferencing, the threshold model, seamless blending, bad inputs."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from infer_helpers import (
    LAND_DB,
    PlantedScene,
    digest,
    iou,
    listing,
    read_prediction,
    speckled,
    write_raster,
)
from scipy import ndimage
from torch import Tensor, nn

from thinkingearth.data.scene import Acquisition, SceneInputError
from thinkingearth.errors import UserInputError
from thinkingearth.infer import SceneModel, predict_scene, threshold_model
from thinkingearth.infer.predictor import blend_weights
from thinkingearth.infer.threshold import otsu_threshold, split_otsu


def _flood_inputs(scene: PlantedScene, pre2: bool = False) -> list[Acquisition]:
    acqs = [Acquisition.from_path("--pre", scene.pre), Acquisition.from_path("--post", scene.post)]
    if pre2:
        acqs.insert(0, Acquisition.from_path("--pre2", scene.pre2))
    return acqs


def _constant_model(probs: tuple[float, ...], **kw: object) -> SceneModel:
    def network(x: Tensor) -> Tensor:
        b, _, _, h, w = x.shape
        return torch.tensor(probs).view(1, -1, 1, 1).expand(b, -1, h, w).clone()

    fields: dict[str, object] = {
        "network": network,
        "task": "flood",
        "classes": ("no water", "permanent water", "flood"),
        "colours": ("#ffffff", "#0000ff", "#00ffff"),
        "sensor": "s1",
        "bands": ("VV", "VH"),
        "steps": (2,),
        "tile": 64,
        "overlap": 16,
        "outputs": "probabilities",
        "batch_size": 5,
        "name": "constant",
    }
    fields.update(kw)
    return SceneModel(**fields)  # type: ignore[arg-type]


def test_georeferencing_crs_transform_and_nodata_are_kept(
    planted: PlantedScene, tmp_path: Path
) -> None:
    out = tmp_path / "maps" / "flood.tif"
    result = predict_scene(
        threshold_model("flood", tile=128, overlap=16), _flood_inputs(planted), out
    )
    assert result.path == out and out.exists() and out.with_suffix(".png").stat().st_size > 5_000
    uncertainty = out.with_name("flood_uncertainty.tif")
    with (
        rasterio.open(planted.post) as src,
        rasterio.open(out) as dst,
        rasterio.open(uncertainty) as unc,
    ):
        for output in (dst, unc):
            assert output.crs == src.crs and output.transform == src.transform
            assert (output.width, output.height) == (src.width, src.height) and output.count == 1
            assert output.tags()["CLASSES"] == "0=no water;1=permanent water;2=flood"
            assert output.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert dst.nodata == 255 and dst.dtypes == ("uint8",) and dst.descriptions == ("class",)
        assert math.isnan(unc.nodata) and unc.dtypes == ("float32",)
        assert unc.descriptions == ("entropy",)
        input_nodata = (src.read(1) == src.nodata) | (src.read(2) == src.nodata)
    classes, entropy = read_prediction(out)
    assert np.array_equal(classes == 255, input_nodata)
    assert np.array_equal(np.isnan(entropy), input_nodata)
    valid = ~input_nodata
    assert set(np.unique(classes[valid])) <= {0, 1, 2}
    assert (entropy[valid] >= 0).all() and (entropy[valid] <= math.log(3) + 1e-5).all()
    assert not [p for p in listing(out.parent) if p.startswith(".")]  # no temporary files left


def test_large_output_is_a_tiled_cog_with_overviews(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = rng.gamma(4.4, 0.05 / 4.4, size=(2, 700, 600)).astype(np.float32)
    image = write_raster(tmp_path / "s1.tif", data)
    out = tmp_path / "water.tif"
    predict_scene(
        threshold_model("water"), [Acquisition.from_path("--image", image)], out, quicklook=False
    )
    with rasterio.open(out) as dst:
        assert dst.block_shapes[0] == (512, 512) and dst.overviews(1) == [2]
        assert dst.profile["compress"] == "deflate"
    assert not out.with_suffix(".png").exists()


def test_threshold_model_finds_the_planted_flood(planted: PlantedScene, tmp_path: Path) -> None:
    for pre2 in (False, True):
        out = tmp_path / f"flood_{pre2}.tif"
        result = predict_scene(
            threshold_model("flood", tile=128, overlap=16), _flood_inputs(planted, pre2), out
        )
        classes, entropy = read_prediction(out)
        truth = planted.truth
        assert iou(classes == 2, truth == 2) > 0.85, pre2
        assert iou(classes == 1, truth == 1) > 0.85, pre2
        land = truth == 0
        assert (classes[land] == 0).mean() > 0.98
        water_db = float(result.tags["WATER_THRESHOLD_VV_DB"])
        assert -20.0 < water_db < -9.0 and float(result.tags["CHANGE_THRESHOLD_VV_DB"]) < -3.0
        # Uncertainty: higher on the flood's edge than inside it or on land far from it.
        edge = np.zeros_like(land)
        rows, cols = np.nonzero(truth == 2)
        edge[rows.min() - 1 : rows.min() + 2, cols.min() : cols.max()] = True
        assert entropy[edge].mean() > entropy[land & ~edge].mean()


def test_threshold_model_maps_no_water_where_there_is_none(tmp_path: Path) -> None:
    # Land only (forest and fields with texture): Otsu alone would split land into two classes.
    rng = np.random.default_rng(3)
    shape = (256, 256)
    texture = ndimage.gaussian_filter(rng.standard_normal(shape), 8)
    land = np.stack([LAND_DB[0] + 6 * texture, LAND_DB[1] + 6 * texture])
    pre = write_raster(tmp_path / "pre.tif", speckled(land, rng))
    post = write_raster(tmp_path / "post.tif", speckled(land + rng.normal(0, 0.5), rng))
    out = tmp_path / "dry.tif"
    inputs = [Acquisition.from_path("--pre", pre), Acquisition.from_path("--post", post)]
    result = predict_scene(threshold_model("flood", tile=128, overlap=16), inputs, out)
    with rasterio.open(out) as dst:
        classes = dst.read(1)
    assert np.isin(classes, (1, 2)).mean() < 0.02, result.tags
    water = predict_scene(
        threshold_model("water"), [Acquisition.from_path("--image", post)], tmp_path / "w.tif"
    )
    assert water.class_fractions[1] < 0.02


def test_constant_model_gives_a_constant_map_without_seams(
    planted: PlantedScene, tmp_path: Path
) -> None:
    probs = (0.2, 0.5, 0.3)
    out = tmp_path / "constant.tif"
    result = predict_scene(_constant_model(probs), _flood_inputs(planted), out, quicklook=False)
    assert result.tiles > 20
    classes, entropy = read_prediction(out)
    valid = planted.truth != 255
    assert (classes[valid] == 1).all()
    expected = -sum(p * math.log(p) for p in probs)
    assert np.ptp(entropy[valid]) == 0 and np.isclose(entropy[valid][0], expected, rtol=1e-3)


class _PixelModel(nn.Module):
    """Per-pixel logits from the inputs: a tiled prediction must equal the untiled one."""

    def forward(self, x: Tensor) -> Tensor:
        vv, vh = x[:, -1, 0], x[:, -1, 1]
        change = x[:, -1, 0] - x[:, 0, 0]
        return torch.stack([vv / 5.0, vh / 7.0 + 1.0, -change / 3.0], dim=1)


def test_blending_reproduces_a_per_pixel_model_exactly(
    planted: PlantedScene, tmp_path: Path
) -> None:
    model = _constant_model(
        (1.0,), network=_PixelModel(), outputs="logits", tile=48, overlap=12, sar_units="db"
    )
    out = tmp_path / "pixel.tif"
    predict_scene(model, _flood_inputs(planted), out, quicklook=False, prefetch=0)
    with rasterio.open(planted.pre) as a, rasterio.open(planted.post) as b:
        x = np.stack([a.read(), b.read()]).astype(np.float32)
    valid = planted.truth != 255
    x = 10 * np.log10(np.maximum(x, 1e-10))
    probs = torch.softmax(_PixelModel()(torch.from_numpy(x)[None]), dim=1)[0].numpy()
    expected_entropy = -(probs * np.log(probs)).sum(0)
    classes, entropy = read_prediction(out)
    assert np.array_equal(classes[valid], probs.argmax(0)[valid])
    # Entropy is stored to 10 mantissa bits: 0.1 % relative precision.
    assert np.allclose(entropy[valid], expected_entropy[valid], rtol=1e-3, atol=1e-6)


def test_blend_weights_are_smooth_and_never_zero() -> None:
    w = blend_weights(64, 16)
    assert w.min() > 0 and w.max() == 1.0 and np.allclose(w, w[::-1])
    assert (np.diff(w[:16]) > 0).all() and (w[16:48] == 1).all()
    assert np.allclose(blend_weights(10, 0), 1.0)


def test_scene_smaller_than_a_tile_and_odd_sizes(tmp_path: Path) -> None:
    data = np.random.default_rng(2).gamma(4.4, 0.01, size=(2, 37, 53)).astype(np.float32)
    image = write_raster(tmp_path / "small.tif", data)
    out = tmp_path / "small_out.tif"
    predict_scene(
        threshold_model("water", tile=64, overlap=8), [Acquisition.from_path("--image", image)], out
    )
    with rasterio.open(out) as dst:
        assert dst.shape == (37, 53)


def _assert_clean(folder: Path, before: list[str], digests: dict[Path, str]) -> None:
    assert listing(folder) == before
    for path, value in digests.items():
        assert digest(path) == value


def test_bad_inputs_are_clear_errors_that_leave_nothing_behind(
    planted: PlantedScene, tmp_path: Path
) -> None:
    folder = planted.post.parent
    one_band = write_raster(
        folder / "vv_only.tif", np.full((1, 300, 340), 0.1, np.float32), descriptions=("VV",)
    )
    far = write_raster(
        folder / "far.tif",
        np.full((2, 50, 50), 0.1, np.float32),
        transform=rasterio.Affine(10.0, 0.0, 700_000.0, 0.0, -10.0, 5_000_000.0),
    )
    corrupt = folder / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    truncated = folder / "truncated.tif"
    truncated.write_bytes(planted.post.read_bytes()[:-5000])
    beside = folder / "o6_uncertainty.tif"  # what --out o6.tif would write beside the class map
    beside.write_bytes(planted.post.read_bytes())
    before = listing(folder)
    inputs = (planted.pre, planted.post, one_band, far, corrupt, truncated, beside)
    digests = {p: digest(p) for p in inputs}
    flood = threshold_model("flood", tile=128)
    two_bands = _constant_model((0.2, 0.5, 0.3))
    cases: list[tuple[SceneModel, list[Path], Path, str]] = [
        (flood, [far, planted.post], folder / "o1.tif", "does not overlap"),
        (
            two_bands,
            [planted.pre, one_band],
            folder / "o2.tif",
            r"has 1 band\(s\) \(VV\) but the model needs 2",
        ),
        (flood, [planted.pre, corrupt], folder / "o3.tif", "cannot read --post"),
        (flood, [planted.pre, truncated], folder / "o4.tif", "truncated"),
        (flood, [planted.pre, planted.post], planted.post, "is also an input"),
        (flood, [planted.pre, planted.post], planted.pre, "is also an input"),
        (flood, [planted.post], folder / "o5.tif", "takes 2 or 3 input image"),
        (flood, [planted.pre, beside], folder / "o6.tif", "o6_uncertainty.tif is also an input"),
    ]
    for model, paths, out, message in cases:
        names = ["--pre", "--post"] if len(paths) == 2 else ["--post"]
        inputs = [Acquisition.from_path(n, p) for n, p in zip(names, paths, strict=True)]
        with pytest.raises(UserInputError, match=message) as info:
            predict_scene(model, inputs, out)
        assert "\n" not in str(info.value)
        _assert_clean(folder, before, digests)


def test_a_failure_while_streaming_leaves_no_partial_output(
    planted: PlantedScene, tmp_path: Path
) -> None:
    calls = {"n": 0}

    def flaky(x: Tensor) -> Tensor:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return torch.full((x.shape[0], 3, x.shape[-2], x.shape[-1]), 1 / 3)

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "flood.tif").write_bytes(b"previous result")
    (out_dir / "flood_uncertainty.tif").write_bytes(b"previous uncertainty")
    with pytest.raises(RuntimeError, match="boom"):
        predict_scene(
            _constant_model((1.0,), network=flaky), _flood_inputs(planted), out_dir / "flood.tif"
        )
    assert listing(out_dir) == ["flood.tif", "flood_uncertainty.tif"]
    assert (out_dir / "flood.tif").read_bytes() == b"previous result"
    assert (out_dir / "flood_uncertainty.tif").read_bytes() == b"previous uncertainty"


def test_a_corrupt_block_found_while_streaming_is_a_clear_error(
    planted: PlantedScene, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.tif"
    data = bytearray(planted.post.read_bytes())
    with rasterio.open(planted.post) as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_2_2", "TIFF", bidx=1))
    data[offset : offset + 64] = b"\xff" * 64  # garbage in the middle of one deflate tile
    broken.write_bytes(bytes(data))
    model = dataclasses.replace(_constant_model((0.2, 0.5, 0.3)), steps=(1,))
    out = tmp_path / "out" / "x.tif"
    with pytest.raises(SceneInputError, match=r"cannot read .*broken\.tif: corrupt"):
        predict_scene(model, [Acquisition.from_path("--post", broken)], out)
    assert not out.parent.exists() or listing(out.parent) == []


def test_model_output_of_the_wrong_shape_is_reported(planted: PlantedScene, tmp_path: Path) -> None:
    model = _constant_model((0.5, 0.5), outputs="probabilities")
    with pytest.raises(ValueError, match=r"expected \[B, 3, h, w\]"):
        predict_scene(model, _flood_inputs(planted), tmp_path / "bad.tif")
    assert listing(tmp_path) == ["scene", *[f"scene/{p}" for p in listing(tmp_path / "scene")]]


def test_otsu_splits_two_populations() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(-20, 1.5, 3000), rng.normal(-8, 1.5, 7000)])
    assert -16 < otsu_threshold(values) < -11
    image = np.full((128, 128), -8.0) + rng.normal(0, 1.5, (128, 128))
    image[:40, :40] = -21 + rng.normal(0, 1.5, (40, 40))  # 10 % water: whole-scene Otsu is fooled
    image[64:, :] += 4.0  # two kinds of land
    threshold, tiles = split_otsu(image, np.ones_like(image, dtype=bool), dark_below=-15.0)
    assert tiles > 0 and -17 < threshold < -11


def test_pre_event_image_on_another_grid_is_reprojected_onto_the_post_grid(
    planted: PlantedScene, tmp_path: Path
) -> None:
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    # The pre-event image in geographic coordinates at about 20 m, missing the east of the scene.
    with rasterio.open(planted.pre) as src:
        west, south, east, north = src.bounds
        cut = west + 0.8 * (east - west)
        transform, width, height = calculate_default_transform(
            src.crs, "EPSG:4326", src.width, src.height, west, south, cut, north, resolution=2e-4
        )
        data = np.zeros((2, height, width), dtype=np.float32)
        for band in (1, 2):
            reproject(
                rasterio.band(src, band),
                data[band - 1],
                dst_transform=transform,
                dst_crs="EPSG:4326",
                src_nodata=0.0,
                dst_nodata=0.0,
                resampling=Resampling.bilinear,
            )
    pre = write_raster(tmp_path / "pre_4326.tif", data, crs="EPSG:4326", transform=transform)
    out = tmp_path / "flood.tif"
    inputs = [Acquisition.from_path("--pre", pre), Acquisition.from_path("--post", planted.post)]
    predict_scene(threshold_model("flood", tile=128, overlap=16), inputs, out, quicklook=False)
    with rasterio.open(out) as dst, rasterio.open(planted.post) as post:
        assert dst.crs == post.crs and dst.transform == post.transform and dst.shape == post.shape
        classes = dst.read(1)
    cols = np.arange(planted.shape[1])[None, :].repeat(planted.shape[0], 0)
    east_of_cut = cols > 0.82 * planted.shape[1]
    assert (classes[east_of_cut] == 255).all()  # no pre-event data there: no data out
    covered = (cols < 0.78 * planted.shape[1]) & (planted.truth != 255)
    assert (classes[covered] != 255).mean() > 0.99
    truth = np.where(covered, planted.truth, 255)
    assert iou((classes == 2) & covered, truth == 2) > 0.8
    assert iou((classes == 1) & covered, truth == 1) > 0.8
