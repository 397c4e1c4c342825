"""``zeroshot --scenes``: many scenes through predict's Dask fan-out, the model built per worker.

The VL model is tiny (2-block encoder, a hashing bag-of-words text side instead of MiniLM) and
saved as a pretrain run writes it; the scenes are ``thinkingearth synth --format native`` scene
folders of 64 px. Dask runs one threaded worker in this process (``--workers 1``), so the
monkeypatched text encoder is the one the worker loads too.
"""

from __future__ import annotations

import functools
import hashlib
import json
import pickle
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thinkingearth.cli import main
from thinkingearth.data.export import export_world
from thinkingearth.errors import UserInputError
from thinkingearth.infer import threshold_model
from thinkingearth.infer.batch import InputNames, WorkerModel, find_scenes, plan_jobs, predict_many
from thinkingearth.models import create_encoder
from thinkingearth.sensors import get_sensor
from thinkingearth.vl.model import VLModel, load_vl_model, save_vl_model
from thinkingearth.vl.zeroshot import (
    load_zeroshot_scene_model,
    zeroshot_scene_model,
    zeroshot_scenes,
)

S2 = "sentinel-2-l2a"


class HashText(nn.Module):
    """A deterministic bag-of-words text encoder: each word adds to one hashed dimension."""

    name = "hash-bow"
    dim = 32
    spec = "hash-bow"
    trainable = False

    def encode(self, texts: Sequence[str]) -> Tensor:
        out = torch.zeros(len(texts), self.dim)
        for i, text in enumerate(texts):
            for word in text.lower().replace(".", " ").split():
                out[i, int(hashlib.sha256(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        return F.normalize(out, dim=-1)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three native synthetic scene folders of 64 px (s2.tif, s1_*.tif, ...)."""
    return export_world(tmp_path_factory.mktemp("w") / "world", "native", n=3, seed=0, size=64)


@pytest.fixture
def weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny VL model aligned on every Sentinel-2 band; its text spec loads the hash encoder."""
    import thinkingearth.vl.model as vl_model

    real = vl_model.load_text_encoder

    def load(spec: str = "minilm", *, trainable: bool = False) -> Any:
        return HashText() if spec == "hash-bow" else real(spec, trainable=trainable)

    monkeypatch.setattr(vl_model, "load_text_encoder", load)
    torch.manual_seed(0)
    encoder = create_encoder(
        "thinkingearth_vit_tiny", depth=2, embed_dim=48, num_heads=3, img_size=32, patch_size=8
    )
    sensors = {S2: list(get_sensor(S2).band_names)}
    folder = tmp_path / "vlrun"
    save_vl_model(VLModel(encoder, HashText(), sensors=sensors).eval(), folder / "vl_model")
    return folder


def _argv(weights: Path, scenes: Path, out: Path, *extra: str) -> list[str]:
    return ["zeroshot", "--weights", str(weights), "--scenes", str(scenes), "--image", "s2.tif",
            "--out", str(out), "--classes", "water,forest,cropland", "--tile", "32",
            "--workers", "1", "--no-quicklook", "--device", "cpu", *extra]  # fmt: skip


def test_cli_maps_every_scene_folder_as_the_single_image_command_does_and_restarts(
    world: Path, weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "maps"
    argv = _argv(weights, world, out)
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    names = ["scene_00000", "scene_00001", "scene_00002"]
    assert sorted(report["done"]) == names and not report["skipped"] and not report["failed"]
    assert report["sensor"] == S2
    assert sorted(p.name for p in out.glob("scene_?????.tif")) == [f"{n}.tif" for n in names]
    assert len(list(out.glob("scene_?????_uncertainty.tif"))) == 3
    for name in names:
        with (
            rasterio.open(out / f"{name}.tif") as dst,
            rasterio.open(world / name / "s2.tif") as src,
        ):
            assert dst.crs == src.crs and dst.transform == src.transform
            assert dst.tags()["TASK"] == "zeroshot"
            assert dst.tags()["CLASSES"] == "0=water;1=forest;2=cropland"
            assert len(dst.tags()["WEIGHTS_SHA256"]) == 64
    # The worker's model (rebuilt from the weights) maps exactly as the one-image command does.
    single = tmp_path / "single.tif"
    one = ["zeroshot", "--weights", str(weights), "--image", str(world / "scene_00001" / "s2.tif"),
           "--out", str(single), "--classes", "water,forest,cropland", "--tile", "32",
           "--no-quicklook", "--device", "cpu"]  # fmt: skip
    assert main(one) == 0
    capsys.readouterr()
    with rasterio.open(single) as a, rasterio.open(out / "scene_00001.tif") as b:
        assert np.array_equal(a.read(), b.read())
    with (
        rasterio.open(single.with_name("single_uncertainty.tif")) as a,
        rasterio.open(out / "scene_00001_uncertainty.tif") as b,
    ):
        assert np.allclose(a.read(), b.read(), equal_nan=True)
    # Restart: finished scenes are skipped, untouched; a missing one is redone.
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("scene_?????.tif")}
    (out / "scene_00002.tif").unlink()
    assert main(argv) == 0
    assert "1 scene(s) mapped, 2 skipped" in capsys.readouterr().out
    for name in ("scene_00000.tif", "scene_00001.tif"):
        assert (out / name).stat().st_mtime_ns == stamps[name]
    assert (out / "scene_00002.tif").is_file()
    assert main(argv) == 0
    assert "0 scene(s) mapped, 3 skipped" in capsys.readouterr().out


def test_bad_scenes_input_is_one_line_exit_2_and_writes_nothing(
    world: Path, weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    partial = tmp_path / "partial"  # two scenes and a folder without the image
    for name in ("a", "b"):
        (partial / name).mkdir(parents=True)
        shutil.copy(world / "scene_00000" / "s2.tif", partial / name / "s2.tif")
    (partial / "notes").mkdir()
    mixed = tmp_path / "mixed"  # a scene whose "s2.tif" is Sentinel-1
    for name, source in (("a", "s2.tif"), ("b", "s1_ms1.tif")):
        (mixed / name).mkdir(parents=True)
        shutil.copy(world / "scene_00000" / source, mixed / name / "s2.tif")
    out = tmp_path / "maps"
    base = _argv(weights, world, out)
    path_image = [*base]
    path_image[path_image.index("s2.tif")] = str(world / "scene_00000" / "s2.tif")
    cases = [
        (path_image, "not a path"),
        (_argv(weights, tmp_path / "empty", out), "no scenes found"),
        (_argv(weights, tmp_path / "nowhere", out), "does not exist"),
        (_argv(weights, partial, out), "scene folder(s) notes"),
        (_argv(weights, mixed, out), "one sensor and band set"),
        (_argv(weights, world, world), "is the --scenes folder"),
        ([*base, "--date", "2024-01-01"], "--date dates one image"),
        ([*base[:-2], "--device", "cuda"], "CPU Dask workers"),
        ([a if a != "water,forest,cropland" else "water" for a in base], "at least two"),
        ([a for a in base if a not in ("--out", str(out))], "--scenes needs --out"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert not out.exists()
    assert sorted(p.name for p in (partial / "a").iterdir()) == ["s2.tif"]
    # without --scenes, --image is required
    single = ["zeroshot", "--weights", str(weights), "--classes", "a,b", "--out", str(out)]
    assert main(single) == 2
    assert "needs --image" in capsys.readouterr().err


def test_scenes_share_one_sensor_and_band_set_from_their_files(world: Path) -> None:
    scenes, sensor, bands = zeroshot_scenes(world, "s2.tif", prefer=(S2,))
    assert [name for name, _ in scenes] == ["scene_00000", "scene_00001", "scene_00002"]
    with rasterio.open(world / "scene_00000" / "s2.tif") as src:
        assert sensor == S2 and bands == tuple(src.descriptions)
    _, sar, sar_bands = zeroshot_scenes(world, "s1_ms1.tif")
    assert sar == "sentinel-1-grd" and sar_bands == ("VV", "VH")
    with pytest.raises(UserInputError, match="no scenes found"):
        zeroshot_scenes(world, "missing.tif")


def test_worker_model_is_built_once_per_key_from_a_picklable_recipe(
    world: Path, weights: Path, tmp_path: Path
) -> None:
    calls: list[str] = []

    def build() -> Any:
        calls.append("built")
        return threshold_model("water", tile=64, overlap=8)

    first = WorkerModel(build, "run-1")
    assert first.get() is first.get() and calls == ["built"]
    WorkerModel(build, "run-2").get()  # a new run replaces the model of the last one
    first.get()
    assert calls == ["built"] * 3
    # The recipe the command sends travels as a few names and rebuilds the same class head.
    recipe = functools.partial(
        load_zeroshot_scene_model, weights, ("water", "forest"), S2, ("B02", "B03", "B04")
    )
    rebuilt = pickle.loads(pickle.dumps(recipe))()
    here = zeroshot_scene_model(
        load_vl_model(weights), ("water", "forest"), S2, ("B02", "B03", "B04")
    )
    assert torch.equal(
        rebuilt.network.classifier.class_weights, here.network.classifier.class_weights
    )
    # predict_many with a build gives predict's result (the threshold model, by recipe).
    model = threshold_model("water", tile=64, overlap=8)
    jobs = plan_jobs(
        find_scenes(world, "water", InputNames(image="s1_ms1.tif"), model), tmp_path / "o"
    )
    recipe_threshold = functools.partial(threshold_model, "water", tile=64, overlap=8)
    result = predict_many(
        jobs, model, processes=False, workers=1, quicklook=False, build=recipe_threshold
    )
    assert sorted(result.done) == [j.name for j in jobs] and not result.failed
    plain = predict_many(
        plan_jobs(
            find_scenes(world, "water", InputNames(image="s1_ms1.tif"), model), tmp_path / "p"
        ),
        model,
        processes=False,
        workers=1,
        quicklook=False,
    )
    assert sorted(plain.done) == sorted(result.done)
    for job in jobs:
        with (
            rasterio.open(job.out) as a,
            rasterio.open(tmp_path / "p" / job.out.name) as b,
        ):
            assert np.array_equal(a.read(), b.read())
