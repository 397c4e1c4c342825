import math
from datetime import date, datetime

import numpy as np
import pytest
import torch

from thinkingearth.data.sample import collate, collate_sides, to_days


def _sample(**kw):
    s = {"image": torch.zeros(2, 4, 4), "bands": ("VV", "VH"), "sensor": "sentinel-1-grd"}
    s.update(kw)
    return s


def test_to_days_accepts_dates_datetimes_numbers_and_missing():
    assert to_days(date(1970, 1, 2)) == 1.0
    assert to_days(datetime(1970, 1, 1, 12)) == 0.5
    assert to_days(np.datetime64("2000-01-01")) == 10957.0
    assert to_days(42) == 42.0
    assert math.isnan(to_days(None))
    assert math.isnan(to_days(np.datetime64("NaT")))


def test_collate_keeps_missing_metadata_per_sample():
    batch = collate([_sample(lon=10.0, lat=50.0, time=100.0, gsd=10.0), _sample(lon=11.0)])
    assert batch["image"].shape == (2, 2, 4, 4)
    assert batch["lon"].tolist() == [10.0, 11.0]
    assert batch["lat"][0] == 50.0 and torch.isnan(batch["lat"][1])
    assert torch.isnan(batch["time"][1]) and batch["time"][0] == 100.0
    assert batch["lon"].dtype == torch.float64
    assert batch["bands"] == [("VV", "VH"), ("VV", "VH")]


def test_collate_pads_time_series_with_nan_and_fills_absent_keys():
    batch = collate([_sample(time=torch.tensor([1.0, 2.0, 3.0])), _sample(time=[5.0, 6.0])])
    assert batch["time"].shape == (2, 3)
    assert batch["time"][1, :2].tolist() == [5.0, 6.0] and torch.isnan(batch["time"][1, 2])
    assert torch.isnan(batch["gsd"]).all()


def test_collate_stacks_masks_and_rejects_mismatched_images():
    batch = collate([_sample(mask=torch.zeros(4, 4, dtype=torch.long))] * 3)
    assert batch["mask"].shape == (3, 4, 4)
    with pytest.raises(ValueError, match="different shapes"):
        collate([_sample(), _sample(image=torch.zeros(2, 5, 5))])
    with pytest.raises(ValueError, match="at least one"):
        collate([])


def test_collate_sides_collates_each_side_on_its_own():
    s2 = {"image": torch.zeros(12, 4, 4), "bands": ("B02",) * 12, "sensor": "sentinel-2-l2a"}
    items = [{"source": s2, "target": _sample(lon=float(i))} for i in range(3)]
    batch = collate_sides(items)
    assert batch["source"]["image"].shape == (3, 12, 4, 4)
    assert batch["target"]["image"].shape == (3, 2, 4, 4)
    assert batch["target"]["lon"].tolist() == [0.0, 1.0, 2.0]
    assert collate_sides([{"source": s2, "target": None}] * 2)["target"] is None
    with pytest.raises(ValueError, match="missing in some items"):
        collate_sides([{"source": s2, "target": None}, {"source": s2, "target": s2}])
    with pytest.raises(ValueError, match="same sides"):
        collate_sides([{"a": s2, "b": s2}, {"source": s2, "target": s2}])
