"""``thinkingearth embed``: readers and scene folders into an index; incremental; bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from search_helpers import saved_model

from thinkingearth.cli import main
from thinkingearth.data.export import export_world
from thinkingearth.errors import UserInputError
from thinkingearth.vl.embed import embed, resolve_reader
from thinkingearth.vl.index import MANIFEST_NAME, Manifest, load_all_embeddings, open_index

S1S2 = "sentinel-1-grd,sentinel-2-l2a"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A tiny VL model saved as a pretrain run's folder (``OUT/vl_model.*``)."""
    return saved_model(tmp_path_factory.mktemp("vl-run"))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two native synthetic scenes of 64 x 64 px (four 32-px tiles per file)."""
    return export_world(tmp_path_factory.mktemp("world") / "scenes", "native", n=2, size=64)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _error(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("thinkingearth: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_scenes_tiles_with_ids_footprints_thumbnails_and_exact_embeddings(
    model_dir: tuple[Path, Any], scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights, model = model_dir
    out = tmp_path / "idx"
    argv = ["embed", "--weights", str(weights), "--scenes", str(scenes), "--out", str(out)]
    code, stdout, err = _run([*argv, "--sensors", S1S2, "--workers", "1", "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    # per scene: s2, s1_sl2, s1_sl1, s1_ms1 -> 4 files x 4 tiles; label rasters passed over
    assert result["created"] is True and result["added"] == result["rows"] == 2 * 4 * 4
    assert any(p.endswith("scene_00000/flood.tif") for p in result["passed_over"])
    assert any("not among --sensors" in r for r in result["passed_over"].values())  # dem, s3, no2
    manifest = Manifest.read(out)
    assert manifest.model_sha256 == model.sha256 and manifest.embed_dim == 384
    assert manifest.model_path == str((weights).resolve())
    import geopandas as gpd

    frame = gpd.read_parquet(out / manifest.table)
    ids = list(frame["id"])
    assert "scene_00000/s1_ms1.tif@32,0,32x32" in ids and "scene_00001/s2.tif@0,32,32x32" in ids
    assert set(frame["sensor"]) == {"sentinel-1-grd", "sentinel-2-l2a"}
    # footprints: 32 px at 10 m around the scene's own lon/lat
    meta = json.loads((scenes / "scene_00000" / "scene.json").read_text())
    row = frame[frame["id"] == "scene_00000/s2.tif@0,0,32x32"].iloc[0]
    west, south, east, north = row.geometry.bounds
    assert (
        abs((west + east) / 2 - meta["lon"]) < 0.01
        and abs((north + south) / 2 - meta["lat"]) < 0.01
    )
    assert 250 < (north - south) * 111_320 < 390  # 320 m
    thumb = Image.open(out / row["thumbnail"])
    assert thumb.format == "PNG" and thumb.size == (32, 32) and thumb.mode == "RGB"
    # the stored embedding is the model's embedding of that very window
    from rasterio.windows import Window

    from thinkingearth.data.scene import Acquisition, SceneStack

    with SceneStack(
        [Acquisition.from_path("x", scenes / "scene_00000" / "s2.tif")],
        sensor="sentinel-2-l2a",
        bands=list(_descriptions(scenes / "scene_00000" / "s2.tif")),
    ) as stack:
        x, _ = stack.read(Window(0, 0, 32, 32))
        lon, lat = stack.grid.lonlat(np.array([16.0]), np.array([16.0]))
        sample = {
            "image": torch.from_numpy(x[0]),
            "bands": stack.bands,
            "sensor": "sentinel-2-l2a",
            "lon": float(lon[0]),
            "lat": float(lat[0]),
            "gsd": float(np.asarray(stack.grid.gsd_metres(float(lat[0]))).reshape(-1)[0]),
            "time": float("nan"),
        }
    expected = model.encode_samples([sample])[0].numpy()
    _, embeddings = load_all_embeddings(out)
    stored = embeddings[ids.index("scene_00000/s2.tif@0,0,32x32")]
    assert float(stored @ expected) > 0.999


def _descriptions(path: Path) -> tuple[str, ...]:
    import rasterio

    with rasterio.open(path) as src:
        return tuple(src.descriptions)


def test_rerun_adds_new_files_only(
    model_dir: tuple[Path, Any], scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights, _ = model_dir
    folder = tmp_path / "scenes"
    shutil.copytree(scenes / "scene_00000", folder / "scene_00000")
    out = tmp_path / "idx"
    argv = ["embed", "--weights", str(weights), "--scenes", str(folder), "--out", str(out)]
    argv += ["--sensors", "s1", "--workers", "1", "--json"]
    code, stdout, err = _run(argv, capsys)
    assert code == 0, err
    assert json.loads(stdout)["added"] == 12  # three S1 files x 4 tiles
    first = Manifest.read(out)
    _, before = load_all_embeddings(out)
    code, stdout, err = _run(argv, capsys)
    assert code == 0 and json.loads(stdout)["added"] == 0 and json.loads(stdout)["skipped"] == 3
    assert Manifest.read(out).table == first.table  # nothing new: nothing rewritten
    shutil.copytree(scenes / "scene_00001", folder / "scene_00001")
    code, stdout, err = _run(argv, capsys)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["created"] is False and report["added"] == 12 and report["rows"] == 24
    second = Manifest.read(out)
    assert second.created == first.created and second.table != first.table
    _, after = load_all_embeddings(out)
    np.testing.assert_array_equal(after[:12], before)  # old rows kept as they were
    assert len(list((out / "thumbnails").iterdir())) == 24
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MANIFEST_NAME, "thumbnails", second.table, second.table[:-8] + ".arrow", second.ann]
    )


def test_a_stopped_update_leaves_no_thumbnail_outside_the_index(
    model_dir: tuple[Path, Any],
    scenes: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import thinkingearth.vl.embed as embed_module
    from thinkingearth.stopping import Terminated

    weights, _ = model_dir
    out = tmp_path / "idx"
    argv = ["embed", "--weights", str(weights), "--scenes", str(scenes), "--out", str(out)]
    code, _, err = _run([*argv, "--sensors", "s1", "--workers", "1", "-q"], capsys)
    assert code == 0, err
    before = sorted((out / "thumbnails").iterdir())

    def stopped(*args: Any, **kwargs: Any) -> Any:  # a worker finished a file, then SIGTERM
        Image.new("RGB", (4, 4)).save(out / "thumbnails" / "written-by-a-worker.png")
        raise Terminated("stopped by SIGTERM")

    monkeypatch.setattr(embed_module, "_scene_rows", stopped)
    with pytest.raises(Terminated):
        embed(weights, out, scenes=scenes, workers=1)
    assert sorted((out / "thumbnails").iterdir()) == before


def test_sentinel2_reflectance_where_digital_numbers_are_expected_warns(
    model_dir: tuple[Path, Any], scenes: Path, tmp_path: Path
) -> None:
    import rasterio

    from thinkingearth.data.scene import ReflectanceScaleWarning

    weights, _ = model_dir
    folder = tmp_path / "reflectance"
    folder.mkdir()
    with rasterio.open(scenes / "scene_00000" / "s2.tif") as src:
        profile = {**src.profile, "dtype": "float32", "nodata": None}
        with rasterio.open(folder / "s2.tif", "w", **profile) as dst:
            dst.write(src.read().astype(np.float32) / 10000)  # reflectance 0-1, not DNs
            dst.descriptions = src.descriptions
    with pytest.warns(ReflectanceScaleWarning, match=r"multiply the input by 10000"):
        embed(weights, tmp_path / "idx", scenes=folder, workers=1)


def test_another_model_is_refused_and_the_index_untouched(
    model_dir: tuple[Path, Any], scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights, _ = model_dir
    out = tmp_path / "idx"
    base = [
        "embed",
        "--scenes",
        str(scenes),
        "--out",
        str(out),
        "--sensors",
        "s2",
        "--workers",
        "1",
    ]
    assert _run([*base, "--weights", str(weights)], capsys)[0] == 0
    manifest = (out / MANIFEST_NAME).read_bytes()
    other, _ = saved_model(tmp_path / "other", seed=1)
    code, _, err = _run([*base, "--weights", str(other)], capsys)
    assert "built with the model of SHA-256" in _error(code, err)
    assert (out / MANIFEST_NAME).read_bytes() == manifest
    # --overwrite builds a new index with the other model
    code, _, err = _run([*base, "--weights", str(other), "--overwrite"], capsys)
    assert code == 0, err
    assert Manifest.read(out).model_sha256 != json.loads(manifest)["model_sha256"]


def test_reader_bigearthnet_rows_are_patches_with_dates(
    model_dir: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights, _ = model_dir
    root = export_world(tmp_path / "ben", "bigearthnet", n=4, size=24)
    out = tmp_path / "idx"
    argv = ["embed", "--weights", str(weights), "--data", str(root), "--reader", "bigearthnet"]
    code, stdout, err = _run([*argv, "--out", str(out), "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["rows"] == 4
    import geopandas as gpd

    frame = gpd.read_parquet(out / Manifest.read(out).table)
    names = {p.name for p in (root / "BigEarthNet-v1.0").iterdir()}
    assert set(frame["id"]) == names  # the patch names
    assert frame["time"].notna().all() and set(frame["sensor"]) == {"sentinel-2-l2a"}
    assert all(key.startswith(f"bigearthnet:{root.resolve()}:") for key in frame["key"])
    # again: nothing new
    code, stdout, _ = _run([*argv, "--out", str(out), "--json"], capsys)
    assert code == 0 and json.loads(stdout)["added"] == 0 and json.loads(stdout)["skipped"] == 4


def test_reader_kurosiwo_time_series_embeds_the_newest_image(
    model_dir: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights, model = model_dir
    root = export_world(tmp_path / "ks", "kurosiwo", n=3, size=32)
    out = tmp_path / "idx"
    code, stdout, err = _run(
        [
            "embed",
            "--weights",
            str(weights),
            "--data",
            str(root),
            "--reader",
            "kurosiwo",
            "--splits",
            "train",
            "--out",
            str(out),
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    assert json.loads(stdout)["rows"] == 3
    from thinkingearth.data.readers import open_split

    sample = open_split("kurosiwo", root, "train", {})[0]
    import geopandas as gpd

    frame = gpd.read_parquet(out / Manifest.read(out).table)
    row = frame[frame["id"] == sample["tile"]].iloc[0]
    newest = float(sample["time"][-1])
    assert row["time"].timestamp() / 86400 == pytest.approx(newest, abs=1e-6)
    post = {**sample, "image": sample["image"][-1], "time": newest}
    _, embeddings = load_all_embeddings(out)
    expected = model.encode_samples([post])[0].numpy()
    assert float(embeddings[list(frame["id"]).index(sample["tile"])] @ expected) > 0.999


def test_reader_names_and_aliases() -> None:
    assert resolve_reader("eurosat") == "eurosat-ms"
    assert resolve_reader("BigEarthNet") == "bigearthnet"
    with pytest.raises(
        UserInputError, match=r"unknown --reader 'landsat'; expected one of: .*eurosat"
    ):
        resolve_reader("landsat")


def test_bad_input_is_one_line_and_leaves_nothing(
    model_dir: tuple[Path, Any], scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights, _ = model_dir
    w = ["--weights", str(weights)]
    out = tmp_path / "idx"
    cases = [
        (["--scenes", str(scenes), "--data", str(scenes), "--reader", "kurosiwo"], "one of them"),
        (["--data", str(scenes)], "go together"),
        (["--data", str(scenes), "--reader", "nope"], "unknown --reader"),
        (["--data", str(scenes), "--reader", "kurosiwo", "--tile", "16"], "are for --scenes"),
        (["--scenes", str(tmp_path / "missing")], "is not a folder"),
    ]
    for extra, message in cases:
        code, _, err = _run(["embed", *w, "--out", str(out), *extra], capsys)
        assert message in _error(code, err)
        assert not out.exists()
    labels = tmp_path / "labels"
    labels.mkdir()
    shutil.copy(scenes / "scene_00000" / "flood.tif", labels / "flood.tif")
    code, _, err = _run(["embed", *w, "--out", str(out), "--scenes", str(labels)], capsys)
    assert "nothing to embed" in _error(code, err)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".idx")]
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    code, _, err = _run(["embed", *w, "--out", str(taken), "--scenes", str(scenes)], capsys)
    assert "is not an embedding index" in _error(code, err)
    assert (taken / "notes.txt").read_text() == "mine"


def test_a_file_that_fails_does_not_stop_the_others(
    model_dir: tuple[Path, Any], scenes: Path, tmp_path: Path
) -> None:
    weights, _ = model_dir
    folder = tmp_path / "scenes"
    shutil.copytree(scenes / "scene_00000", folder / "scene_00000")
    # SAR in stated dB that holds linear values: a one-line error for those files only
    with pytest.raises(UserInputError, match=r"3 file\(s\) failed .*the index holds the others"):
        embed(
            weights,
            tmp_path / "idx",
            scenes=folder,
            sensors=["s1", "s2"],
            sar_units="db",
            workers=1,
        )
    index = open_index(tmp_path / "idx")
    assert len(index) == 4  # the S2 file's tiles


def test_a_worker_loads_the_model_from_weights_and_checks_its_hash(
    model_dir: tuple[Path, Any], scenes: Path, tmp_path: Path
) -> None:
    """What a Dask worker process does: load --weights once, refuse a file that changed."""
    import thinkingearth.vl.embed as embedding
    from thinkingearth.vl.embed import embed_scene_file, find_scene_files

    weights, model = model_dir
    (scene,), _ = find_scene_files(scenes / "scene_00000", sensors=["sentinel-2-l2a"])
    saved = dict(embedding._MODELS)
    embedding._MODELS.clear()  # a fresh worker
    try:
        status, path, rows = embed_scene_file(
            scene, str(weights), str(model.sha256), str(tmp_path), 32, 0, "auto", 8, None
        )
        assert status == "done" and path == str(scene.path) and len(rows) == 4  # type: ignore[arg-type]
        assert list(embedding._MODELS) == [(str(weights), model.sha256)]
        expected = model.encode_samples(
            [dict(s) for _, s, _ in embedding._tiles(scene, 32, 0, "auto")]
        ).numpy()
        np.testing.assert_allclose(rows.matrix(384), expected, atol=1e-5)  # type: ignore[union-attr]
        embedding._MODELS.clear()
        status, _, detail = embed_scene_file(
            scene, str(weights), "0" * 64, str(tmp_path), 32, 0, "auto", 8, None
        )
        assert status == "failed" and "changed while embedding" in str(detail)
    finally:
        embedding._MODELS.clear()
        embedding._MODELS.update(saved)
