"""Sources in published layouts: BigEarthNet v1/v2, Kuro Siwo, SSL4EO-S12, Copernicus-Pretrain."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from sources_fakes import SSL4EO_S1, SSL4EO_S2, bigearthnet_v1, bigearthnet_v2
from sources_fakes import copernicus_pretrain as make_copernicus
from sources_fakes import kurosiwo as make_kurosiwo
from sources_fakes import ssl4eo as make_ssl4eo

from thinkingearth.data.formats.bigearthnet import CLASS_43_TO_19, CLASSES_19
from thinkingearth.data.sample import to_days
from thinkingearth.errors import DataLayoutError, UserInputError
from thinkingearth.pretrain.data import PretrainDataModule
from thinkingearth.pretrain.sources import open_pair, open_sensor
from thinkingearth.pretrain.transforms import Normaliser


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def _make(tiny, source: str, root: Path, sensors, recipe: str = "mae", **extra):
    data = {"source": source, "root": str(root), "size": 32, "batch_size": 2, "sensors": sensors}
    data.update(extra)
    return tiny(recipe=recipe, data=data, augment={"crop_size": min(32, data["size"])})


# ------------------------------------------------------------------------------- BigEarthNet


@pytest.fixture(scope="module")
def ben_v1(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("ben_v1")
    return root, bigearthnet_v1(root, n_s2=5, n_s1=4, size=36)


def test_bigearthnet_v1_windows_labels_and_s1_in_linear(tiny, ben_v1) -> None:
    root, patches = ben_v1
    config = _make(tiny, "bigearthnet", root, [{"sensor": "s2"}, {"sensor": "s1"}], split=None)
    s2 = open_sensor(config, "sentinel-2-l2a")
    assert len(s2) == 5 and s2.bands[0] == "B01" and len(s2.bands) == 12
    sample = s2[0]
    assert sample["image"].shape == (12, 32, 32)
    expected = torch.zeros(19, dtype=torch.int64)
    for name in patches[0]["labels"]:
        expected[CLASSES_19.index(CLASS_43_TO_19[name])] = 1
    assert torch.equal(sample["labels"], expected)
    assert sample["crs"] == "EPSG:32633" and sample["gsd"] == pytest.approx(10.0)
    assert sample["time"] == pytest.approx(to_days(datetime(2017, 6, 13, 10, 10, 31)))
    # the 10 m band B02 is the archive's pixels at the window's place
    t = sample["transform"]
    row = round((5353200.0 - t[5]) / 10)
    col = round((t[2] - 373200.0) / 10)
    b02 = patches[0]["bands"]["B02"].astype(np.float32)
    assert torch.equal(sample["image"][1], torch.from_numpy(b02[row : row + 32, col : col + 32]))
    s1 = open_sensor(config, "sentinel-1-grd")
    s1_sample = s1[0]
    assert s1_sample["units"] == "linear" and bool((s1_sample["image"] > 0).all())
    assert float(s1_sample["image"].max()) <= 10 ** (5 / 10) + 1e-4  # stored -30..5 dB
    # the official split (train.csv in the root)
    train = _make(tiny, "bigearthnet", root, [{"sensor": "s2"}])
    assert len(open_sensor(train, "s2")) == 3


def test_bigearthnet_v1_pairs_from_corresponding_s2_patch(tiny, ben_v1) -> None:
    root, _ = ben_v1
    config = _make(
        tiny,
        "bigearthnet",
        root,
        [{"sensor": "s2"}, {"sensor": "s1"}],
        "cross_sensor",
        pair=["s1", "s2"],
        split=None,
    )
    pairs = open_pair(config)
    assert len(pairs) == 4
    for i in range(4):
        item = pairs[i]
        a, b = item["a"], item["b"]
        assert a["sensor"] == "sentinel-1-grd" and b["sensor"] == "sentinel-2-l2a"
        assert a["name"].split("_")[-2:] == b["name"].split("_")[-2:]
        assert a["transform"] == b["transform"]  # one window of both: the same ground
        assert torch.equal(a["labels"], b["labels"])


def test_bigearthnet_v2_and_its_parquet_pairs(tiny, tmp_path: Path) -> None:
    rows = bigearthnet_v2(tmp_path, size=36)
    config = _make(tiny, "bigearthnet", tmp_path, [{"sensor": "s2"}, {"sensor": "s1"}])
    s2 = open_sensor(config, "s2")  # split train: 2 rows
    assert len(s2) == 2 and "bigearthnet v2" in s2.reader.notes[0]
    assert s2[0]["labels"].nonzero().flatten().tolist() == [CLASSES_19.index("Arable land")]
    pairs = open_pair(
        _make(
            tiny,
            "bigearthnet",
            tmp_path,
            [{"sensor": "s2"}, {"sensor": "s1"}],
            "cross_sensor",
            pair=["s2", "s1"],
            split=None,
        )
    )
    assert len(pairs) == 3
    names = {(pairs[i]["a"]["name"], pairs[i]["b"]["name"]) for i in range(3)}
    assert names == {(r["patch_id"], r["s1_name"]) for r in rows}


def test_bigearthnet_bad_inputs(tiny, ben_v1, tmp_path: Path) -> None:
    root, _ = ben_v1
    too_big = _make(tiny, "bigearthnet", root, [{"sensor": "s2"}], split=None, size=48)
    with pytest.raises(DataLayoutError, match=r"patches are 36x36 px, smaller than data\.size 48"):
        open_sensor(too_big, "s2")
    with pytest.raises(UserInputError, match="source bigearthnet has no sentinel-2-l1c") as exc:
        _make(tiny, "bigearthnet", root, [{"sensor": "sentinel-2-l1c"}])
    _one_line(exc)
    with pytest.raises(UserInputError, match=r"data\.root is missing: source bigearthnet") as exc:
        tiny(data={"source": "bigearthnet", "sensors": [{"sensor": "s2"}]})
    _one_line(exc)
    with pytest.raises(DataLayoutError, match=r"split file train\.csv not found"):
        open_sensor(_make(tiny, "bigearthnet", root / "S2" / ".." / "S1", [{"sensor": "s1"}]), "s1")


# -------------------------------------------------------------------------------- Kuro Siwo


def test_kurosiwo_labelled_and_unlabelled_acquisitions(tiny, tmp_path: Path) -> None:
    made = make_kurosiwo(tmp_path, size=32)
    config = _make(tiny, "kurosiwo", tmp_path, [{"sensor": "s1"}], split=None)
    samples = open_sensor(config, "sentinel-1-grd")
    # 2 labelled tiles x 3 acquisitions, unlabelled: 3 + 2 (the second lacks SL2)
    assert len(samples) == 6 + 5
    assert "2 labelled and 2 unlabelled tile(s)" in samples.reader.notes[0]
    names = [samples[i]["name"] for i in range(len(samples))]
    assert sum("/00/" in n for n in names) == 5
    unlabelled = [samples[i] for i in range(len(samples)) if "/00/" in samples[i]["name"]]
    for sample in unlabelled:
        assert sample["image"].shape == (2, 32, 32) and sample["units"] == "linear"
        image = sample["image"]
        assert bool(torch.isnan(image[:, :8]).all())  # stored 0: no data
        assert bool((image[:, 8:] > 0).all())
        assert sample["crs"] == "EPSG:3857" and math.isfinite(sample["lon"])
    times = sorted({s["time"] for s in unlabelled})
    assert times == [
        to_days(datetime(2019, 12, 8)),
        to_days(datetime(2019, 12, 20)),
        to_days(datetime(2020, 1, 1)),
    ]
    # the train split: event 130's labelled tile and its unlabelled tiles
    train = open_sensor(_make(tiny, "kurosiwo", tmp_path, [{"sensor": "s1"}]), "s1")
    assert len(train) == 3 + 5
    assert made["unlabelled"][0].is_dir()
    with pytest.raises(UserInputError, match="source kurosiwo has no sentinel-2-l2a") as exc:
        _make(tiny, "kurosiwo", tmp_path, [{"sensor": "s1"}, {"sensor": "s2"}])
    _one_line(exc)
    with pytest.raises(UserInputError, match="has no cross-sensor pairs"):
        _make(tiny, "kurosiwo", tmp_path, [{"sensor": "s1"}], "cross_sensor", pair=["s1", "s2"])


# ------------------------------------------------------------------------------- SSL4EO-S12


@pytest.fixture(scope="module")
def ssl4eo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ssl4eo")
    make_ssl4eo(root)
    return root


def test_ssl4eo_seasons_by_rank_windows_and_metadata(tiny, ssl4eo_root: Path) -> None:
    config = _make(tiny, "ssl4eo-s12", ssl4eo_root, [{"sensor": "sentinel-2-l1c", "n": 24}])
    samples = open_sensor(config, "sentinel-2-l1c")
    assert len(samples) == 24 and len(samples.bands) == 13 and samples.bands[10] == "B10"
    seasons = set()
    for i in range(len(samples)):
        sample = samples[i]
        assert sample["image"].shape == (13, 32, 32)
        season = int(sample["image"][1, 0, 0]) // 1000  # B2's pixels are 1000 x season
        folder = sample["name"].split("/")[-1]
        location = sample["name"].split("/")[1]
        assert SSL4EO_S2[location].index(folder) + 1 == season
        assert sample["time"] == pytest.approx(
            to_days(datetime.strptime(folder[:15], "%Y%m%dT%H%M%S"))
        )
        seasons.add(season)
        assert sample["crs"] == "EPSG:4326"
        assert -91.85 < sample["lon"] < -91.84 and 18.58 < sample["lat"] < 18.59
    assert seasons == {1, 2, 3, 4}
    again = open_sensor(config, "sentinel-2-l1c")
    assert all(torch.equal(samples[i]["image"], again[i]["image"]) for i in range(24))
    l2a = open_sensor(_make(tiny, "ssl4eo-s12", ssl4eo_root, [{"sensor": "s2"}]), "s2")
    assert len(l2a) == 2 and "B10" not in l2a.bands


def test_ssl4eo_pairs_take_the_same_season(tiny, ssl4eo_root: Path) -> None:
    config = _make(
        tiny,
        "ssl4eo-s12",
        ssl4eo_root,
        [{"sensor": "s1", "n": 16}, {"sensor": "sentinel-2-l1c"}],
        "cross_sensor",
        pair=["s1", "sentinel-2-l1c"],
    )
    pairs = open_pair(config)
    assert len(pairs) == 16
    for i in range(16):
        a, b = pairs[i]["a"], pairs[i]["b"]
        assert a["units"] == "linear"
        db = 10.0 * torch.log10(a["image"][1])  # VV: -(10 x season + noise) dB
        season_a = int(-float(db.max()) // 10)
        season_b = int(b["image"][1, 0, 0]) // 1000
        assert season_a == season_b
        assert a["transform"] == pytest.approx(b["transform"])
        location = a["name"].split("/")[1]
        assert SSL4EO_S1[location].index(a["name"].split("/")[-1]) + 1 == season_a


def test_ssl4eo_layout_errors(tiny, tmp_path: Path) -> None:
    config = _make(tiny, "ssl4eo-s12", tmp_path, [{"sensor": "s1"}])
    with pytest.raises(DataLayoutError, match="no SSL4EO-S12 s1 data in") as exc:
        open_sensor(config, "s1")
    _one_line(exc)
    with pytest.raises(UserInputError, match="source ssl4eo-s12 has no sentinel-3-olci"):
        _make(tiny, "ssl4eo-s12", tmp_path, [{"sensor": "sentinel-3-olci"}])


# ----------------------------------------------------------------------- Copernicus-Pretrain


@pytest.fixture(scope="module")
def copernicus_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("copernicus")
    make_copernicus(root, grids=3, corrupt=True)
    return root


def test_copernicus_pretrain_patches_times_and_metadata(tiny, copernicus_root: Path) -> None:
    config = _make(
        tiny,
        "copernicus-pretrain",
        copernicus_root,
        [{"sensor": "sentinel-2-l1c", "n": 12}, {"sensor": "s1"}],
    )
    s2 = open_sensor(config, "sentinel-2-l1c")
    notes = " | ".join(s2.reader.notes)
    assert "left out unreadable shard" in notes and "example-000001.tar" in notes
    assert "3 grid cells of 3" in notes
    seen = set()
    for i in range(len(s2)):
        sample = s2[i]
        value = int(sample["image"][0, 0, 0])
        patch, rank = divmod(value - 1000, 100)
        seen.add((patch, rank))
        # metadata: the local patch's coordinates and the rank's date (times sorted)
        local = sample["name"].split("/")[-2]
        grid = int(sample["name"].split(":")[1].split("/")[0][-2:])
        assert local.startswith(f"08658{grid}{patch}_")
        day = to_days(datetime(2022, 3, 22)) if rank == 0 else to_days(datetime(2022, 11, 21))
        assert sample["time"] == day
        lon = float(local.split("_")[1])
        assert sample["lon"] == pytest.approx(lon, abs=0.005)
        assert sample["gsd"] == 10.0 and "crs" not in sample
    assert seen == {(0, 0), (0, 1), (1, 0), (1, 1)}
    s1 = open_sensor(config, "s1")
    assert len(s1) == 2  # the last cell has no S1
    assert s1[0]["units"] == "linear"
    dem = open_sensor(
        _make(tiny, "copernicus-pretrain", copernicus_root, [{"sensor": "copernicus-dem"}]),
        "copernicus-dem",
    )
    assert dem[0]["image"].shape == (1, 32, 32) and math.isnan(dem[0]["time"])
    gas = open_sensor(
        _make(
            tiny,
            "copernicus-pretrain",
            copernicus_root,
            [{"sensor": "sentinel-5p", "bands": ["CO"]}],
            size=16,
        ),
        "sentinel-5p",
    )
    assert gas.bands == ("CO",) and gas[0]["gsd"] == 1000.0
    too_big = _make(tiny, "copernicus-pretrain", copernicus_root, [{"sensor": "sentinel-5p"}])
    with pytest.raises(DataLayoutError, match=r"s5p_no2 images are 28x28 px, smaller than") as exc:
        open_sensor(too_big, "sentinel-5p")
    _one_line(exc)
    with pytest.raises(UserInputError, match="give one of CO, NO2, O3, SO2") as exc:
        _make(
            tiny,
            "copernicus-pretrain",
            copernicus_root,
            [{"sensor": "sentinel-5p", "bands": ["CO", "NO2"]}],
        )
    _one_line(exc)


def test_copernicus_pretrain_pairs_share_the_local_patch(tiny, copernicus_root: Path) -> None:
    config = _make(
        tiny,
        "copernicus-pretrain",
        copernicus_root,
        [{"sensor": "s1", "n": 12}, {"sensor": "sentinel-2-l1c"}],
        "cross_sensor",
        pair=["s1", "sentinel-2-l1c"],
    )
    pairs = open_pair(config)
    assert len(pairs) == 12
    for i in range(12):
        a, b = pairs[i]["a"], pairs[i]["b"]
        db = 10.0 * torch.log10(a["image"][0, 0, 0])
        patch_a, rank_a = divmod(round(-float(db) * 10) - 10, 100)
        patch_b, rank_b = divmod(int(b["image"][0, 0, 0]) - 1000, 100)
        assert (patch_a, rank_a) == (patch_b, rank_b)
        assert a["name"].split("/")[-2] == b["name"].split("/")[-2]


def test_copernicus_pretrain_without_shards(tiny, tmp_path: Path) -> None:
    config = _make(tiny, "copernicus-pretrain", tmp_path, [{"sensor": "s1"}])
    with pytest.raises(DataLayoutError, match=r"no Copernicus-Pretrain shards \(\*\.tar\)") as exc:
        open_sensor(config, "s1")
    _one_line(exc)


# ------------------------------------------------------------------------ through the module


def test_data_module_batches_of_a_real_source(tiny, ben_v1) -> None:
    root, _ = ben_v1
    config = _make(
        tiny, "bigearthnet", root, [{"sensor": "s2"}, {"sensor": "s1"}], "softcon", split=None
    )
    module = PretrainDataModule(config, Normaliser())
    module.build()
    assert module.group_sizes == [5, 4]
    loader = module.train_dataloader()
    batch = next(iter(loader))
    assert batch["image"].shape[-2:] == (32, 32) and batch["labels"].shape[1] == 19
    assert len(set(batch["sensor"])) == 1
