"""Many scenes over Dask: one output per scene, restart skips finished scenes, STAC items."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from infer_helpers import make_planted, write_raster

from thinkingearth.cli import main
from thinkingearth.data.export import export_world
from thinkingearth.errors import UserInputError
from thinkingearth.infer import threshold_model
from thinkingearth.infer.batch import InputNames, find_scenes, plan_jobs, predict_many, run_job


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three native synthetic scenes of 64 px."""
    return export_world(tmp_path_factory.mktemp("w") / "world", "native", n=3, seed=0, size=64)


def test_restart_skips_scenes_whose_output_exists(world: Path, tmp_path: Path) -> None:
    model = threshold_model("flood", tile=64, overlap=8)
    names = InputNames(pre="s1_sl1.tif", post="s1_ms1.tif")
    out = tmp_path / "maps"
    jobs = plan_jobs(find_scenes(world, "flood", names, model), out)
    assert [j.name for j in jobs] == ["scene_00000", "scene_00001", "scene_00002"]
    first = predict_many(jobs, model, processes=False, workers=2, quicklook=False)
    assert sorted(first.done) == [j.name for j in jobs] and not first.failed
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("scene_?????.tif")}
    assert len(stamps) == 3
    assert len(list(out.glob("scene_?????_uncertainty.tif"))) == 3
    # A killed run leaves finished outputs only; the rerun redoes just the missing scene.
    (out / "scene_00001.tif").unlink()
    second = predict_many(jobs, model, processes=False, workers=2, quicklook=False)
    assert second.done == ["scene_00001"] and sorted(second.skipped) == [
        "scene_00000",
        "scene_00002",
    ]
    for name in ("scene_00000.tif", "scene_00002.tif"):
        assert (out / name).stat().st_mtime_ns == stamps[name]
    with (
        rasterio.open(out / "scene_00001.tif") as dst,
        rasterio.open(world / "scene_00001" / "s1_ms1.tif") as src,
    ):
        assert dst.crs == src.crs and dst.transform == src.transform


def test_a_failed_scene_does_not_stop_the_others(world: Path, tmp_path: Path) -> None:
    scenes = tmp_path / "scenes"
    for name in ("good", "bad"):
        (scenes / name).mkdir(parents=True)
        for f in ("s1_sl1.tif", "s1_ms1.tif"):
            (scenes / name / f).write_bytes((world / "scene_00000" / f).read_bytes())
    (scenes / "bad" / "s1_ms1.tif").write_bytes(b"II*\x00broken")
    model = threshold_model("flood", tile=64, overlap=8)
    jobs = plan_jobs(
        find_scenes(scenes, "flood", InputNames(pre="s1_sl1.tif", post="s1_ms1.tif"), model),
        tmp_path / "o",
    )
    result = predict_many(jobs, model, processes=False, workers=1, quicklook=False)
    assert result.done == ["good"] and "cannot read --post" in result.failed["bad"]
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "good.qml",
        "good.tif",
        "good.tif.aux.xml",
        "good_uncertainty.qml",
        "good_uncertainty.tif",
    ]


def test_stac_items_with_one_asset_per_band(tmp_path: Path) -> None:
    scene = make_planted(tmp_path / "planted", shape=(96, 80))
    with rasterio.open(scene.post) as src:
        vv, vh = src.read(1), src.read(2)
    (tmp_path / "assets").mkdir()
    write_raster(tmp_path / "assets" / "vv.tif", vv, descriptions=None)
    write_raster(tmp_path / "assets" / "vh.tif", vh, descriptions=None)
    items = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "stac_version": "1.0.0",
                "id": "S1A_IW_GRDH_20240101",
                "properties": {},
                "assets": {
                    "vh": {"href": "assets/vh.tif", "eo:bands": [{"name": "VH"}]},
                    "vv": {"href": "assets/vv.tif", "roles": ["data"]},
                },
            }
        ],
    }
    (tmp_path / "items.json").write_text(json.dumps(items))
    model = threshold_model("water", tile=64, overlap=8)
    jobs = plan_jobs(
        find_scenes(tmp_path / "items.json", "water", InputNames(), model), tmp_path / "o"
    )
    assert len(jobs) == 1 and jobs[0].inputs[0].sources[0].bands == ("VV",)
    command = "thinkingearth predict --task water --scenes items.json --out o"
    status, name, _ = run_job(jobs[0], model, "linear", False, False, None, command)
    assert (status, name) == ("done", "S1A_IW_GRDH_20240101")
    with rasterio.open(jobs[0].out) as dst:
        classes = dst.read(1)
        assert dst.tags()["COMMAND"] == command  # the client's, not the worker's sys.argv
    water = np.isin(scene.truth, (1, 2))  # the post-event image: lake and flood
    assert (classes[water] == 1).mean() > 0.85 and (classes[scene.truth == 0] == 0).mean() > 0.95
    assert run_job(jobs[0], model, "linear", False, False, None)[0] == "skipped"


def test_scene_sources_that_hold_no_scene_are_clear_errors(tmp_path: Path) -> None:
    model = threshold_model("flood")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        UserInputError,
        match=r"no scenes found in .*expected subfolders holding --pre pre, --post post",
    ):
        find_scenes(tmp_path / "empty", "flood", InputNames(), model)
    (tmp_path / "items.json").write_text(
        json.dumps([{"id": "a", "assets": {"post": {"href": "x.tif"}}}])
    )
    with pytest.raises(UserInputError, match="STAC item a has no asset 'pre' for --pre"):
        find_scenes(tmp_path / "items.json", "flood", InputNames(), model)
    with pytest.raises(UserInputError, match="does not exist"):
        find_scenes(tmp_path / "nothing", "flood", InputNames(), model)


def test_cli_predicts_a_folder_of_scenes_and_restarts(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "maps"
    argv = [
        "predict",
        "--task",
        "flood",
        "--scenes",
        str(world),
        "--pre",
        "s1_sl1.tif",
        "--post",
        "s1_ms1.tif",
        "--out",
        str(out),
        "--workers",
        "1",
        "--no-quicklook",
    ]
    assert main(argv) == 0
    assert "3 scene(s) predicted, 0 skipped" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("scene_?????.tif")) == [
        "scene_00000.tif",
        "scene_00001.tif",
        "scene_00002.tif",
    ]
    assert len(list(out.iterdir())) == 3 * 5  # class map, uncertainty, two styles, class names
    assert main(argv) == 0
    assert "0 scene(s) predicted, 3 skipped" in capsys.readouterr().out
    with rasterio.open(out / "scene_00000.tif") as dst:
        assert np.isin(dst.read(1), (0, 1, 2, 255)).all()


def test_a_running_cluster_is_used_by_address(world: Path, tmp_path: Path) -> None:
    from distributed import LocalCluster

    model = threshold_model("water", tile=64, overlap=8)
    jobs = plan_jobs(find_scenes(world, "water", InputNames(image="s1_ms1.tif"), model), tmp_path)
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        result = predict_many(jobs, model, scheduler=cluster.scheduler_address, quicklook=False)
    assert sorted(result.done) == [j.name for j in jobs] and not result.failed
    with pytest.raises(UserInputError, match="cannot reach the Dask scheduler"):
        predict_many(
            jobs,
            model,
            overwrite=True,
            scheduler="tcp://127.0.0.1:9",
            quicklook=False,
            connect_timeout=1,
        )
