"""Kuro Siwo flood shares as ``image_text`` captions (``data.kurosiwo_captioned``)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import affine
import numpy as np
import pytest
import rasterio
import torch
from vl_helpers import TINY_ENCODER, requires_minilm

from thinkingearth.configfile import merge
from thinkingearth.data.formats.kurosiwo import KuroSiwoSAR, write_kurosiwo_tile
from thinkingearth.data.sample import collate
from thinkingearth.errors import UserInputError
from thinkingearth.pretrain import config_from_dict, run_pretrain
from thinkingearth.pretrain.sources.base import Draw, WindowSamples, draw
from thinkingearth.pretrain.sources.kurosiwo import KuroSiwoReader
from thinkingearth.vl.model import load_vl_model
from thinkingearth.vl.recipes import _flood_captions

SIZE = 32  # tile side
WINDOW = 16  # data.size
_DATES = {"SL2": "2020-01-01", "SL1": "2020-01-13", "MS1": "2020-01-25"}
_ORIGIN = (-6679169.0, -3503549.0)  # EPSG:3857 metres, in South America


def _transform(t: int) -> affine.Affine:
    return affine.Affine(10.0, 0.0, _ORIGIN[0] + t * SIZE * 10.0, 0.0, -10.0, _ORIGIN[1])


def _tile(root: Path, t: int, mlu: np.ndarray, mna: np.ndarray | None = None) -> Path:
    """A labelled tile of event 130 (train) with the given MLU; the SAR is valid everywhere."""
    rng = np.random.default_rng(t)
    sar = {s: rng.lognormal(-2.5, 0.5, (2, SIZE, SIZE)).astype(np.float32) for s in ("SL2", "SL1")}
    sar["MS1"] = rng.lognormal(-2.5, 0.5, (2, SIZE, SIZE)).astype(np.float32)
    return write_kurosiwo_tile(
        root,
        actid=130,
        aoi=1,
        tile=f"{t + 1:032x}",
        sar=sar,
        mlu=mlu.astype(np.uint8),
        mna=np.ones((SIZE, SIZE), np.uint8) if mna is None else mna.astype(np.uint8),
        transform=_transform(t),
        dates=_DATES,
    )


def _unlabelled_tile(root: Path) -> Path:
    folder = root / "data" / "130" / "00" / f"{99:032x}"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(99)
    for scene, day in (("SL1", "20200113"), ("MS1", "20200125")):
        for pol in ("IVV", "IVH"):
            with rasterio.open(
                folder / f"{scene}_{pol}_130_00_{day}.tif",
                "w",
                driver="GTiff",
                width=SIZE,
                height=SIZE,
                count=1,
                dtype="float32",
                crs="EPSG:3857",
                transform=_transform(9),
                nodata=0.0,
            ) as dst:
                dst.write(rng.lognormal(-2.5, 0.5, (SIZE, SIZE)).astype(np.float32), 1)
    return folder


def make_tiles(root: Path) -> dict[str, Path]:
    """Four labelled tiles (dry, mostly flooded, half flooded, all ignored) and an unlabelled one."""
    dry = np.zeros((SIZE, SIZE), np.uint8)
    dry[:, :4] = 1  # a river: permanent water, not flood
    flooded = np.full((SIZE, SIZE), 2, np.uint8)
    flooded[0, :] = 0  # one dry row: at most 1/16 of a window is not flooded
    half = np.zeros((SIZE, SIZE), np.uint8)
    half[:, SIZE // 2 :] = 2  # the window's column decides its flood share
    half[SIZE // 2 :, : SIZE // 4] = 3  # and some ignored pixels
    ignored = np.zeros((SIZE, SIZE), np.uint8)
    return {
        "dry": _tile(root, 0, dry),
        "flooded": _tile(root, 1, flooded),
        "half": _tile(root, 2, half),
        "ignored": _tile(root, 3, ignored, mna=np.zeros((SIZE, SIZE))),  # MNA 0: nothing valid
        "unlabelled": _unlabelled_tile(root),
    }


def _window_of(sample: dict[str, Any], folder: Path) -> tuple[int, int]:
    """The window's top row and left column from its transform and the tile's MLU file."""
    (mlu_file,) = folder.glob("MK0_MLU_*.tif")
    with rasterio.open(mlu_file) as src:
        col, row = ~src.transform @ tuple(sample["transform"][i] for i in (2, 5))
    return round(row), round(col)


def _shares_on_disk(folder: Path, row: int, col: int) -> tuple[float, float] | None:
    """Flood and permanent-water shares of the valid pixels of a window, read from the files."""
    (mlu_file,) = folder.glob("MK0_MLU_*.tif")
    (mna_file,) = folder.glob("MK0_MNA_*.tif")
    with rasterio.open(mlu_file) as a, rasterio.open(mna_file) as b:
        mlu, mna = a.read(1), b.read(1)
    mlu = mlu[row : row + WINDOW, col : col + WINDOW]
    valid = (mna[row : row + WINDOW, col : col + WINDOW] == 1) & (mlu <= 2)
    if not valid.any():
        return None
    n = int(valid.sum())
    return float(((mlu == 2) & valid).sum()) / n, float(((mlu == 1) & valid).sum()) / n


def _percent(caption: str, what: str) -> int | None:
    found = re.search(r"(\d+)% " + what, caption)
    return int(found.group(1)) if found else None


def test_captioned_reader_keeps_the_labelled_post_event_windows_with_their_masks(
    tmp_path: Path,
) -> None:
    folders = make_tiles(tmp_path)
    plain = KuroSiwoReader(tmp_path, None, None, WINDOW)
    assert len(plain) == 4 * 3 + 2  # every acquisition of every tile, as before
    assert "flood_mask" not in plain.read(0, draw(0, 0)) and not plain.captioned
    reader = KuroSiwoReader(tmp_path, None, None, WINDOW, captioned=True)
    # only MS1 of the four labelled tiles: no pre-event scene, no area 00
    assert [reader.name(i) for i in range(len(reader))] == [
        f"{folders[k].relative_to(tmp_path)} MS1" for k in ("dry", "flooded", "half", "ignored")
    ]
    assert "left out" in reader.notes[0]
    # a captioned sample is the plain reader's sample of the same MS1 window plus its mask
    plain_ms1 = [i for i in range(len(plain)) if plain.name(i) == reader.name(1)]
    before, after = plain.read(plain_ms1[0], draw(5, 7)), reader.read(1, draw(5, 7))
    assert set(after) - set(before) == {"flood_mask"} and set(before) <= set(after)
    assert torch.equal(before["image"].nan_to_num(-1), after["image"].nan_to_num(-1))
    assert before["transform"] == after["transform"] and before["time"] == after["time"]
    by_folder = {str(f.relative_to(tmp_path)): f for f in folders.values()}
    for index in range(20):
        item = index % len(reader)
        sample = reader.read(item, draw(3, index))
        folder = by_folder[reader.name(item).split(" ")[0]]
        row, col = _window_of(sample, folder)
        mask = sample["flood_mask"]
        assert mask.shape == (WINDOW, WINDOW) and mask.dtype == torch.int64
        (caption,) = _flood_captions(mask[None], "sentinel-1-grd") or [None]
        shares = _shares_on_disk(folder, row, col)
        if shares is None:
            assert caption == "A Sentinel-1 radar image."  # nothing said about water
            continue
        flood, water = shares
        assert caption is not None
        if flood == 0:
            assert "no flooding" in caption and _percent(caption, "flooded") is None
        else:
            assert _percent(caption, "flooded") == round(100 * flood), (caption, flood)
        assert _percent(caption, "permanent water") == (round(100 * water) if water else None)
    # the window decides: the half-flooded tile's left windows are dry, its right ones flooded
    (half,) = [
        i
        for i in range(len(reader))
        if reader.name(i).startswith(str(folders["half"].relative_to(tmp_path)))
    ]
    left, right = reader.read(half, _at(0.0)), reader.read(half, _at(0.999))
    assert _window_of(left, folders["half"]) == (0, 0)
    assert _window_of(right, folders["half"]) == (0, SIZE - WINDOW)
    assert "no flooding" in (_flood_captions(left["flood_mask"][None], "sentinel-1-grd") or [""])[0]
    assert (
        "extensive flooding: 100% flooded"
        in (_flood_captions(right["flood_mask"][None], "sentinel-1-grd") or [""])[0]
    )


def _at(col: float, row: float = 0.0) -> Draw:
    return Draw(time=0.0, patch=0.0, row=row, col=col)


def test_dry_and_flooded_tiles_say_so_through_the_batches(tmp_path: Path) -> None:
    make_tiles(tmp_path)
    reader = KuroSiwoReader(tmp_path, None, None, WINDOW, captioned=True)
    samples = WindowSamples(reader, seed=1, n=16)
    batch = collate([samples[i] for i in range(len(samples))])
    assert batch["flood_mask"].shape == (16, WINDOW, WINDOW)
    captions = _flood_captions(batch["flood_mask"], "sentinel-1-grd") or []
    seen = {name.split(" ")[0][-1] for name in batch["name"]}
    assert seen == {"1", "2", "3", "4"}  # every labelled tile, so every branch below, is read
    for name, caption in zip(batch["name"], captions, strict=True):
        if name.startswith("data/130/01/" + f"{1:032x}"):  # dry, a river of permanent water
            assert "no flooding" in caption and "flooded" not in caption, caption
        elif name.startswith("data/130/01/" + f"{2:032x}"):  # mostly flooded
            assert "extensive flooding" in caption, caption
            assert int(_percent(caption, "flooded") or 0) >= 93
        elif name.startswith("data/130/01/" + f"{4:032x}"):  # no valid label
            assert caption == "A Sentinel-1 radar image."
    assert _flood_captions(torch.zeros(2, 5), "sentinel-1-grd") is None  # not masks


def test_the_option_is_checked_and_required_by_image_text(tmp_path: Path) -> None:
    requires_minilm()
    make_tiles(tmp_path)
    with pytest.raises(UserInputError) as info:
        tiny_kurosiwo_config(tmp_path, captioned=False)
    message = str(info.value)
    assert "data.kurosiwo_captioned: true" in message and "\n" not in message
    with pytest.raises(UserInputError, match=r"data.kurosiwo_captioned is only read by source"):
        config_from_dict(
            merge(copy.deepcopy(_TINY), {"data": {"kurosiwo_captioned": True, "root": None}})
        )
    with pytest.raises(UserInputError, match=r"kurosiwo_captione\b|unknown key"):
        config_from_dict(
            merge(
                copy.deepcopy(_TINY),
                {"data": {"source": "kurosiwo", "root": str(tmp_path), "kurosiwo_captione": 1}},
            )
        )


_TINY: dict[str, Any] = {
    "name": "tiny-vl-kurosiwo",
    "recipe": "image_text",
    "seed": 0,
    "encoder": {"name": "thinkingearth_vit_tiny", "overrides": dict(TINY_ENCODER)},
    "data": {"size": WINDOW, "sensors": [{"sensor": "sentinel-1-grd", "n": 16}], "batch_size": 4},
    "augment": {"crop_size": WINDOW},
    "optim": {"lr": 1e-3, "warmup_steps": 1},
    "trainer": {"max_steps": 2, "checkpoint_every": 2, "log_every": 1, "progress_bar": False},
}


def tiny_kurosiwo_config(root: Path, captioned: bool = True) -> Any:
    data = {"source": "kurosiwo", "root": str(root), "split": None}
    if captioned:
        data["kurosiwo_captioned"] = True
    return config_from_dict(merge(copy.deepcopy(_TINY), {"data": data}))


def test_image_text_trains_on_kurosiwo_flood_captions(tmp_path: Path) -> None:
    requires_minilm()
    root = tmp_path / "kurosiwo"
    make_tiles(root)
    config = tiny_kurosiwo_config(root)
    assert config.data.kurosiwo_captioned is True
    result = run_pretrain(config, tmp_path / "run", log=None)
    assert result.steps == 2 and result.final_loss is not None
    assert np.isfinite(result.final_loss)
    described = load_vl_model(tmp_path / "run").describe()
    assert set(described["sensors"]) == {"sentinel-1-grd"}


def test_read_mask_is_the_labelled_readers_mask(tmp_path: Path) -> None:
    from thinkingearth.data.formats.kurosiwo import KuroSiwo

    make_tiles(tmp_path)
    sar = KuroSiwoSAR(tmp_path, split=None)
    labelled = KuroSiwo(tmp_path, split=None)
    assert sar.labelled_tiles == len(labelled) == 4 and sar.unlabelled_tiles == 1
    for i in range(len(labelled)):
        assert sar.labelled(i)
        assert torch.equal(sar.read_mask(i), labelled[i]["mask"])
    assert int(sar.read_mask(3).eq(3).sum()) == SIZE * SIZE  # MNA 0: every pixel ignored
    assert not sar.labelled(4)
    with pytest.raises(UserInputError, match=r"is unlabelled \(area 00\); it has no flood mask"):
        sar.read_mask(4)


def test_captioned_without_labelled_tiles_says_why(tmp_path: Path) -> None:
    from thinkingearth.errors import DataLayoutError

    _unlabelled_tile(tmp_path)
    assert len(KuroSiwoReader(tmp_path, None, None, WINDOW)) == 2  # SL1 and MS1, no labels
    with pytest.raises(DataLayoutError, match=r"kurosiwo_captioned reads the labelled tiles only"):
        KuroSiwoReader(tmp_path, None, None, WINDOW, captioned=True)
