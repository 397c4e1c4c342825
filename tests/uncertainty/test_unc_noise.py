"""Label noise you can dial (thinkingearth.uncertainty.noise): rates measured back, clean truth kept.

Tolerances. Models that flip labels independently (symmetric, class-dependent, drop-add,
input-dependent, gaussian) are checked against a binomial 4-sigma bound, 4·sqrt(r(1-r)/n) over
the n labels, pixels or entries drawn. boundary-shift searches the shift length per item and
meets the rate to within 0.01 per item on masks with edges; erode-dilate changes exactly
round(rate·N) of the N valid pixels (randomised rounding: within one pixel per item);
missed-flood takes whole patches, so a single item may be off by one patch, but its expectation
is exactly the rate: the mean over items is checked against 4 standard errors of that mean.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch.utils.data import DataLoader, Dataset

from thinkingearth.data.sample import collate
from thinkingearth.errors import UserInputError
from thinkingearth.uncertainty.noise import (
    DEFAULT_NOISE,
    NOISE_MODELS,
    LabelNoise,
    NoisyLabels,
    class_neighbours,
    input_hardness,
    measured_rate,
)

S2_BANDS = ("B02", "B03", "B04", "B08")


class ListDataset(Dataset[dict[str, Any]]):
    """Samples held in a list (the Sample contract's shape: image, bands, sensor, metadata)."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


def _sample(image: torch.Tensor, **labels: Any) -> dict[str, Any]:
    return {
        "image": image,
        "bands": S2_BANDS,
        "sensor": "sentinel-2-l2a",
        "lon": 10.0,
        "lat": 45.0,
        "time": 19000.0,
        "gsd": 10.0,
        **labels,
    }


def _blobs(seed: int, size: int = 24, classes: int = 4) -> torch.Tensor:
    """A mask of smooth class blobs (many edges), int64 [size, size]."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal((classes, size, size)), (0, 2.5, 2.5))
    return torch.from_numpy(field.argmax(0)).long()


def _optical(n: int, labels: list[Any], key: str, *, size: int = 4) -> ListDataset:
    """Optical Samples: every other item cloudy (bright in the visible bands)."""
    gen = torch.Generator().manual_seed(1)
    items = []
    for i in range(n):
        base = 0.6 if i % 2 else 0.05  # cloud reflectance vs. land
        image = base + 0.03 * torch.rand(len(S2_BANDS), size, size, generator=gen)
        items.append(_sample(image * 10_000, **{key: labels[i]}))
    return ListDataset(items)


def _bound(rate: float, n: int) -> float:
    return 4.0 * math.sqrt(rate * (1.0 - rate) / n)


def _pairs(ds: NoisyLabels, key: str) -> tuple[list[Any], list[Any]]:
    items = [ds[i] for i in range(len(ds))]
    return [s[f"{key}_clean"] for s in items], [s[key] for s in items]


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [1.0, 1.2, -0.1, math.nan, True])
def test_rate_outside_unit_interval_is_a_one_line_error(rate: float) -> None:
    with pytest.raises(UserInputError) as err:
        LabelNoise("symmetric", rate)
    message = str(err.value)
    assert message.startswith("noise rate must be in [0, 1); got ")
    assert "\n" not in message
    if rate == 1.2:
        assert message == "noise rate must be in [0, 1); got 1.2"


def test_unknown_model_and_unsupported_combinations_name_the_allowed_models() -> None:
    with pytest.raises(UserInputError, match="unknown noise model 'flip'"):
        LabelNoise("flip", 0.1)  # type: ignore[arg-type]
    ds = _optical(4, [0, 1, 2, 0], "label")
    with pytest.raises(UserInputError) as err:
        NoisyLabels(ds, LabelNoise("gaussian", 0.1), "classification", 3)
    assert str(err.value) == (
        "noise model 'gaussian' does not apply to classification labels; "
        "expected one of: symmetric, class-dependent, input-dependent"
    )
    for model, kind in [("missed-flood", "segmentation"), ("drop-add", "change")]:
        with pytest.raises(UserInputError, match=", ".join(NOISE_MODELS[kind])):
            NoisyLabels(ds, LabelNoise(model, 0.1), kind, 3)  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="unknown task kind 'detection'"):
        NoisyLabels(ds, LabelNoise("symmetric", 0.1), "detection", 3)  # type: ignore[arg-type]


def test_other_bad_input() -> None:
    ds = _optical(4, [0, 1, 2, 7], "label")
    noisy = NoisyLabels(ds, LabelNoise("symmetric", 0.5), "classification", 3)
    with pytest.raises(UserInputError, match=r"label 7 is outside the classes 0\.\.2"):
        noisy[3]
    with pytest.raises(UserInputError, match="needs Samples with 'mask'"):
        NoisyLabels(ds, LabelNoise("symmetric", 0.5), "segmentation", 3)[0]
    with pytest.raises(UserInputError, match="at least 2 classes"):
        NoisyLabels(ds, LabelNoise("symmetric", 0.5), "classification", 2, ignore_index=1)
    masks = ListDataset([_sample(torch.rand(4, 8, 8), mask=_blobs(0, 8))])
    with pytest.raises(UserInputError, match=r"flood_class must be a class in 0\.\.1"):
        NoisyLabels(masks, LabelNoise("missed-flood", 0.5), "change", 2)
    dem = ListDataset(
        [{"image": torch.rand(1, 8, 8), "bands": ("DEM",), "sensor": "copernicus-dem", "label": 0}]
    )
    with pytest.raises(UserInputError, match="needs an optical or SAR image"):
        NoisyLabels(dem, LabelNoise("input-dependent", 0.2), "classification", 3)
    with pytest.raises(UserInputError, match="seed"):
        LabelNoise("symmetric", 0.2, seed=-1)


def test_multilabel_needs_multi_hot_and_python_labels_stay_python() -> None:
    counts = _optical(2, [torch.tensor([0, 2, 1]), torch.tensor([1, 0, 0])], "label")
    with pytest.raises(UserInputError, match="multi-hot labels of 0 and 1"):
        NoisyLabels(counts, LabelNoise("drop-add", 0.3), "multilabel", 3)[0]
    ints = NoisyLabels(
        _optical(50, [i % 3 for i in range(50)], "label"),
        LabelNoise("symmetric", 0.5),
        "classification",
        3,
    )
    labels = [ints[i] for i in range(50)]
    assert all(type(s["label"]) is int and type(s["label_clean"]) is int for s in labels)
    assert 0 < measured_rate(*_pairs(ints, "label"), "classification") < 1


def test_defaults_are_models_of_their_kind() -> None:
    assert DEFAULT_NOISE == {
        "classification": "symmetric",
        "multilabel": "drop-add",
        "segmentation": "boundary-shift",
        "change": "missed-flood",
        "regression": "gaussian",
    }
    for kind, model in DEFAULT_NOISE.items():
        assert model in NOISE_MODELS[kind]  # type: ignore[index]


# ---------------------------------------------------------------------------------------------
# measured_rate
# ---------------------------------------------------------------------------------------------


def test_measured_rate_by_hand() -> None:
    clean = torch.tensor([[0, 1, 2], [3, 3, 1]])
    noisy = torch.tensor([[1, 1, 2], [3, 0, 2]])
    assert measured_rate(clean, noisy, "segmentation") == pytest.approx(3 / 6)
    assert measured_rate(clean, noisy, "segmentation", ignore_index=3) == pytest.approx(2 / 4)
    assert measured_rate(clean, noisy, "segmentation", of_class=1) == pytest.approx(1 / 2)
    target = torch.tensor([1.0, math.nan, 3.0, 4.0])
    assert measured_rate(target, torch.tensor([1.0, math.nan, 3.5, 4.0]), "regression") == (
        pytest.approx(1 / 3)
    )
    assert measured_rate([0, 1, 2, 3], [0, 2, 2, 3], "classification") == pytest.approx(0.25)
    assert math.isnan(measured_rate(clean, clean, "change", ignore_index=3, of_class=5))
    with pytest.raises(UserInputError, match="differ in size"):
        measured_rate(clean, noisy[0], "segmentation")


# ---------------------------------------------------------------------------------------------
# Rates measured back
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["symmetric", "class-dependent", "input-dependent"])
@pytest.mark.parametrize("rate", [0.2, 0.6])
def test_classification_rate(model: str, rate: float) -> None:
    n, k = 800, 5
    labels = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(3))
    ds = _optical(n, list(labels), "label", size=2)
    # all items as rank references: the flip probability's mean over the data is exactly rate
    noisy = NoisyLabels(
        ds, LabelNoise(model, rate, seed=5), "classification", k, calibration_items=n
    )
    clean, flipped = _pairs(noisy, "label")
    assert abs(measured_rate(clean, flipped, "classification") - rate) < _bound(rate, n)


def test_class_dependent_flips_only_to_the_neighbour() -> None:
    assert class_neighbours(4) == {0: 1, 1: 2, 2: 3, 3: 0}
    assert class_neighbours(4, ignore_index=2) == {0: 1, 1: 3, 3: 0}
    n = 600
    labels = [torch.tensor(i % 5) for i in range(n)]
    ds = _optical(n, labels, "label", size=2)
    noisy = NoisyLabels(ds, LabelNoise("class-dependent", 0.4), "classification", 5, ignore_index=2)
    clean, flipped = _pairs(noisy, "label")
    neighbour = class_neighbours(5, ignore_index=2)
    changed = 0
    for c, f in zip(clean, flipped, strict=True):
        if int(c) == 2:
            assert int(f) == 2  # the ignore index is never changed
        elif int(f) != int(c):
            assert int(f) == neighbour[int(c)]
            changed += 1
    assert changed > 0.3 * (n * 4 / 5)  # the flips did happen
    symmetric = NoisyLabels(ds, LabelNoise("symmetric", 0.4), "classification", 5)
    targets = {(int(c), int(f)) for c, f in zip(*_pairs(symmetric, "label"), strict=True)}
    assert {f for c, f in targets if c == 0 and f != 0} == {1, 2, 3, 4}  # uniform: all others


@pytest.mark.parametrize("model", ["drop-add", "input-dependent"])
def test_multilabel_rate_counts_dropped_and_added_entries(model: str) -> None:
    n, k, rate = 400, 6, 0.25
    gen = torch.Generator().manual_seed(0)
    labels = list((torch.rand(n, k, generator=gen) < 0.3).long())
    noisy = NoisyLabels(
        _optical(n, labels, "label", size=2),
        LabelNoise(model, rate),
        "multilabel",
        k,
        calibration_items=n,
    )
    clean, flipped = _pairs(noisy, "label")
    assert abs(measured_rate(clean, flipped, "multilabel") - rate) < _bound(rate, n * k)
    c, f = torch.stack(clean), torch.stack(flipped)
    dropped = ((c == 1) & (f == 0)).sum() / (c == 1).sum()
    added = ((c == 0) & (f == 1)).sum() / (c == 0).sum()
    # the rate applies to present and absent labels alike
    assert abs(float(dropped) - rate) < _bound(rate, int((c == 1).sum()))
    assert abs(float(added) - rate) < _bound(rate, int((c == 0).sum()))


def _mask_dataset(n: int, size: int = 24, ignore: int | None = None) -> ListDataset:
    items = []
    for i in range(n):
        mask = _blobs(i, size)
        if ignore is not None:
            mask[: size // 6, :] = ignore  # a strip of no data, like a swath edge
        items.append(_sample(torch.rand(len(S2_BANDS), size, size) * 1000, mask=mask))
    return ListDataset(items)


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.4])
def test_boundary_shift_meets_the_rate_per_item(rate: float) -> None:
    noisy = NoisyLabels(_mask_dataset(20), LabelNoise("boundary-shift", rate), "segmentation", 4)
    clean, shifted = _pairs(noisy, "mask")
    shares = [measured_rate(c, s, "segmentation") for c, s in zip(clean, shifted, strict=True)]
    assert max(abs(s - rate) for s in shares) < 0.01
    # a shift, not salt and pepper: changed pixels lie next to an edge of the clean mask
    for c, s in zip(clean, shifted, strict=True):
        edge = torch.from_numpy(ndimage.morphological_gradient(c.numpy(), size=3) > 0)
        near = ndimage.binary_dilation(edge.numpy(), iterations=int(24 * rate) + 3)
        assert bool(torch.from_numpy(near)[c != s].all())


@pytest.mark.parametrize("rate", [0.05, 0.3, 0.5])
def test_erode_dilate_changes_the_requested_share_by_growing_classes(rate: float) -> None:
    noisy = NoisyLabels(_mask_dataset(20), LabelNoise("erode-dilate", rate), "segmentation", 4)
    clean, morphed = _pairs(noisy, "mask")
    for c, m in zip(clean, morphed, strict=True):
        assert abs(measured_rate(c, m, "segmentation") - rate) <= 1 / c.numel() + 1e-9
        # every changed pixel took a class that touches it after the change: blobs grew
        changed = c != m
        grown = set(torch.unique(m[changed]).tolist())
        shrunk = set(torch.unique(c[changed]).tolist())
        assert not grown & shrunk  # one side grows, the other shrinks
    one_class = ListDataset([_sample(torch.rand(4, 8, 8), mask=torch.ones(8, 8, dtype=torch.long))])
    same = NoisyLabels(one_class, LabelNoise("erode-dilate", 0.3), "segmentation", 4)[0]
    assert torch.equal(same["mask"], same["mask_clean"])  # no edge to move


def test_symmetric_and_input_dependent_dense_rate() -> None:
    ds = _mask_dataset(12, size=16)
    n = 12 * 16 * 16
    for model in ("symmetric", "input-dependent"):
        noisy = NoisyLabels(ds, LabelNoise(model, 0.3), "segmentation", 4, calibration_items=12)
        assert abs(measured_rate(*_pairs(noisy, "mask"), "segmentation") - 0.3) < _bound(0.3, n)


def _flood_masks(n: int, size: int = 32) -> ListDataset:
    """Kuro Siwo-like masks: no water 0, a river 1, flood blobs 2, a no-data strip 3."""
    items = []
    rng = np.random.default_rng(7)
    for _ in range(n):
        field = ndimage.gaussian_filter(rng.standard_normal((size, size)), 3)
        mask = np.where(field > np.quantile(field, 0.6), 2, 0)
        mask[:, size // 2 : size // 2 + 2] = 1
        mask[-3:, :] = 3
        image = torch.from_numpy(rng.gamma(4.4, 0.05 / 4.4, (3, 2, size, size))).float()
        items.append(
            {
                "image": image,
                "bands": ("VV", "VH"),
                "sensor": "sentinel-1-grd",
                "units": "linear",
                "mask": torch.from_numpy(mask).long(),
            }
        )
    return ListDataset(items)


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_missed_flood_misses_the_share_of_flood_pixels(rate: float) -> None:
    noisy = NoisyLabels(
        _flood_masks(150), LabelNoise("missed-flood", rate), "change", 3, ignore_index=3
    )
    clean, missed = _pairs(noisy, "mask")
    shares = []
    for c, m in zip(clean, missed, strict=True):
        changed = c != m
        assert bool((c[changed] == 2).all()) and bool((m[changed] == 0).all())
        shares.append(measured_rate(c, m, "change", ignore_index=3, of_class=2))
    mean, sd = float(np.mean(shares)), float(np.std(shares))
    assert sd > 0  # per item, whole patches: not exact
    assert abs(mean - rate) < 4 * sd / math.sqrt(len(shares))
    assert abs(measured_rate(clean, missed, "change", ignore_index=3, of_class=2) - rate) < 0.05


def test_missed_flood_cuts_one_flood_plain_into_patches() -> None:
    mask = torch.zeros(32, 32, dtype=torch.long)
    mask[:, :20] = 2  # one connected flood plain
    items = [_sample(torch.rand(4, 32, 32), mask=mask.clone()) for _ in range(40)]
    noisy = NoisyLabels(ListDataset(items), LabelNoise("missed-flood", 0.3), "change", 3)
    clean, missed = _pairs(noisy, "mask")
    shares = [measured_rate(c, m, "change", of_class=2) for c, m in zip(clean, missed, strict=True)]
    # a stretch is missed, not all or nothing: most items miss a part of the plain
    assert sum(0 < s < 1 for s in shares) >= 30
    assert abs(float(np.mean(shares)) - 0.3) < 4 * float(np.std(shares)) / math.sqrt(40)


def test_gaussian_perturbs_the_share_at_the_targets_scale_and_keeps_nan() -> None:
    gen = torch.Generator().manual_seed(0)
    items = []
    for _ in range(20):
        target = 50.0 + 20.0 * torch.randn(1, 16, 16, generator=gen)
        target[0, :2] = math.nan
        items.append(_sample(torch.rand(4, 16, 16), target=target))
    noisy = NoisyLabels(ListDataset(items), LabelNoise("gaussian", 0.3), "regression", 1)
    clean, perturbed = _pairs(noisy, "target")
    finite = 20 * 14 * 16
    assert abs(measured_rate(clean, perturbed, "regression") - 0.3) < _bound(0.3, finite)
    diffs = []
    for c, p in zip(clean, perturbed, strict=True):
        assert p.shape == c.shape and p.dtype == c.dtype
        assert torch.equal(torch.isnan(c), torch.isnan(p))  # NaN stays NaN, none introduced
        diff = (p - c)[torch.isfinite(c) & (p != c)]
        diffs.append(diff / c[torch.isfinite(c)].std(unbiased=False))
    spread = float(torch.cat(diffs).std())
    assert 0.9 < spread < 1.1  # N(0, σ²) with σ the target's std


# ---------------------------------------------------------------------------------------------
# Properties every model keeps
# ---------------------------------------------------------------------------------------------

_CASES: list[tuple[str, str, int, int | None]] = [
    ("classification", "symmetric", 4, 3),
    ("classification", "class-dependent", 4, 3),
    ("classification", "input-dependent", 4, 3),
    ("multilabel", "drop-add", 5, -1),
    ("multilabel", "input-dependent", 5, -1),
    ("segmentation", "boundary-shift", 4, 255),
    ("segmentation", "symmetric", 4, 255),
    ("segmentation", "erode-dilate", 4, 255),
    ("segmentation", "input-dependent", 4, 255),
    ("change", "missed-flood", 3, 3),
    ("change", "boundary-shift", 3, 3),
    ("change", "erode-dilate", 3, 3),
    ("change", "symmetric", 3, 3),
    ("change", "input-dependent", 3, 3),
    ("regression", "gaussian", 1, None),
]


def _dataset_for(kind: str, classes: int, ignore: int | None, n: int = 16) -> ListDataset:
    gen = torch.Generator().manual_seed(11)
    if kind == "change":
        return _flood_masks(n, size=16)
    items = []
    for i in range(n):
        image = torch.rand(len(S2_BANDS), 12, 12, generator=gen) * (8000 if i % 2 else 500)
        if kind == "classification":
            label: Any = torch.tensor(ignore if i % 4 == 0 else i % classes)
        elif kind == "multilabel":
            label = (torch.rand(classes, generator=gen) < 0.4).long()
            label[0] = ignore
        elif kind == "segmentation":
            label = _blobs(i, 12, classes)
            label[:2] = ignore
        else:
            label = torch.randn(1, 12, 12, generator=gen)
            label[0, 0] = math.nan
        key = {"classification": "label", "multilabel": "label", "segmentation": "mask"}
        items.append(_sample(image, **{key.get(kind, "target"): label}))
    return ListDataset(items)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values, shapes and dtypes; NaN equals NaN."""
    return a.dtype == b.dtype and torch.equal(torch.nan_to_num(a), torch.nan_to_num(b))


@pytest.mark.parametrize(("kind", "model", "classes", "ignore"), _CASES)
def test_every_model_keeps_the_contract(kind: str, model: str, classes: int, ignore: Any) -> None:
    ds = _dataset_for(kind, classes, ignore)
    pristine = copy.deepcopy(ds.items)
    key = "label" if kind in ("classification", "multilabel") else "mask"
    key = "target" if kind == "regression" else key
    noise = LabelNoise(model, 0.35, seed=3)  # type: ignore[arg-type]
    first = NoisyLabels(ds, noise, kind, classes, ignore_index=ignore)  # type: ignore[arg-type]
    again = NoisyLabels(ds, noise, kind, classes, ignore_index=ignore)  # type: ignore[arg-type]
    other = NoisyLabels(ds, LabelNoise(model, 0.35, seed=4), kind, classes, ignore_index=ignore)  # type: ignore[arg-type]
    zero = NoisyLabels(ds, LabelNoise(model, 0.0), kind, classes, ignore_index=ignore)  # type: ignore[arg-type]
    backwards = [first[i] for i in reversed(range(len(ds)))][::-1]
    differs = False
    for i in range(len(ds)):
        a, b, z = first[i], again[i], zero[i]
        clean, noisy = a[f"{key}_clean"], a[key]
        # the clean label is the reader's, untouched; the reader's Sample is not modified
        assert _same(clean, pristine[i][key])
        assert _same(ds.items[i][key], pristine[i][key])
        assert _same(noisy, b[key])  # two wrappers, same noise
        assert _same(noisy, backwards[i][key])  # whatever the order items are read in
        assert _same(z[key], clean)  # rate 0: unchanged
        assert noisy.shape == clean.shape and noisy.dtype == clean.dtype
        if ignore is not None:
            assert torch.equal(noisy == ignore, clean == ignore)  # never changed nor introduced
        else:
            assert torch.equal(torch.isnan(noisy), torch.isnan(clean))
        differs |= not _same(noisy, other[i][key])
        for name in a:  # everything else passes through
            if name not in (key, f"{key}_clean"):
                assert a[name] is pristine[i][name] or a[name] is ds.items[i][name]
    assert differs  # another seed, other noise
    assert _same(first[-1][key], first[len(ds) - 1][key])
    total = measured_rate(*_pairs(first, key), kind, ignore_index=ignore)  # type: ignore[arg-type]
    assert total > 0  # the noise is there


# ---------------------------------------------------------------------------------------------
# Input-dependent noise goes where the input is hard
# ---------------------------------------------------------------------------------------------


def test_input_dependent_flips_cloudy_items_more_than_clear_ones() -> None:
    n, rate = 400, 0.2
    labels = [torch.tensor(i % 3) for i in range(n)]
    ds = _optical(n, labels, "label", size=2)
    noisy = NoisyLabels(ds, LabelNoise("input-dependent", rate), "classification", 3)
    clean, flipped = _pairs(noisy, "label")
    changed = np.array([int(c) != int(f) for c, f in zip(clean, flipped, strict=True)])
    cloudy, clear = changed[1::2].mean(), changed[0::2].mean()
    # ranks: clear items get p in [0, rate), cloudy ones p in (rate, 2 rate]
    assert cloudy > 2 * clear
    assert cloudy > rate > clear


def test_input_dependent_flips_strong_speckle_more_on_sar() -> None:
    rng = np.random.default_rng(0)
    items = []
    for _ in range(6):
        looks = np.ones((2, 32, 32))
        looks[:, :, :16] = 1.0  # left half: single-look speckle (strong)
        looks[:, :, 16:] = 50.0  # right half: heavily multilooked (weak)
        sigma0 = 0.05 * rng.gamma(looks, 1.0 / looks)
        db = torch.from_numpy(10 * np.log10(sigma0)).float()  # given in dB: converted back
        items.append(
            {
                "image": db,
                "bands": ("VV", "VH"),
                "sensor": "sentinel-1-grd",
                "units": "db",
                "mask": _blobs(len(items), 32, 3),
            }
        )
    hardness = input_hardness(items[0])
    assert float(hardness[:, 2:12].mean()) > 3 * float(hardness[:, 20:30].mean())
    noisy = NoisyLabels(ListDataset(items), LabelNoise("input-dependent", 0.2), "segmentation", 3)
    clean, flipped = _pairs(noisy, "mask")
    changed = torch.stack([c != f for c, f in zip(clean, flipped, strict=True)]).float()
    assert float(changed[:, :, 2:14].mean()) > 2 * float(changed[:, :, 18:30].mean())


# ---------------------------------------------------------------------------------------------
# The synthetic world's real Samples
# ---------------------------------------------------------------------------------------------


def test_synthetic_world_cloudy_pixels_get_more_noise_and_batches_keep_the_truth() -> None:
    from thinkingearth.data.synthetic import SyntheticCopernicus

    world = SyntheticCopernicus("landcover", "sentinel-2-l2a", n=10, size=24, cloud_cover=0.5)
    noisy = NoisyLabels(
        world, LabelNoise("input-dependent", 0.2, seed=1), "segmentation", 9, calibration_items=10
    )
    under_cloud, clear = [], []
    for i in range(len(world)):
        sample = noisy[i]
        assert torch.equal(sample["mask_clean"], world[i]["mask"])
        cloud = torch.from_numpy(world.scene(i).cloud_mask)
        changed = sample["mask"] != sample["mask_clean"]
        under_cloud.append(changed[cloud == 1])  # thick cloud
        clear.append(changed[cloud == 0])
    thick, free = torch.cat(under_cloud).float(), torch.cat(clear).float()
    assert thick.numel() > 100 and free.numel() > 100
    assert float(thick.mean()) > 1.5 * float(free.mean())
    batch = next(iter(DataLoader(noisy, batch_size=4, collate_fn=collate)))
    assert batch["mask"].shape == batch["mask_clean"].shape == (4, 24, 24)


def test_synthetic_flood_missed_patches_keep_the_ignored_swath() -> None:
    from thinkingearth.data.synthetic import SyntheticCopernicus

    world = SyntheticCopernicus("flood", "sentinel-1-grd", n=8, size=24, flood_probability=1.0)
    noisy = NoisyLabels(world, LabelNoise("missed-flood", 0.4), "change", 3, ignore_index=3)
    clean, missed = _pairs(noisy, "mask")
    assert any(bool((c == 2).any()) for c in clean)
    for c, m in zip(clean, missed, strict=True):
        changed = c != m
        assert bool((c[changed] == 2).all()) and bool((m[changed] == 0).all())
        assert torch.equal(c == 3, m == 3)
    assert 0 < measured_rate(clean, missed, "change", ignore_index=3, of_class=2) < 1
