"""The synthetic world: determinism, physical sanity, every sensor, bad input, learnability."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import (
    multiclass_jaccard_index,
    multilabel_average_precision,
)

from thinkingearth.data.sample import collate
from thinkingearth.data.synthetic import (
    BUILT,
    FLOOD_IGNORE_INDEX,
    LANDCOVER_CLASSES,
    TREE,
    WATER,
    SyntheticCopernicus,
    WorldConfig,
    generate_scene,
)
from thinkingearth.errors import UnknownBandError, UnknownSensorError, UserInputError
from thinkingearth.sensors import get_sensor


@pytest.fixture(scope="module")
def scenes():
    # Summer scenes at 128 px give every class room to show its physics.
    return [generate_scene(3, i, WorldConfig(size=128)) for i in range(24)]


def test_same_seed_same_scene_and_different_seeds_differ():
    a = generate_scene(7, 2, WorldConfig(size=48, cloud_cover=0.3))
    b = generate_scene(7, 2, WorldConfig(size=48, cloud_cover=0.3))
    c = generate_scene(8, 2, WorldConfig(size=48, cloud_cover=0.3))
    for key in ("s2", "s1", "s3", "no2", "dem", "landcover", "flood", "cloud_mask", "biomass"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert a.caption == b.caption and a.lon == b.lon and a.s1_dates == b.s1_dates
    assert not np.array_equal(a.s2, c.s2)
    train = SyntheticCopernicus(n=2, size=32, split="train")[0]["image"]
    test = SyntheticCopernicus(n=2, size=32, split="test")[0]["image"]
    assert not torch.equal(train, test)


def test_shapes_and_non_square_scenes():
    s = generate_scene(0, 0, WorldConfig(size=(40, 72)))
    assert (
        s.s2.shape == (12, 40, 72) and s.s1.shape == (3, 2, 40, 72) and s.s3.shape == (21, 40, 72)
    )
    assert s.landcover.shape == s.flood.shape == s.dem.shape == s.no2.shape == (40, 72)
    assert set(np.unique(s.landcover)) <= set(range(len(LANDCOVER_CLASSES)))
    assert set(np.unique(s.flood)) <= {0, 1, 2, 3}
    l1c = generate_scene(0, 0, WorldConfig(size=32, s2_level="L1C"))
    assert l1c.s2.shape[0] == 13 and "B10" in l1c.s2_bands


def test_at_least_eight_classes_occur_in_coherent_patches():
    seen = set()
    for i in range(60):
        seen |= set(np.unique(generate_scene(11, i, WorldConfig(size=64)).landcover).tolist())
    assert len(seen) >= 8
    s = generate_scene(3, 1, WorldConfig(size=128))
    same_as_right = (s.landcover[:, 1:] == s.landcover[:, :-1]).mean()
    assert same_as_right > 0.9  # patches, not salt and pepper


def test_water_is_darker_than_land_in_sar(scenes):
    water, land = [], []
    for s in scenes:
        vv = 10 * np.log10(np.maximum(s.s1[1, 0], 1e-6))
        ok = s.valid.astype(bool)
        water.append(vv[(s.landcover == WATER) & ok])
        land.append(vv[(s.landcover != WATER) & ok])
    assert np.mean(np.concatenate(water)) < np.mean(np.concatenate(land)) - 6.0


def test_ndvi_is_high_on_tree_cover_and_low_on_water_and_built_up(scenes):
    def ndvi(s):
        b = list(s.s2_bands)
        nir, red = s.s2[b.index("B08")], s.s2[b.index("B04")]
        return (nir - red) / (nir + red)

    by_class = {k: [] for k in (TREE, WATER, BUILT)}
    for s in scenes:
        v = ndvi(s)
        for k in by_class:
            by_class[k].append(v[s.landcover == k])
    tree, water, built = (np.mean(np.concatenate(by_class[k])) for k in (TREE, WATER, BUILT))
    assert tree > 0.5
    assert water < 0.0
    assert built < tree - 0.3


def test_post_event_vv_drops_only_where_labelled_flood(scenes):
    flood_drop, dry_change = [], []
    for s in [s for s in scenes if s.flooded]:
        pre = 10 * np.log10(np.maximum(s.s1[1, 0], 1e-6))
        post = 10 * np.log10(np.maximum(s.s1[2, 0], 1e-6))
        open_land = ~np.isin(s.landcover, (TREE, BUILT))
        flood_drop.append((post - pre)[(s.flood == 2) & open_land])
        dry_change.append((post - pre)[s.flood == 0])
    assert len(flood_drop) >= 5
    assert np.mean(np.concatenate(flood_drop)) < -6.0
    assert abs(np.mean(np.concatenate(dry_change))) < 1.0


def test_invalid_pixels_have_no_sar_data_and_label_three():
    s = next(
        s for i in range(40) if not (s := generate_scene(5, i, WorldConfig(size=48))).valid.all()
    )
    invalid = s.flood == FLOOD_IGNORE_INDEX
    assert invalid.any() and (s.s1[:, :, invalid].min(axis=0).min(axis=0) == 0).all()


def test_clouds_are_bright_and_masked():
    s = generate_scene(1, 0, WorldConfig(size=96, cloud_cover=0.5))
    assert (s.cloud_mask == 1).any()
    blue = s.s2[list(s.s2_bands).index("B02")]
    assert blue[s.cloud_mask == 1].mean() > 3 * blue[s.cloud_mask == 0].mean()
    assert generate_scene(1, 0, WorldConfig(size=96)).cloud_mask.max() == 0


def test_olci_is_coarse_no2_follows_towns_biomass_follows_trees(scenes):
    s = scenes[0]
    block = s.s3[:, :30, :30]
    assert np.allclose(block, block[:, :1, :1], atol=0.02)  # 300 m pixels on a 10 m grid
    town = next(s for s in scenes if (s.landcover == BUILT).mean() > 0.05)
    assert town.no2[town.landcover == BUILT].mean() > town.no2[town.landcover != BUILT].mean()
    assert town.no2.min() > 1e-6 and town.no2.max() < 1e-3  # mol/m², plausible columns
    trees = np.concatenate([s.biomass[s.landcover == TREE] for s in scenes])
    others = np.concatenate([s.biomass[s.landcover != TREE] for s in scenes])
    assert trees.mean() > 5 * others.mean()


def test_captions_describe_the_labels(scenes):
    s = scenes[2]
    top = LANDCOVER_CLASSES[int(np.argmax(s.class_fractions()))]
    assert top in s.caption
    flooded = next(s for s in scenes if s.flooded)
    assert "flood" in flooded.caption.lower()


@pytest.mark.parametrize(
    ("sensor", "task", "shape"),
    [
        ("sentinel-2-l2a", "multilabel", (12, 32, 32)),
        ("sentinel-2-l1c", "landcover", (13, 32, 32)),
        ("sentinel-1-grd", "flood", (3, 2, 32, 32)),
        ("sentinel-1-grd", "water", (2, 32, 32)),
        ("sentinel-3-olci", "none", (21, 32, 32)),
        ("sentinel-5p", "no2", (1, 32, 32)),
        ("copernicus-dem", "biomass", (1, 32, 32)),
    ],
)
def test_every_sensor_gives_samples_that_collate(sensor, task, shape):
    ds = SyntheticCopernicus(task, sensor, n=4, size=32)
    sample = ds[0]
    assert sample["image"].shape == shape and sample["image"].dtype == torch.float32
    assert sample["sensor"] == get_sensor(sensor).name
    assert len(sample["bands"]) == shape[-3]
    # SAR says its units (the world's sigma0 is linear); other sensors have none to say.
    assert sample.get("units") == ("linear" if sensor == "sentinel-1-grd" else None)
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate)))
    assert batch["image"].shape == (4, *shape)
    assert batch["lon"].shape == (4,) and not torch.isnan(batch["lat"]).any()
    if task == "flood":
        assert batch["time"].shape == (4, 3) and (batch["time"].diff(dim=1) > 0).all()


def test_band_subsets_in_any_order_match_the_full_image():
    full = SyntheticCopernicus("none", n=1, size=16)[0]
    sub = SyntheticCopernicus("none", n=1, size=16, bands=["B8", "red", "B02"])[0]
    assert sub["bands"] == ("B08", "B04", "B02")
    idx = [full["bands"].index(b) for b in sub["bands"]]
    assert torch.equal(sub["image"], full["image"][idx])


def test_bad_input_is_a_clear_error():
    with pytest.raises(UnknownSensorError, match="expected one of"):
        SyntheticCopernicus(sensor="sentinel-9")
    with pytest.raises(UnknownBandError, match="B13"):
        SyntheticCopernicus(bands=["B13"])
    with pytest.raises(UserInputError, match="does not make CO"):
        SyntheticCopernicus(sensor="sentinel-5p", bands=["CO"], task="none")
    with pytest.raises(UserInputError, match="positive"):
        SyntheticCopernicus(n=0)
    with pytest.raises(UserInputError, match="at least 8"):
        WorldConfig(size=0)
    with pytest.raises(UserInputError, match="flood task needs"):
        SyntheticCopernicus("flood", "sentinel-2-l2a")
    with pytest.raises(UserInputError, match="unknown task"):
        SyntheticCopernicus("segment")  # type: ignore[arg-type]


# ---- learnable but not trivial ----------------------------------------------------------------


def _band_means(ds):
    x = torch.stack([torch.log1p(ds[i]["image"]).mean((1, 2)) for i in range(len(ds))])
    y = torch.stack([ds[i]["label"] for i in range(len(ds))])
    return x, y


def test_linear_model_on_band_means_does_not_solve_land_cover():
    torch.manual_seed(0)
    xtr, ytr = _band_means(SyntheticCopernicus("multilabel", n=240, size=48, split="train"))
    xte, yte = _band_means(SyntheticCopernicus("multilabel", n=120, size=48, split="test"))
    mu, sd = xtr.mean(0), xtr.std(0)
    linear = torch.nn.Linear(xtr.shape[1], ytr.shape[1])
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=200)

    def closure():
        opt.zero_grad()
        logits = linear((xtr - mu) / sd)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, ytr.float())
        loss.backward()
        return loss

    opt.step(closure)
    keep = (yte.sum(0) > 0) & (yte.sum(0) < len(yte))
    with torch.no_grad():
        scores = linear((xte - mu) / sd)[:, keep]
    ap = multilabel_average_precision(scores, yte[:, keep], num_labels=int(keep.sum())).item()
    chance = yte[:, keep].float().mean().item()
    assert chance + 0.1 < ap < 0.85, (ap, chance)  # learnable, far from solved


def _pixels(ds, steps):
    xs, ys = [], []
    for i in range(len(ds)):
        s = ds[i]
        db = torch.log10(s["image"].clamp_min(1e-6))
        db = torch.nn.functional.avg_pool2d(db, 5, 1, 2)  # a boxcar speckle filter
        xs.append(db[steps].reshape(-1, db.shape[-2] * db.shape[-1]).T)
        ys.append(s["mask"].reshape(-1))
    return torch.cat(xs), torch.cat(ys)


def _qda(x, y, classes):
    """A Gaussian (quadratic discriminant) pixel classifier: closed form, deterministic."""
    params = []
    for k in range(classes):
        xk = x[y == k]
        cov = torch.cov(xk.T) + 1e-4 * torch.eye(x.shape[1])
        params.append(
            (xk.mean(0), torch.linalg.inv(cov), torch.logdet(cov), np.log(len(xk) / len(x)))
        )

    def predict(xt):
        scores = [
            -0.5 * (((xt - m) @ inv) * (xt - m)).sum(1) - 0.5 * logdet + prior
            for m, inv, logdet, prior in params
        ]
        return torch.stack(scores, 1).argmax(1)

    return predict


def test_flood_mapping_needs_the_pre_event_images():
    train = SyntheticCopernicus("flood", "sentinel-1-grd", n=80, size=48, split="train")
    test = SyntheticCopernicus("flood", "sentinel-1-grd", n=40, size=48, split="test")
    miou = {}
    for name, steps in {"pre+post": [0, 1, 2], "post only": [2]}.items():
        x, y = _pixels(train, steps)
        xt, yt = _pixels(test, steps)
        keep = y != FLOOD_IGNORE_INDEX
        pred = _qda(x[keep].double(), y[keep], 3)(xt.double())
        iou = multiclass_jaccard_index(pred, yt, num_classes=4, ignore_index=3, average=None)
        miou[name] = iou[:3].mean().item()
    assert miou["pre+post"] > 0.6, miou
    assert miou["post only"] < miou["pre+post"] - 0.15, miou
