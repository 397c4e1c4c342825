"""Tests for the BigEarthNet.txt reader on tiny files in the published layout."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from thinkingearth.data.formats.bigearthnet_txt import BigEarthNetTxt, parse_box
from thinkingearth.data.readers import open_split
from thinkingearth.data.sample import collate
from thinkingearth.errors import DataLayoutError, UserInputError

_spec = importlib.util.spec_from_file_location(
    "_fake_bigearthnet_txt", Path(__file__).parent / "data" / "bigearthnet_txt" / "data.py"
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
    path = tmp_path_factory.mktemp("bentxt")
    fake.make_fake_bigearthnet_txt(path)
    return path


def test_parse_box() -> None:
    assert parse_box("[0.1, 0.2, 0.6, 0.75]") == (0.1, 0.2, 0.6, 0.75)
    assert parse_box("(0, 0), (1, 1)") == (0.0, 0.0, 1.0, 1.0)
    assert parse_box("no box") is None
    assert parse_box("[0.6, 0.2, 0.1, 0.75]") is None  # x1 > x2
    assert parse_box("[0.1, 0.2, 1.6, 0.75]") is None  # outside the patch


def test_all_rows_joined_to_patches(root: Path) -> None:
    ds = BigEarthNetTxt(root)
    assert len(ds) == 12 and ds.skipped == 0
    by_id = {ds[i]["text_id"]: ds[i] for i in range(len(ds))}
    cap = by_id[1]
    assert cap["caption"] == "The image shows arable land in the north."
    assert cap["instruction"] == "Describe the image."
    assert cap["text_type"] == "captioning" and "question" not in cap
    # the Sample of the joined patch: image, bands, 19-class label from reBEN's metadata
    assert cap["image"].shape == (12, 12, 12)
    assert float(cap["image"][1, 0, 0]) == 1000.0  # B02 of patch 0
    assert cap["sensor"] == "sentinel-2-l2a" and cap["name"] == fake.PATCHES[0][0]
    assert cap["label"].nonzero().flatten().tolist() == [2, 4]
    assert 12.0 < cap["lon"] < 14.0 and 47.5 < cap["lat"] < 48.5  # from the raster
    assert (cap["country"], cap["season"], cap["climate_zone"]) == ("Austria", "Summer", "Dfb")
    qa = by_id[102]
    assert qa["question"] == "Is there marine waters in the image?" and qa["answer"] == "Yes"
    assert qa["question_type"] == "binary" and qa["category"] == "presence"
    assert float(qa["image"][1, 0, 0]) == 1001.0
    mcq = by_id[203]
    assert mcq["question_type"] == "mcq" and mcq["answer"] == "B) Winter"
    ref = by_id[4]
    assert ref["referring"].startswith("Locate the <ref>arable land</ref>")
    assert ref["answer"] == "[0.1, 0.2, 0.6, 0.75]"
    assert torch.allclose(ref["box"], torch.tensor([0.1, 0.2, 0.6, 0.75]))
    assert torch.isnan(by_id[204]["box"]).all()  # an answer that is not a box


def test_splits_and_types(root: Path) -> None:
    train = BigEarthNetTxt(root, split="train")
    assert {train[i]["text_id"] for i in range(len(train))} == {1, 2, 3, 4}
    # BigEarthNet.txt's own split, not reBEN's (patch 1 is reBEN validation, BigEarthNet.txt bench)
    bench = BigEarthNetTxt(root, split="bench", types=["captioning"])
    assert len(bench) == 1 and bench[0]["caption"] == "The image shows marine waters in the north."
    assert bench[0]["split"] == "bench"
    with pytest.raises(
        DataLayoutError, match=r"no BigEarthNet.txt annotations of split val"
    ) as exc:
        BigEarthNetTxt(root, split="val")
    _one_line(exc)
    qa = BigEarthNetTxt(root, types=("binary", "mcq"))
    assert len(qa) == 6 and all("question" in qa[i] for i in range(len(qa)))
    # patch 2 is flagged snowy in reBEN; BigEarthNet.txt still annotates it, so it is read
    assert any(qa[i]["patch_id"] == fake.PATCHES[2][0] for i in range(len(qa)))


def test_sentinel1_join_and_collate(root: Path) -> None:
    ds = BigEarthNetTxt(root, split="test", sensor="s1", types=["binary"])
    sample = ds[0]
    assert sample["sensor"] == "sentinel-1-grd" and sample["units"] == "db"
    assert sample["bands"] == ("VV", "VH") and float(sample["image"][0, 0, 0]) == -12.0
    assert sample["name"] == fake.PATCHES[2][1]
    batch = collate([BigEarthNetTxt(root, types=["captioning"])[i] for i in range(3)])
    assert batch["image"].shape == (3, 12, 12, 12)
    assert len(batch["caption"]) == 3 and batch["lon"].dtype == torch.float64


def test_missing_patches(tmp_path: Path, root: Path) -> None:
    rows = fake.text_rows()
    rows.append(
        {**rows[0], "ID": 999, "patch_id": "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_99_99"}
    )
    text = tmp_path / "BigEarthNet.txt.parquet"
    fake.write_text_parquet(text, rows)
    with pytest.raises(DataLayoutError, match=r"1 row.*99_99.*missing='skip'") as exc:
        BigEarthNetTxt(tmp_path, images_root=root)
    _one_line(exc)
    ds = BigEarthNetTxt(tmp_path, images_root=root, missing="skip")
    assert len(ds) == 12 and ds.skipped == 1


def test_bad_input(tmp_path: Path, root: Path) -> None:
    with pytest.raises(DataLayoutError, match=r"BigEarthNet.txt.parquet not found") as exc:
        BigEarthNetTxt(tmp_path)
    _one_line(exc)
    (tmp_path / "BigEarthNet.txt.parquet").write_bytes(b"PAR1 this is not a parquet")
    with pytest.raises(DataLayoutError, match=r"not a readable parquet") as exc:
        BigEarthNetTxt(tmp_path, images_root=root)
    _one_line(exc)
    fake.write_text_parquet(tmp_path / "BigEarthNet.txt.parquet", fake.text_rows(), drop="output")
    with pytest.raises(DataLayoutError, match=r"lacks the column.*output") as exc:
        BigEarthNetTxt(tmp_path, images_root=root)
    _one_line(exc)
    for kwargs, match in (
        ({"split": "validation"}, "split must be one of"),
        ({"types": ["caption"]}, "unknown BigEarthNet.txt type 'caption'"),
        ({"sensor": "s3"}, "sensor must be"),
        ({"missing": "ignore"}, "missing must be"),
    ):
        with pytest.raises(UserInputError, match=match) as exc:
            BigEarthNetTxt(root, **kwargs)
        _one_line(exc)


def test_without_pyarrow_says_so(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(UserInputError, match=r"pip install pyarrow") as exc:
        BigEarthNetTxt(root)
    _one_line(exc)


def test_open_split(root: Path) -> None:
    ds: Any = open_split("bigearthnet-txt", root, "train", {"types": ["captioning"]})
    assert isinstance(ds, BigEarthNetTxt) and len(ds) == 1
    assert not math.isnan(ds[0]["lon"])


def test_corrupt_reben_metadata(tmp_path: Path, root: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    (copy / "metadata.parquet").write_bytes(b"PAR1 broken")
    with pytest.raises(DataLayoutError, match=r"BigEarthNet v2 metadata") as exc:
        BigEarthNetTxt(copy)
    _one_line(exc)


def test_pickles_for_dataloader_workers(root: Path) -> None:
    import pickle

    ds = BigEarthNetTxt(root, split="train")
    copy = pickle.loads(pickle.dumps(ds))
    assert len(copy) == len(ds) and copy[2]["question"] == ds[2]["question"]
    assert torch.equal(copy[2]["image"], ds[2]["image"])
