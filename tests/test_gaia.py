"""Tests for the GAIA reader on tiny files in the published layout (records + img2dataset)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from thinkingearth.data.formats.gaia import GAIA, parse_resolution_m, registry_sensor
from thinkingearth.data.readers import open_split
from thinkingearth.data.sample import collate
from thinkingearth.errors import DataLayoutError, UserInputError
from thinkingearth.vl.captions import caption_for

_spec = importlib.util.spec_from_file_location(
    "_fake_gaia", Path(__file__).parent / "data" / "gaia" / "data.py"
)
assert _spec is not None and _spec.loader is not None
fake = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake)


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gaia")
    fake.make_fake_gaia(path)
    return path


def test_registry_sensor_rules() -> None:
    assert registry_sensor(["Copernicus Sentinel-2"], ["MSI"]) == ("sentinel-2-l2a", "")
    assert registry_sensor("Sentinel-2A") == ("sentinel-2-l2a", "")
    assert registry_sensor(["Landsat-8"], "OLI") == ("landsat-8-9", "")
    assert registry_sensor(["Landsat 9"]) == ("landsat-8-9", "")
    for satellite, sensor, reason in (
        (["Sentinel-1B"], ["SAR-C"], "sentinel-1"),
        (["Terra"], ["MODIS"], "not a Copernicus"),
        (["Landsat 7"], ["ETM+"], "landsat-older"),
        (["Sentinel-2"], ["OLI"], "several missions"),
        (None, None, "nothing"),
        (["Sentinel-3"], ["OLCI"], "sentinel-3"),
    ):
        name, why = registry_sensor(satellite, sensor)
        assert name is None and reason in why


def test_parse_resolution() -> None:
    assert parse_resolution_m("10 m") == 10.0
    assert parse_resolution_m(["30m", "15m"]) == 15.0
    assert parse_resolution_m("0.5 meters") == 0.5
    assert parse_resolution_m("1 km") == 1000.0
    assert parse_resolution_m(250) == 250.0
    assert math.isnan(parse_resolution_m("high resolution"))
    assert math.isnan(parse_resolution_m(None))


def test_train_shards(root: Path) -> None:
    ds = GAIA(root, rgb="true-colour")
    assert len(ds) == 2
    assert ds.skipped == {"no true-colour mission": 3, "image not downloaded": 1}
    s2, landsat = ds[0], ds[1]
    assert s2["id"] == "gaia-0" and s2["sensor"] == "sentinel-2-l2a"
    assert s2["bands"] == ("B04", "B03", "B02") and s2["rendering"] == "rgb8"
    assert s2["image"].shape == (3, 8, 10) and s2["image"].dtype == torch.float32
    assert s2["image"][:, 0, 0].tolist() == [0.0, 100.0, 200.0]
    assert s2["caption"] == "Caption 0 of scene 0." and len(s2["captions"]) == 5
    assert (s2["lon"], s2["lat"]) == (23.7, 37.9)
    assert math.isnan(s2["gsd"]) and math.isnan(s2["time"]) and s2["resolution_m"] == 10.0
    assert landsat["sensor"] == "landsat-8-9" and landsat["bands"] == ("B4", "B3", "B2")
    assert landsat["image"][:, 0, 0].tolist() == [1.0, 101.0, 200.0]
    assert landsat["resolution_m"] == 15.0 and landsat["resolution"] == "30m, 15m"
    assert landsat["tags"] == ["wildfire", "vegetation"]
    assert caption_for(s2) == s2["caption"]  # the text readers' captions are used as they are
    batch = collate([s2, s2])
    assert batch["image"].shape == (2, 3, 8, 10) and batch["caption"] == [s2["caption"]] * 2


def test_caption_choice_is_deterministic(root: Path) -> None:
    third = GAIA(root, rgb="true-colour", caption_index=3)
    assert third[0]["caption"] == "Caption 3 of scene 0."
    a = [GAIA(root, rgb="true-colour", caption_index=None, seed=7)[i]["caption"] for i in range(2)]
    b = [GAIA(root, rgb="true-colour", caption_index=None, seed=7)[i]["caption"] for i in range(2)]
    assert a == b
    picks = {
        GAIA(root, rgb="true-colour", caption_index=None, seed=s)[0]["caption"] for s in range(12)
    }
    assert len(picks) > 1  # the seed changes the choice
    with pytest.raises(UserInputError, match=r"has 5 captions") as exc:
        GAIA(root, rgb="true-colour", caption_index=5)
    _one_line(exc)


def test_test_split_files_and_columns(root: Path) -> None:
    ds = open_split("gaia", root, "test", {"rgb": "true-colour"})
    assert len(ds) == 2  # type: ignore[arg-type]
    first = ds[0]
    assert first["id"] == "gaia-10" and first["resolution_m"] == 10.0
    assert first["image"][:, 0, 0].tolist() == [10.0, 110.0, 200.0]
    assert ds[1]["sensor"] == "landsat-8-9"


def test_bands_must_be_stated(root: Path) -> None:
    with pytest.raises(UserInputError, match=r"rgb='true-colour'") as exc:
        GAIA(root)
    _one_line(exc)
    with pytest.raises(UserInputError, match=r"rgb='true-colour'"):
        open_split("gaia", root, "train")


def test_unmapped_error(root: Path) -> None:
    with pytest.raises(DataLayoutError, match=r"gaia-2.*sentinel-1.*unmapped='skip'") as exc:
        GAIA(root, rgb="true-colour", unmapped="error")
    _one_line(exc)


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(DataLayoutError, match=r"train_data.json not found") as exc:
        GAIA(tmp_path, rgb="true-colour")
    _one_line(exc)
    (tmp_path / "train_data.json").write_text('[{"id": "a", "captions": ["x"]')
    with pytest.raises(DataLayoutError, match=r"not valid JSON") as exc:
        GAIA(tmp_path, rgb="true-colour")
    _one_line(exc)
    (tmp_path / "train_data.json").write_text(json.dumps([{"id": "a", "captions": "one"}]))
    (tmp_path / "train").mkdir()
    with pytest.raises(DataLayoutError, match=r"list of strings") as exc:
        GAIA(tmp_path, rgb="true-colour")
    _one_line(exc)
    (tmp_path / "train_data.json").write_text(json.dumps([fake.record(0, "Sentinel-2", "MSI")]))
    with pytest.raises(
        DataLayoutError, match=r"no GAIA train record.*image not downloaded 1"
    ) as exc:
        GAIA(tmp_path, rgb="true-colour")
    _one_line(exc)
    (tmp_path / "train" / "00000.tar").write_bytes(b"not a tar file at all" * 40)
    with pytest.raises(DataLayoutError, match=r"not a readable tar") as exc:
        GAIA(tmp_path, rgb="true-colour")
    _one_line(exc)
    with pytest.raises(UserInputError, match=r"caption_index") as exc:
        GAIA(tmp_path, rgb="true-colour", caption_index=-1)
    _one_line(exc)


def test_pickles_for_dataloader_workers(root: Path) -> None:
    import pickle

    ds = GAIA(root, rgb="true-colour")
    copy = pickle.loads(pickle.dumps(ds))
    assert torch.equal(copy[1]["image"], ds[1]["image"]) and copy[1]["caption"] == ds[1]["caption"]
