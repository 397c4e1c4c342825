"""Split protocols (thinkingearth.data.domains) on tiny data in the real layouts: no domain leaks."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import affine
import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from thinkingearth.data.domains import (
    LABEL_KEYS,
    DomainSplits,
    SplitSpec,
    Unlabelled,
    WithDomain,
    open_domain_splits,
    strip_labels,
)
from thinkingearth.data.formats.bigearthnet import (
    S1_BANDS,
    S2_BANDS,
    BigEarthNet,
    write_bigearthnet_v1_patch,
)
from thinkingearth.errors import UserInputError

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
SPLITS = SimpleNamespace(train="train", val="val", test="test")


def _fake(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"_domains_fake_{name}", Path(__file__).parent / "data" / name / "data.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def _samples(dataset: Dataset[dict[str, Any]] | None) -> list[dict[str, Any]]:
    assert dataset is not None
    return [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]


def _leaves(dataset: Any) -> Iterator[Any]:
    """The reader datasets under the wrappers."""
    if isinstance(dataset, ConcatDataset):
        for part in dataset.datasets:
            yield from _leaves(part)
    elif isinstance(dataset, WithDomain | Unlabelled | Subset):
        yield from _leaves(dataset.dataset)
    else:
        yield dataset


def _check_common(splits: DomainSplits) -> None:
    """Every sample carries its domain; unlabelled samples carry no label; roles hold domains."""
    for sample in _samples(splits.train) + _samples(splits.val):
        assert sample["domain"] in splits.source_domains
    for domain, dataset in splits.test.items():
        samples = _samples(dataset)
        assert samples and {s["domain"] for s in samples} == {domain}
    assert list(splits.test)[: len(splits.target_domains)] == list(splits.target_domains)
    assert not set(splits.source_domains) & set(splits.target_domains)
    for sample in _samples(splits.unlabelled):
        assert sample["domain"] in splits.target_domains
        assert not set(sample) & set(LABEL_KEYS), sorted(sample)
        assert "image" in sample
    target_train = _samples(splits.target_train)
    assert target_train and all(s["domain"] in splits.target_domains for s in target_train)
    assert all({"mask", "label", "target"} & set(s) for s in target_train)


# ------------------------------------------------------------------------------- the spec


def test_spec_normalises_names_and_validates() -> None:
    spec = SplitSpec("leave-events-out", source=(130, "118"), target=321, groups={"a": [1, "2"]})
    assert spec.source == ("130", "118") and spec.target == ("321",)
    assert spec.groups == {"a": ["1", "2"]}
    same = SplitSpec("leave-events-out", ("130", "118"), ("321",), groups={"a": ["1", "2"]})
    assert hash(spec) == hash(same) and spec == same and len({spec, same, SplitSpec()}) == 2
    assert spec.validate() is spec
    assert SplitSpec().validate().protocol == "none"
    bad: list[tuple[SplitSpec, str]] = [
        (SplitSpec("leave-regions-out", source=("temperate",)), "split.target is empty"),
        (SplitSpec("leave-events-out", ("1", "2"), ("2",)), "share 2"),
        (SplitSpec("leave-events-out", (), ("2",), unlabelled_fraction=1.0), r"\(0, 1\)"),
        (SplitSpec("cross-sensor", ("s2", "s1"), ("landsat-8",)), "one source and one target"),
        (SplitSpec("leave-regions-out", (), ("boreal",)), "split.source is empty"),
        (SplitSpec("leave-regions-out", ("a",), ("b",), groups={"g": ["a"]}), "groups applies"),
        (SplitSpec("none", target=("b",)), "need a split.protocol"),
        (SplitSpec("leave-everything-out", (), ("b",)), "expected one of"),  # type: ignore[arg-type]
    ]
    for spec, match in bad:
        with pytest.raises(UserInputError, match=match) as exc:
            spec.validate()
        _one_line(exc)


def test_strip_labels_and_wrappers() -> None:
    sample = {
        "image": torch.zeros(2, 4, 4),
        "mask": torch.zeros(4, 4, dtype=torch.int64),
        "mask_clean": torch.zeros(4, 4, dtype=torch.int64),
        "label": 1,
        "labels": torch.ones(9),
        "target": torch.zeros(1, 4, 4),
        "caption": "fields",
        "lon": 1.0,
    }
    assert set(strip_labels(sample)) == {"image", "lon"}
    assert "mask" in sample  # the input is untouched
    base = [sample, {**sample, "lon": 2.0}]
    stamped = WithDomain(base, "boreal")  # type: ignore[arg-type]
    assert len(stamped) == 2 and stamped[1]["domain"] == "boreal" and stamped[1]["lon"] == 2.0
    assert "domain" not in base[1]
    bare = Unlabelled(stamped)
    assert len(bare) == 2 and set(bare[0]) == {"image", "lon", "domain"}


def test_protocol_the_reader_cannot_do(tmp_path: Path) -> None:
    cases = [
        ("eurosat-ms", SplitSpec("cross-sensor", ("s2",), ("s1",)), "needs reader synthetic"),
        ("kurosiwo", SplitSpec("leave-countries-out", (), ("Austria",)), "needs reader big"),
        ("synthetic", SplitSpec("leave-events-out", (), ("321",)), "needs reader kurosiwo"),
        ("kurosiwo", SplitSpec(), "protocol none keeps the reader's own splits"),
    ]
    for reader, spec, match in cases:
        with pytest.raises(UserInputError, match=match) as exc:
            open_domain_splits(reader, tmp_path, {}, SPLITS, spec, log=lambda _: None)
        _one_line(exc)
    with pytest.raises(UserInputError, match="reader kurosiwo has no option 'sensor'") as exc:
        open_domain_splits(
            "kurosiwo",
            tmp_path,
            {"sensor": "s1"},
            SPLITS,
            SplitSpec("leave-events-out", target=("321",)),
            log=lambda _: None,
        )
    _one_line(exc)


# ------------------------------------------------------------------- Kuro Siwo: leave events out

EVENTS = (130, 118, 514, 321, 561)


@pytest.fixture(scope="module")
def kurosiwo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kurosiwo_domains")
    _fake("kurosiwo").make_fake_kurosiwo(root, n_tiles_per_event=4, events=EVENTS, size=8)
    return root


def _tiles(dataset: Dataset[dict[str, Any]] | None) -> set[tuple[int, str]]:
    return {(s["actid"], s["tile"]) for s in _samples(dataset)}


def test_leave_events_out_has_no_event_in_source_and_target(kurosiwo_root: Path) -> None:
    lines: list[str] = []
    spec = SplitSpec("leave-events-out", target=("321",), oracle=True)
    splits = open_domain_splits("kurosiwo", kurosiwo_root, {}, SPLITS, spec, log=lines.append)
    _check_common(splits)
    assert splits.source_domains == ("118", "130", "514", "561")  # every other event
    assert splits.target_domains == ("321",)
    source = _tiles(splits.train) | _tiles(splits.val)
    assert {actid for actid, _ in source} == {118, 130, 514, 561}
    test = _tiles(splits.test["321"])
    unlabelled = _tiles(splits.unlabelled)
    assert {a for a, _ in test} == {a for a, _ in unlabelled} == {321}
    assert len(test) == len(unlabelled) == 2  # unlabelled_fraction 0.5 of 4 tiles
    assert not test & unlabelled
    assert _tiles(splits.target_train) == unlabelled  # the oracle's labelled target data
    # each source domain's own test tiles, disjoint from its training and validation tiles
    for event in ("118", "130", "514", "561"):
        own = _tiles(splits.test[event])
        assert len(own) == 1 and not own & source
    assert not _tiles(splits.train) & _tiles(splits.val)
    assert len(lines) == 1 and "321: 2 test" in lines[0]
    # deterministic: the same tiles every time
    again = open_domain_splits("kurosiwo", kurosiwo_root, {}, SPLITS, spec, log=lambda _: None)
    assert _tiles(again.test["321"]) == test


def test_leave_events_out_groups_and_explicit_source(kurosiwo_root: Path) -> None:
    spec = SplitSpec(
        "leave-events-out",
        source=("europe",),
        target=("asia",),
        groups={"asia": ["321", "561", "9999"], "europe": ["130", "118"]},
        unlabelled_fraction=0.25,
    )
    lines: list[str] = []
    splits = open_domain_splits("kurosiwo", kurosiwo_root, {}, SPLITS, spec, log=lines.append)
    _check_common(splits)
    assert "group asia: no samples of Kuro Siwo event (activation id) 9999" in lines[0]
    assert {a for a, _ in _tiles(splits.train) | _tiles(splits.val)} == {118, 130}
    test, unlabelled = _tiles(splits.test["asia"]), _tiles(splits.unlabelled)
    assert {a for a, _ in test | unlabelled} == {321, 561}
    assert len(unlabelled) == 2 and len(test) == 6 and not test & unlabelled
    assert list(splits.test) == ["asia", "europe"]  # 514 is in no role
    assert all(s["domain"] == "asia" for s in _samples(splits.target_train))
    # the reader's own event choice still applies
    only = open_domain_splits(
        "kurosiwo",
        kurosiwo_root,
        {"exclude_events": [514]},
        SPLITS,
        SplitSpec("leave-events-out", target=("561",)),
        log=lambda _: None,
    )
    assert only.source_domains == ("118", "130", "321")


def test_leave_events_out_bad_domains(kurosiwo_root: Path) -> None:
    cases = [
        (SplitSpec("leave-events-out", target=("999",)), "available: 118, 130, 321, 514, 561"),
        (SplitSpec("leave-events-out", ("777",), ("321",)), "split.source names 777"),
        (SplitSpec("leave-events-out", target=EVENTS), "leave at least one for the source"),
        (
            SplitSpec("leave-events-out", target=("a",), groups={"a": ["321"], "b": ["321"]}),
            "321 is in both a and b",
        ),
    ]
    for spec, match in cases:
        with pytest.raises(UserInputError, match=match) as exc:
            open_domain_splits("kurosiwo", kurosiwo_root, {}, SPLITS, spec, log=lambda _: None)
        _one_line(exc)


# ------------------------------------------------------------ BigEarthNet v2: leave countries out

#: country -> number of patches written
COUNTRIES = {"Austria": 4, "Portugal": 4, "Finland": 3}


def _make_v2(root: Path) -> list[dict[str, Any]]:
    """reBEN's layout: BigEarthNet-S2/<tile>/<patch>/, BigEarthNet-S1/<product>/<s1>/, parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    rows = []
    i = 0
    for country, count in COUNTRIES.items():
        for _ in range(count):
            patch_id = f"S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_{10 + i}_{20 + i}"
            s1_name = f"S1A_IW_GRDH_1SDV_20170613T165043_33UUP_{10 + i}_{20 + i}"
            transform = affine.Affine(10, 0, 400000 + 60 * i, 0, -10, 5300000)
            s2 = {
                b: rng.integers(0, 3000, (6 * 10 // r,) * 2, dtype=np.uint16)
                for b, r in zip(
                    S2_BANDS, (60, 10, 10, 10, 20, 20, 20, 10, 20, 60, 20, 20), strict=True
                )
            }
            write_bigearthnet_v1_patch(
                root / "BigEarthNet-S2" / patch_id.rsplit("_", 2)[0],
                patch_id,
                bands=s2,
                labels=[],
                transform=transform,
                crs="EPSG:32633",
                acquisition_date="2017-06-13 10:10:31",
            )
            write_bigearthnet_v1_patch(
                root / "BigEarthNet-S1" / s1_name.rsplit("_", 3)[0],
                s1_name,
                bands={b: np.full((6, 6), -10.0, np.float32) for b in S1_BANDS},
                labels=[],
                transform=transform,
                crs="EPSG:32633",
                acquisition_date="2017-06-13 16:50:43",
            )
            rows.append(
                {
                    "patch_id": patch_id,
                    "labels": ["Arable land"] if i % 2 else ["Coniferous forest"],
                    "split": ("train", "validation", "test")[i % 3],
                    "country": country,
                    "s1_name": s1_name,
                    "s2v1_name": "",
                    "contains_seasonal_snow": False,
                    "contains_cloud_or_shadow": False,
                }
            )
            i += 1
    schema = pa.schema(
        [
            ("patch_id", pa.string()),
            ("labels", pa.list_(pa.string())),
            ("split", pa.string()),
            ("country", pa.string()),
            ("s1_name", pa.string()),
            ("s2v1_name", pa.string()),
            ("contains_seasonal_snow", pa.bool_()),
            ("contains_cloud_or_shadow", pa.bool_()),
        ]
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), root / "metadata.parquet")
    return rows


@pytest.fixture(scope="module")
def reben_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    pytest.importorskip("pyarrow")
    root = tmp_path_factory.mktemp("reben_domains")
    return root, _make_v2(root)


def test_bigearthnet_v2_countries_without_reading_images(
    reben_root: tuple[Path, list[dict[str, Any]]],
) -> None:
    root, rows = reben_root
    ds = BigEarthNet(root, version=2)
    assert ds.countries == ("Austria", "Finland", "Portugal")
    assert ds.patch_countries == [r["country"] for r in rows]
    assert ds[5]["country"] == "Portugal"
    finland = BigEarthNet(root, version=2, countries=["Finland"])
    assert finland.names == [r["patch_id"] for r in rows if r["country"] == "Finland"]
    s1 = BigEarthNet(root, version=2, sensor="s1", split="train", countries="Austria")
    assert s1.patch_countries == ["Austria", "Austria"] and s1[0]["country"] == "Austria"
    with pytest.raises(UserInputError, match="no patches of Norway; its countries: Austria") as e:
        BigEarthNet(root, version=2, countries=["Norway"])
    _one_line(e)


def test_bigearthnet_v1_has_no_countries(tmp_path: Path) -> None:
    _fake("bigearthnet").make_fake_bigearthnet_v1(tmp_path, n=3, sensor="s2")
    with pytest.raises(UserInputError, match="v2's country metadata") as exc:
        BigEarthNet(tmp_path, countries=["Austria"])
    _one_line(exc)
    assert BigEarthNet(tmp_path).patch_countries == [None, None, None]
    spec = SplitSpec("leave-countries-out", target=("Austria",))
    with pytest.raises(UserInputError, match="needs BigEarthNet v2's country metadata") as exc:
        open_domain_splits("bigearthnet", tmp_path, {}, SPLITS, spec, log=lambda _: None)
    _one_line(exc)


def test_leave_countries_out_has_no_country_in_source_and_target(
    reben_root: tuple[Path, list[dict[str, Any]]],
) -> None:
    root, rows = reben_root
    country = {r["patch_id"]: r["country"] for r in rows}
    spec = SplitSpec("leave-countries-out", source=("Austria", "Portugal"), target=("Finland",))
    splits = open_domain_splits("bigearthnet", root, {}, SPLITS, spec, log=lambda _: None)
    _check_common(splits)

    def names(dataset: Dataset[dict[str, Any]] | None) -> set[str]:
        return {s["name"] for s in _samples(dataset)}

    source = names(splits.train) | names(splits.val)
    assert {country[n] for n in source} == {"Austria", "Portugal"}
    test, unlabelled = names(splits.test["Finland"]), names(splits.unlabelled)
    assert {country[n] for n in test | unlabelled} == {"Finland"}
    assert len(test) + len(unlabelled) == 3 and test and unlabelled and not test & unlabelled
    assert names(splits.target_train) == unlabelled
    assert all(s["country"] == s["domain"] for s in _samples(splits.test["Finland"]))
    assert list(splits.test) == ["Finland", "Austria", "Portugal"]
    for name in ("Austria", "Portugal"):
        assert not names(splits.test[name]) & source
    with pytest.raises(UserInputError, match="available: Austria, Finland, Portugal") as exc:
        open_domain_splits(
            "bigearthnet",
            root,
            {},
            SPLITS,
            SplitSpec("leave-countries-out", target=("Norway",)),
            log=lambda _: None,
        )
    _one_line(exc)


def test_cross_sensor_bigearthnet_v2_same_ground(
    reben_root: tuple[Path, list[dict[str, Any]]],
) -> None:
    root, rows = reben_root
    ground = {r["patch_id"]: i for i, r in enumerate(rows)}
    ground.update({r["s1_name"]: i for i, r in enumerate(rows)})
    split_of = {i: r["split"] for i, r in enumerate(rows)}
    spec = SplitSpec("cross-sensor", ("s2",), ("s1",))
    splits = open_domain_splits("bigearthnet", root, {}, SPLITS, spec, log=lambda _: None)
    _check_common(splits)
    assert splits.target_domains == ("sentinel-1-grd",)
    train = {ground[s["name"]] for s in _samples(splits.train)}
    test = {ground[s["name"]] for s in _samples(splits.test["sentinel-1-grd"])}
    unlabelled = {ground[s["name"]] for s in _samples(splits.unlabelled)}
    assert {split_of[g] for g in test} == {"test"} and not test & (train | unlabelled)
    assert unlabelled == train  # the same ground, seen by the other sensor
    assert {s["sensor"] for s in _samples(splits.unlabelled)} == {"sentinel-1-grd"}
    assert {s["sensor"] for s in _samples(splits.train)} == {"sentinel-2-l2a"}


# ------------------------------------------------------------------- Sen1Floods11: cross-sensor


def test_cross_sensor_sen1floods11_s2_to_s1(tmp_path: Path) -> None:
    fake = _fake("sen1floods11")
    fake.make_fake_sen1floods11(tmp_path)
    spec = SplitSpec("cross-sensor", ("sentinel-2-l1c",), ("s1",))
    splits = open_domain_splits("sen1floods11", tmp_path, {}, SPLITS, spec, log=lambda _: None)
    _check_common(splits)
    chips = {
        split: {c for c, v in fake.CHIPS.items() if v[0] == split} for split in SPLITS.__dict__
    }
    assert {s["chip"] for s in _samples(splits.train)} == chips["train"]
    assert {s["chip"] for s in _samples(splits.val)} == chips["val"]
    target_test = _samples(splits.test["sentinel-1-grd"])
    assert {s["chip"] for s in target_test} == chips["test"]
    assert {s["chip"] for s in _samples(splits.unlabelled)} == chips["train"]
    assert target_test[0]["bands"] == ("VV", "VH") and target_test[0]["units"] == "db"
    source_test = _samples(splits.test["sentinel-2-l1c"])
    assert [s["chip"] for s in source_test] == [s["chip"] for s in target_test]  # same ground
    bad = [
        (SplitSpec("cross-sensor", ("s2",), ("s1",)), "no sensor sentinel-2-l2a"),
        (SplitSpec("cross-sensor", ("s1",), ("landsat-8",)), "no sensor landsat-8-9"),
        (SplitSpec("cross-sensor", ("s1",), ("sentinel-1",)), "the same sensor"),
        (SplitSpec("cross-sensor", ("s1",), ("modis",)), "cross-sensor: unknown sensor"),
    ]
    for spec, match in bad:
        with pytest.raises(UserInputError, match=match) as exc:
            open_domain_splits("sen1floods11", tmp_path, {}, SPLITS, spec, log=lambda _: None)
        _one_line(exc)
    with pytest.raises(UserInputError, match=r"drop options\.bands") as exc:
        open_domain_splits(
            "sen1floods11",
            tmp_path,
            {"bands": ["VV"]},
            SPLITS,
            SplitSpec("cross-sensor", ("s2",), ("s1",)),
            log=lambda _: None,
        )
    _one_line(exc)


# ------------------------------------------------------------------------------ real patches


def test_cross_sensor_on_real_bigearthnet_patches(tmp_path: Path) -> None:
    """Real BigEarthNet v1 S2 and S1 patches of the same ground, split by the official CSVs."""
    real = REALDATA / "bigearthnet-v1"
    if not (real / "S1").is_dir() or not (real / "S2").is_dir():
        pytest.skip(f"real BigEarthNet patches not found at {real} (shared/realdata is absent)")
    pairs = []
    for folder in sorted((real / "S1").iterdir()):
        meta = json.loads((folder / f"{folder.name}_labels_metadata.json").read_text())
        if (real / "S2" / meta["corresponding_s2_patch"]).is_dir():
            pairs.append((meta["corresponding_s2_patch"], folder.name))
    assert len(pairs) >= 3
    # a root of links to the real patch folders (nothing copied) and BigEarthNet-MM's S2,S1 CSVs
    for sensor in ("S2", "S1"):
        (tmp_path / sensor).mkdir()
        for folder in (real / sensor).iterdir():
            (tmp_path / sensor / folder.name).symlink_to(folder, target_is_directory=True)
    for split, (s2, s1) in zip(("train", "val", "test"), pairs, strict=False):
        (tmp_path / f"{split}.csv").write_text(f"{s2},{s1}\n")
    spec = SplitSpec("cross-sensor", ("sentinel-2-l2a",), ("sentinel-1-grd",), oracle=True)
    splits = open_domain_splits("bigearthnet", tmp_path, {}, SPLITS, spec, log=lambda _: None)
    _check_common(splits)
    (train,) = _samples(splits.train)
    (target,) = _samples(splits.test["sentinel-1-grd"])
    (source,) = _samples(splits.test["sentinel-2-l2a"])
    (unlabelled,) = _samples(splits.unlabelled)
    assert (train["name"], unlabelled["name"]) == pairs[0]
    assert (source["name"], target["name"]) == pairs[2]
    assert target["image"].shape[0] == 2 and source["image"].shape[0] == 12
    assert torch.equal(target["label"], source["label"])  # one ground, one CORINE label
    assert abs(target["lon"] - source["lon"]) < 0.01 and abs(target["lat"] - source["lat"]) < 0.01


# ----------------------------------------------------------------------- the synthetic world


def _streams(dataset: Any) -> set[str]:
    return {leaf.split for leaf in _leaves(dataset)}


SYNTHETIC = {"task": "multilabel", "n": {"train": 3, "val": 2, "test": 2}, "size": 16}


def test_leave_regions_out_biomes() -> None:
    spec = SplitSpec("leave-regions-out", ("temperate",), ("boreal", "arid"), oracle=True)
    options = {**SYNTHETIC, "world": {"season": "summer"}}
    splits = open_domain_splits("synthetic", None, options, SPLITS, spec, log=lambda _: None)
    _check_common(splits)
    assert list(splits.test) == ["boreal", "arid", "temperate"]
    assert _streams(splits.train) == {"train"} and _streams(splits.val) == {"val"}
    for name in ("boreal", "arid", "temperate"):
        assert _streams(splits.test[name]) == {"test"}
    # unlabelled target scenes come from the target's train stream: never a test scene
    assert _streams(splits.unlabelled) == _streams(splits.target_train) == {"train"}
    worlds = {leaf.config.biome for leaf in _leaves(splits.unlabelled)}
    assert worlds == {"boreal", "arid"}
    assert {leaf.config.season for leaf in _leaves(splits.unlabelled)} == {"summer"}
    assert {leaf.config.biome for leaf in _leaves(splits.train)} == {"temperate"}
    assert len(splits.unlabelled) == 6  # type: ignore[arg-type]
    # the target really differs: its test images are not the source's
    boreal, temperate = splits.test["boreal"][0], splits.test["temperate"][0]
    assert not torch.equal(boreal["image"], temperate["image"])


def test_leave_regions_out_flood_types_and_bad_domains() -> None:
    options = {"task": "flood", "sensor": "s1", "n": {"train": 2, "val": 1, "test": 1}, "size": 16}
    spec = SplitSpec("leave-regions-out", ("rural",), ("urban",))
    splits = open_domain_splits("synthetic", None, options, SPLITS, spec, log=lambda _: None)
    _check_common(splits)
    assert {leaf.config.flood_type for leaf in _leaves(splits.test["urban"])} == {"urban"}
    assert {leaf.config.flood_type for leaf in _leaves(splits.train)} == {"rural"}
    with pytest.raises(UserInputError, match="available: temperate, boreal") as exc:
        open_domain_splits(
            "synthetic",
            None,
            options,
            SPLITS,
            SplitSpec("leave-regions-out", ("temperate",), ("atlantis",)),
            log=lambda _: None,
        )
    _one_line(exc)


def test_cross_sensor_synthetic_same_ground() -> None:
    for source, target in (("s2", "landsat-8"), ("sentinel-2-l1c", "sentinel-2-l2a")):
        spec = SplitSpec("cross-sensor", (source,), (target,))
        splits = open_domain_splits("synthetic", None, SYNTHETIC, SPLITS, spec, log=lambda _: None)
        _check_common(splits)
        (target_name,) = splits.target_domains
        assert _streams(splits.test[target_name]) == {"test"}
        assert _streams(splits.unlabelled) == {"train"}
        src = _samples(splits.test[splits.source_domains[0]])
        tgt = _samples(splits.test[target_name])
        assert {s["sensor"] for s in tgt} == {target_name}
        for a, b in zip(src, tgt, strict=True):  # the same scenes seen by two sensors
            assert (a["lon"], a["lat"]) == (b["lon"], b["lat"])
            assert torch.equal(a["labels"], b["labels"])
    with pytest.raises(UserInputError, match="synthetic world has no sentinel-1-slc") as exc:
        open_domain_splits(
            "synthetic",
            None,
            SYNTHETIC,
            SPLITS,
            SplitSpec("cross-sensor", ("s2",), ("sentinel-1-slc",)),
            log=lambda _: None,
        )
    _one_line(exc)
