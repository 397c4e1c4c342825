"""Tests for labels turned into sentences (thinkingearth.vl.captions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from thinkingearth.data.formats.bigearthnet import CLASSES_19, labels_to_multi_hot
from thinkingearth.data.synthetic import SyntheticCopernicus
from thinkingearth.vl.captions import (
    bigearthnet_caption,
    caption_for,
    class_caption,
    flood_caption,
    join_names,
    mask_caption,
    sensor_phrase,
)


def _ben_sample(labels: list[str], name: str = "S2A_MSIL2A_20170613T101031_0_40") -> dict:
    return {
        "image": torch.zeros(12, 4, 4),
        "bands": ("B02",),
        "sensor": "sentinel-2-l2a",
        "label": labels_to_multi_hot(labels, 19),
        "name": name,
    }


def test_join_names() -> None:
    assert join_names([]) == ""
    assert join_names(["a"]) == "a"
    assert join_names(["a", "b"]) == "a and b"
    assert join_names(["a", "b", "c"]) == "a, b and c"
    # names with commas are separated by semicolons, so the list stays readable
    assert join_names(["x, y", "z"]) == "x, y and z"
    assert join_names(["x, y", "z", "w"]) == "x, y; z and w"


def test_bigearthnet_19_and_43() -> None:
    hot = labels_to_multi_hot(["Non-irrigated arable land", "Pastures", "Water bodies"], 19)
    assert (
        bigearthnet_caption(hot) == "A satellite image of arable land, pastures and inland waters."
    )
    hot43 = labels_to_multi_hot(["Airports", "Bare rock"], 43)
    assert bigearthnet_caption(hot43) == "A satellite image of airports and bare rock."
    # v1 patches whose labels the 19-class nomenclature drops have nothing to say
    assert bigearthnet_caption(labels_to_multi_hot(["Airports"], 19)) is None
    with pytest.raises(ValueError, match="19 or 43"):
        bigearthnet_caption(torch.zeros(10))


def test_caption_for_bigearthnet_detected_and_seeded() -> None:
    sample = _ben_sample(["Pastures", "Coniferous forest", "Sea and ocean"])
    canonical = caption_for(sample)
    assert canonical == "A satellite image of pastures, coniferous forest and marine waters."
    assert caption_for(sample, "bigearthnet") == canonical
    # a seed varies the wording deterministically: same seed, same text; the names stay the same
    first = caption_for(sample, seed=3)
    assert first == caption_for(sample, seed=3)
    variants = {caption_for(sample, seed=s) for s in range(20)}
    assert len(variants) > 3
    for text in variants:
        assert text is not None
        for phrase in ("pastures", "coniferous forest", "marine waters"):
            assert phrase in text
    # the variation depends on the sample, not only on the seed
    other = _ben_sample(["Pastures", "Coniferous forest", "Sea and ocean"], name="other")
    assert [caption_for(sample, seed=s) for s in range(10)] != [
        caption_for(other, seed=s) for s in range(10)
    ]


def test_flood_caption_shares_in_words() -> None:
    mask = np.zeros((10, 10), np.int64)
    mask[:3] = 2  # 30 flood pixels
    mask[3, :5] = 1  # 5 permanent water
    mask[9] = 3  # 10 invalid pixels: shares are of the 90 valid ones
    text = flood_caption(torch.from_numpy(mask))
    assert text == (
        "A Sentinel-1 radar image of land with extensive flooding: 33% flooded and 6% "
        "permanent water."
    )
    dry = np.zeros((4, 4), np.int64)
    assert flood_caption(dry) == "A Sentinel-1 radar image of land with no flooding."
    lake = np.ones((4, 4), np.int64)  # no land in the window: the caption must not say land
    assert flood_caption(lake) == (
        "A Sentinel-1 radar image of permanent water with no flooding: 100% permanent water."
    )
    little = np.zeros((100, 100), np.int64)
    little[0, :30] = 2
    assert "little flooding: less than 1% flooded" in (flood_caption(little) or "")
    assert flood_caption(np.full((3, 3), 3)) is None


def test_caption_for_kurosiwo_sample() -> None:
    mask = torch.zeros(8, 8, dtype=torch.int64)
    mask[:2] = 2
    sample = {"image": torch.zeros(3, 2, 8, 8), "mask": mask, "sensor": "sentinel-1-grd"}
    assert caption_for(sample) is None  # nothing says it is Kuro Siwo
    assert caption_for(sample, "kurosiwo") == (
        "A Sentinel-1 radar image of land with extensive flooding: 25% flooded."
    )
    sample["actid"] = 470  # Kuro Siwo tiles carry their activation id
    assert caption_for(sample) == caption_for(sample, "kurosiwo")
    assert caption_for(sample, seed=1) == caption_for(sample, "kurosiwo", seed=1)


def test_copernicus_bench_rules() -> None:
    eurosat = {"task": "eurosat_s2", "label": torch.tensor(9), "sensor": "sentinel-2-l1c"}
    assert caption_for(eurosat) == "A satellite image of sea or lake."
    ben = {"task": "bigearthnet_s2", "label": torch.zeros(19, dtype=torch.int64)}
    ben["label"][[0, 17]] = 1
    assert caption_for(ben) == "A satellite image of urban fabric and inland waters."
    mask = torch.full((10, 10), 255, dtype=torch.int64)
    mask[:6] = 4  # croplands
    mask[6:8] = 0  # forest
    mask[8, :5] = 7  # water
    text = caption_for({"task": "dfc2020_s2", "mask": mask})
    assert text == "A satellite image of 71% croplands, 24% forest and 6% water."
    flood = caption_for({"task": "flood_s1", "mask": torch.tensor([[0, 2], [1, 3]])})
    assert flood == (
        "A Sentinel-1 radar image of land with extensive flooding: 33% flooded and 33% "
        "permanent water."
    )
    assert caption_for({"task": "biomass_s3", "target": torch.zeros(2, 2)}) is None
    # classes the Sample does not record (cloud_s3 in binary mode) can be given
    binary = {"task": "cloud_s3", "mask": torch.tensor([[0, 1], [1, 1]])}
    assert caption_for(binary, classes=("Clear", "Cloud")) == (
        "A satellite image of 75% cloud and 25% clear."
    )


def test_class_and_mask_caption_errors() -> None:
    with pytest.raises(ValueError, match="outside"):
        class_caption(5, ("a", "b"))
    with pytest.raises(ValueError, match="does not fit"):
        class_caption(torch.zeros(3), ("a", "b"))
    assert mask_caption(torch.full((2, 2), 9), ("a", "b")) is None
    assert class_caption(torch.zeros(2), ("a", "b")) is None


def test_eurosat_reader_hint() -> None:
    sample = {"label": torch.tensor(0), "sensor": "sentinel-2-l1c", "name": "AnnualCrop_1"}
    assert caption_for(sample, "eurosat-ms") == "A satellite image of annual crops."


def test_synthetic_caption_is_reused() -> None:
    ds = SyntheticCopernicus(task="multilabel", sensor="s2", split="train", n=2, size=32)
    sample = ds[0]
    assert caption_for(sample) == sample["caption"]
    assert caption_for(sample, "synthetic") == sample["caption"]
    assert caption_for({"image": torch.zeros(1)}, "gaia") is None
    assert caption_for({"image": torch.zeros(1)}) is None


def test_sensor_phrase() -> None:
    assert sensor_phrase("sentinel-2-l2a") == "Sentinel-2"
    assert sensor_phrase("sentinel-1-grd") == "Sentinel-1 radar"
    assert sensor_phrase("landsat-8-9") == "Landsat"
    assert sensor_phrase(None) == "satellite"
    assert CLASSES_19[0] == "Urban fabric"


def _load(name: str, relative: str) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readers_samples_get_captions(tmp_path: Path) -> None:
    """caption_for on the Samples the real readers produce (tiny files in the real layouts)."""
    from thinkingearth.data.formats.eurosat import EuroSATMS
    from thinkingearth.data.formats.kurosiwo import KuroSiwo

    fake_kuro = _load("_fake_kurosiwo_captions", "data/kurosiwo/data.py")
    fake_kuro.make_fake_kurosiwo(tmp_path / "kuro", n_tiles_per_event=1, size=16, dem=False)
    tile = KuroSiwo(tmp_path / "kuro")[0]
    mask = tile["mask"]
    valid = (mask >= 0) & (mask <= 2)
    flooded = round(100 * float((mask == 2).sum()) / float(valid.sum()))
    text = caption_for(tile)
    assert text is not None and text.startswith("A Sentinel-1 radar image of land with")
    assert f"{flooded}% flooded" in text

    fake_eurosat = _load("_fake_eurosat_captions", "data/eurosat/data.py")
    fake_eurosat.make_fake_eurosat(tmp_path / "eurosat")
    patch = EuroSATMS(tmp_path / "eurosat")[0]
    from thinkingearth.data.formats.eurosat import CLASSES

    text = caption_for(patch, "eurosat-ms")
    # the same words as the Copernicus-Bench EuroSAT task, whose classes are EuroSAT's
    assert text == caption_for({"task": "eurosat_s2", "label": patch["label"]})
    assert text == class_caption(patch["label"], CLASSES)
    assert text is not None and text.startswith("A satellite image of ")


REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata" / "bigearthnet-v1"


def test_real_bigearthnet_patches_get_their_labels_in_words() -> None:
    folder = REALDATA / "S2"
    if not folder.is_dir():
        pytest.skip(f"real BigEarthNet patches not found at {folder} (shared/realdata is absent)")
    from thinkingearth.data.formats.bigearthnet import CLASS_43_TO_19, BigEarthNet

    ds = BigEarthNet(folder, num_classes=19, exclude_snow_cloud=False)
    import json

    checked = 0
    for i in range(len(ds)):
        sample = ds[i]
        labels = json.loads(
            (folder / sample["name"] / f"{sample['name']}_labels_metadata.json").read_text()
        )["labels"]
        names = {CLASS_43_TO_19[n] for n in labels} - {None}
        text = caption_for(sample)
        if not names:
            assert text is None
            continue
        assert text is not None and text.startswith("A satellite image of ")
        for name in names:
            assert name[:1].lower() + name[1:] in text
        checked += 1
    assert checked > 0
