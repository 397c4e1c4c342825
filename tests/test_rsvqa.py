"""Tests for the RSVQA-LR and RSVQAxBEN readers on tiny files in the published JSON layout."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from thinkingearth.data.formats.rsvqa import RSVQALR, RSVQAxBEN
from thinkingearth.data.readers import open_split
from thinkingearth.data.sample import collate
from thinkingearth.errors import DataLayoutError, UserInputError

_spec = importlib.util.spec_from_file_location(
    "_fake_rsvqa", Path(__file__).parent / "data" / "rsvqa" / "data.py"
)
assert _spec is not None and _spec.loader is not None
fake = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake)


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def lr(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("rsvqa_lr")
    return root, fake.make_fake_rsvqa(root, "lr")


def test_lr_questions_answers_images(lr: tuple[Path, dict]) -> None:
    root, written = lr
    ds = RSVQALR(root, split="train")
    assert len(ds) == len(written["train"]) == 4  # inactive questions and images left out
    got = [
        (ds[i]["image_id"], ds[i]["question"], ds[i]["answer"], ds[i]["question_type"])
        for i in range(len(ds))
    ]
    want = [(p["image_id"], p["question"], p["answer"], p["type"]) for p in written["train"]]
    assert got == want
    sample = ds[1]
    assert sample["image"].shape == (3, 16, 16) and sample["image"].dtype == torch.float32
    assert sample["bands"] == ("B04", "B03", "B02") and sample["sensor"] == "sentinel-2-l2a"
    assert float(sample["image"][0, 0, 0]) == 1.0 and float(sample["image"][1, 0, 0]) == 0.0
    assert sample["rendering"] == "rgb8"
    assert sample["gsd"] == 10.0 and 4.0 < sample["lon"] < 7.0 and 51.0 < sample["lat"] < 53.0
    assert math.isnan(sample["time"])
    assert set(ds.question_types) <= {"presence", "comp", "rural_urban", "count"}
    test = RSVQALR(root, split="test", sensor="sentinel-2-l1c")
    assert test[0]["image_id"] == 4 and test[0]["sensor"] == "sentinel-2-l1c"
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["image"].shape == (4, 3, 16, 16) and batch["answer"] == [
        p["answer"] for p in written["train"]
    ]


def test_xben_without_georeferencing(tmp_path: Path) -> None:
    written = fake.make_fake_rsvqa(tmp_path, "xben")
    ds = RSVQAxBEN(tmp_path, split="val")
    assert len(ds) == len(written["val"]) == 4
    sample = ds[0]
    assert sample["name"] == "S2A_MSIL2A_20170613T101031_2_40"  # the BigEarthNet patch
    assert math.isnan(sample["lon"]) and math.isnan(sample["gsd"]) and "crs" not in sample
    assert sample["question_type"] in ("yes/no", "LC")
    assert open_split("rsvqaxben", tmp_path, "test")[0]["image_id"] == 4


def test_bad_input(tmp_path: Path, lr: tuple[Path, dict]) -> None:
    root, _ = lr
    with pytest.raises(DataLayoutError, match=r"LR_split_train_images.json") as exc:
        RSVQALR(tmp_path)
    _one_line(exc)
    fake.make_fake_rsvqa(tmp_path, "lr")
    (tmp_path / "LR_split_val_questions.json").write_text('{"questions": [')
    with pytest.raises(DataLayoutError, match=r"not valid JSON") as exc:
        RSVQALR(tmp_path, split="val")
    _one_line(exc)
    (tmp_path / "LR_split_val_questions.json").write_text(json.dumps([{"id": 1}]))
    with pytest.raises(DataLayoutError, match=r"no 'questions' list") as exc:
        RSVQALR(tmp_path, split="val")
    _one_line(exc)
    (tmp_path / "Images_LR" / "4.tif").unlink()
    with pytest.raises(DataLayoutError, match=r"4.tif not found") as exc:
        RSVQALR(tmp_path, split="test")[0]
    _one_line(exc)
    with pytest.raises(UserInputError, match=r"split must be one of") as exc:
        RSVQALR(root, split="validation")  # type: ignore[arg-type]
    _one_line(exc)
    with pytest.raises(UserInputError, match=r"Sentinel-2") as exc:
        RSVQALR(root, sensor="sentinel-1-grd")  # type: ignore[arg-type]
    _one_line(exc)


def test_open_split_lr(lr: tuple[Path, dict]) -> None:
    root, written = lr
    ds = open_split("rsvqa-lr", root, "val", {"sensor": "sentinel-2-l1c"})
    assert len(ds) == len(written["val"])  # type: ignore[arg-type]
