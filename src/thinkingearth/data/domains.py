"""Split protocols that measure domain shift: source domains to train on, target domains to test.

A *domain* is a named part of a data set whose samples differ systematically from the others:
an event (or a group of events) of Kuro Siwo, a country of BigEarthNet v2, a biome or flood type
of the synthetic world, or a sensor. :func:`open_domain_splits` turns a reader and a
:class:`SplitSpec` into :class:`DomainSplits`: labelled source training and validation data,
labelled test data per domain, and the target's samples *without* labels for adaptation. No
domain is in both source and target, and no target test sample is given to adaptation.

Protocols:

* ``leave-events-out`` (reader ``kurosiwo``): domains are activation ids (as text) or the names
  of ``groups`` (e.g. a continent -> its activation ids). Every event on disk is pooled (the
  reader options ``events``/``exclude_events`` still choose which) and partitioned by event;
* ``leave-countries-out`` (reader ``bigearthnet``, version 2): domains are the ``country`` values
  of reBEN's ``metadata.parquet`` (or ``groups`` of them); pooled and partitioned by country;
* ``leave-regions-out`` (reader ``synthetic``): domains are biomes
  (:data:`thinkingearth.data.synthetic.BIOMES`) or flood types (``rural``, ``urban``); each
  domain is the synthetic world with the reader option ``world`` plus that biome or flood
  type. Source train/val come from the train/val scene streams, the target's test from the test
  stream and its unlabelled samples from its train stream (other scenes);
* ``cross-sensor`` (readers ``synthetic``, ``sen1floods11``, ``bigearthnet``): one source and
  one target registry sensor name (aliases accepted) seeing the same ground; the reader's
  ``sensor`` option is set per domain (synthetic: the registry name; Sen1Floods11 and
  BigEarthNet: ``s1``/``s2``). The published splits (synthetic: scene streams) keep the ground
  of the test split out of training in either sensor.

Pooled protocols (events, countries) hold out samples per domain with a fixed generator (the
same for every run seed): of each target domain, ``unlabelled_fraction`` goes to adaptation
without labels (and, with labels, to the oracle's training) and the rest is its test set; of each
source domain with at least 3 samples, ``val_fraction`` is its validation share and as much again
its test share (the source's in-distribution score), the rest its training data. The split
protocols (regions, sensors) use the reader's splits instead, so ``unlabelled_fraction`` does not
apply to them.

Every sample of a :class:`DomainSplits` carries ``domain`` (its domain's name).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from thinkingearth.data.readers import open_split, reader_options
from thinkingearth.errors import UserInputError

__all__ = [
    "FLOOD_TYPES",
    "LABEL_KEYS",
    "PROTOCOLS",
    "DomainSplits",
    "SplitProtocol",
    "SplitSpec",
    "Unlabelled",
    "WithDomain",
    "open_domain_splits",
    "strip_labels",
]

SplitProtocol = Literal[
    "none", "leave-events-out", "leave-countries-out", "leave-regions-out", "cross-sensor"
]
PROTOCOLS: tuple[str, ...] = get_args(SplitProtocol)

#: The synthetic world's flood types that are domains of ``leave-regions-out`` (``any`` is the
#: world's default mix, not a domain).
FLOOD_TYPES: tuple[str, ...] = ("rural", "urban")

#: Sample keys that hold labels (or give them away): :func:`strip_labels` drops them, and every
#: key ending in ``_clean`` (the clean labels kept beside noisy ones). ``labels`` is the
#: synthetic world's multi-hot land cover, ``caption(s)`` describe the labels in words.
LABEL_KEYS: tuple[str, ...] = ("mask", "label", "labels", "target", "caption", "captions")

# The readers each protocol works on.
_PROTOCOL_READERS: Mapping[str, tuple[str, ...]] = {
    "leave-events-out": ("kurosiwo",),
    "leave-countries-out": ("bigearthnet",),
    "leave-regions-out": ("synthetic",),
    "cross-sensor": ("synthetic", "sen1floods11", "bigearthnet"),
}
# Registry sensor name -> the reader's ``sensor`` option, for the real readers.
_READER_SENSORS: Mapping[str, Mapping[str, str]] = {
    "sen1floods11": {"sentinel-1-grd": "s1", "sentinel-2-l1c": "s2"},
    "bigearthnet": {"sentinel-1-grd": "s1", "sentinel-2-l2a": "s2"},
}
_POOLED = ("leave-events-out", "leave-countries-out")


def _names(values: Any, what: str) -> tuple[str, ...]:
    """Domain names as text: one name or a list; activation ids may be integers."""
    if values is None:
        return ()
    if isinstance(values, str | int) and not isinstance(values, bool):
        values = (values,)
    out: list[str] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise UserInputError(f"{what} must hold domain names, got {value!r}")
        name = str(value).strip()
        if not name:
            raise UserInputError(f"{what} holds an empty domain name")
        if name not in out:
            out.append(name)
    return tuple(out)


@dataclass(frozen=True)
class SplitSpec:
    """The ``split:`` section of finetune and bench configs: which domains train, which test.

    Attributes:
        protocol: How domains are made (see the module); ``none`` keeps the reader's splits.
        source: Source domain names (labelled training). Empty for a pooled protocol
            (``leave-events-out``, ``leave-countries-out``): every domain that is not a target.
        target: Target domain names (tested; their unlabelled samples feed adaptation).
            Activation ids may be written as numbers; they are kept as text.
        groups: Optional named groups of domains (pooled protocols), e.g. ``{"asia": ["321",
            "561"]}``; a group name is then a domain of its own.
        oracle: Also train on the target domains' labelled training samples and report the
            gap (finetune).
        unlabelled_fraction: Share of each target domain's samples given, without labels, to
            adaptation (pooled protocols); the rest is the target's labelled test set.
    """

    protocol: SplitProtocol = "none"
    source: tuple[str, ...] = ()
    target: tuple[str, ...] = ()
    groups: dict[str, list[str]] = field(default_factory=dict)
    oracle: bool = False
    unlabelled_fraction: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", _names(self.source, "split.source"))
        object.__setattr__(self, "target", _names(self.target, "split.target"))
        if not isinstance(self.groups, Mapping):
            raise UserInputError(f"split.groups is {self.groups!r}; expected a mapping")
        object.__setattr__(
            self,
            "groups",
            {str(k): list(_names(v, f"split.groups.{k}")) for k, v in self.groups.items()},
        )

    def __hash__(self) -> int:
        # frozen, but ``groups`` is a dict: hash its items so specs can be keys (bench tasks)
        groups = tuple((k, tuple(v)) for k, v in sorted(self.groups.items()))
        return hash(
            (self.protocol, self.source, self.target, groups, self.oracle, self.unlabelled_fraction)
        )

    def validate(self) -> SplitSpec:
        """Check the values that do not depend on the data; returns ``self``.

        Raises:
            UserInputError: One line naming the bad value.
        """
        if self.protocol not in PROTOCOLS:
            raise UserInputError(
                f"split.protocol is {self.protocol!r}; expected one of: {', '.join(PROTOCOLS)}"
            )
        if not isinstance(self.oracle, bool):
            raise UserInputError(f"split.oracle is {self.oracle!r}; expected true or false")
        fraction = self.unlabelled_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise UserInputError(f"split.unlabelled_fraction is {fraction!r}; expected a number")
        if not 0.0 < fraction < 1.0:
            raise UserInputError(f"split.unlabelled_fraction must be in (0, 1), got {fraction}")
        if self.protocol == "none":
            if self.source or self.target or self.groups or self.oracle:
                raise UserInputError(
                    "split.source, target, groups and oracle need a split.protocol "
                    f"({', '.join(PROTOCOLS[1:])})"
                )
            return self
        if not self.target:
            raise UserInputError(
                f"split.target is empty: protocol {self.protocol} needs the target domain(s) "
                "to test on"
            )
        shared = [name for name in self.source if name in self.target]
        if shared:
            raise UserInputError(
                f"split.source and split.target share {', '.join(shared)}; a domain is either "
                "source or target"
            )
        if self.groups and self.protocol not in _POOLED:
            raise UserInputError(
                f"split.groups applies to {' and '.join(_POOLED)}, not {self.protocol}"
            )
        if self.protocol in ("leave-regions-out", "cross-sensor") and not self.source:
            raise UserInputError(
                f"split.source is empty: protocol {self.protocol} needs the source domain(s)"
            )
        if self.protocol == "cross-sensor" and (len(self.source) != 1 or len(self.target) != 1):
            raise UserInputError(
                "protocol cross-sensor takes one source and one target sensor, got source "
                f"{', '.join(self.source)} and target {', '.join(self.target)}"
            )
        return self


@dataclass
class DomainSplits:
    """The data of one split protocol (every sample carries ``domain``).

    Attributes:
        train: Source samples, labelled.
        val: Source validation samples (model selection without target labels).
        val_source: How ``val`` was made, for the report.
        test: Domain -> its labelled test samples: the target domains first, then the source
            domains' own test samples.
        unlabelled: Target samples without label keys (:func:`strip_labels`), disjoint from the
            target test samples; ``None`` for protocol ``none``.
        source_domains: The source domain names.
        target_domains: The target domain names.
        protocol: The protocol's name.
        target_train: The target samples of ``unlabelled`` with their labels (the oracle's
            training data), disjoint from the target test samples.
    """

    train: Dataset[dict[str, Any]]
    val: Dataset[dict[str, Any]]
    val_source: str
    test: dict[str, Dataset[dict[str, Any]]]
    unlabelled: Dataset[dict[str, Any]] | None
    source_domains: tuple[str, ...]
    target_domains: tuple[str, ...]
    protocol: str
    target_train: Dataset[dict[str, Any]] | None = None


class _SplitNamesLike(Protocol):
    """The reader's split names (``tasks.finetune_config.SplitNames`` has them)."""

    @property
    def train(self) -> str: ...

    @property
    def val(self) -> str | None: ...

    @property
    def test(self) -> str: ...


def strip_labels(sample: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``sample`` without its labels (:data:`LABEL_KEYS` and ``*_clean`` keys)."""
    return {
        key: value
        for key, value in sample.items()
        if key not in LABEL_KEYS and not key.endswith("_clean")
    }


class WithDomain(Dataset[dict[str, Any]]):
    """A dataset whose Samples carry ``domain`` = ``name``.

    Args:
        dataset: The Samples.
        name: The domain's name.
    """

    def __init__(self, dataset: Dataset[dict[str, Any]], name: str) -> None:
        self.dataset = dataset
        self.name = str(name)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = dict(self.dataset[index])
        sample["domain"] = self.name
        return sample


class Unlabelled(Dataset[dict[str, Any]]):
    """A dataset whose Samples have no labels (:func:`strip_labels`), for adaptation."""

    def __init__(self, dataset: Dataset[dict[str, Any]]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return strip_labels(self.dataset[index])


def _size(dataset: Dataset[Any]) -> int:
    return len(dataset)  # type: ignore[arg-type]


def _concat(parts: Sequence[Dataset[dict[str, Any]]]) -> Dataset[dict[str, Any]]:
    return parts[0] if len(parts) == 1 else ConcatDataset(list(parts))


def _check_known(spec: SplitSpec, available: Sequence[str], what: str) -> None:
    """Every named domain is one the data has (one line listing the available ones)."""
    for role, names in (("target", spec.target), ("source", spec.source)):
        unknown = [n for n in names if n not in available]
        if unknown:
            raise UserInputError(
                f"split.{role} names {', '.join(unknown)}, which {what} does not have; "
                f"available: {', '.join(available) or 'none'}"
            )


def _shuffled(indices: Sequence[int], domain: str) -> list[int]:
    """``indices`` in a fixed random order per domain (the same for every run seed)."""
    generator = torch.Generator().manual_seed(zlib.crc32(domain.encode("utf-8")))
    order = torch.randperm(len(indices), generator=generator).tolist()
    return [indices[i] for i in order]


def open_domain_splits(
    reader: str,
    root: str | Path | None,
    options: Mapping[str, Any] | None,
    splits: _SplitNamesLike,
    spec: SplitSpec,
    val_fraction: float = 0.1,
    log: Callable[[str], None] = print,
) -> DomainSplits:
    """Open a reader's data as source and target domains under a split protocol.

    Args:
        reader: A reader of :mod:`thinkingearth.data.readers`.
        root: Its data root (not used by ``synthetic``).
        options: The reader's options (``sensor`` is set per domain by ``cross-sensor``).
        splits: The reader's split names (``train``, ``val`` or ``None``, ``test``).
        spec: The split protocol and its domains.
        val_fraction: Share of the source held out for validation where there is no
            validation split (and, pooled protocols, as much again for the source's test).
        log: Where lines about the split go.

    Returns:
        The source, target and test data; every sample carries ``domain``.

    Raises:
        UserInputError: One line: a bad spec, a protocol the reader cannot do, an unknown or
            empty domain (listing the available ones), a sensor the reader lacks.
    """
    spec.validate()
    options = dict(options or {})
    unknown = sorted(set(options) - reader_options(reader))  # an unknown reader, in one line
    if unknown:
        raise UserInputError(
            f"reader {reader} has no option {unknown[0]!r}; expected some of: "
            + ", ".join(sorted(reader_options(reader)))
        )
    if spec.protocol == "none":
        raise UserInputError(
            "split.protocol none keeps the reader's own splits; open_domain_splits needs one of: "
            + ", ".join(PROTOCOLS[1:])
        )
    readers = _PROTOCOL_READERS[spec.protocol]
    if reader not in readers:
        raise UserInputError(
            f"protocol {spec.protocol} needs reader {' or '.join(readers)}, not {reader}"
        )
    if not 0.0 < val_fraction < 1.0:
        raise UserInputError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if spec.protocol == "leave-regions-out":
        result = _regions(options, splits, spec, val_fraction, log)
    elif spec.protocol == "cross-sensor":
        result = _cross_sensor(reader, root, options, splits, spec, val_fraction, log)
    else:
        result = _pooled(reader, root, options, spec, val_fraction, log)
    log(
        f"[split] {spec.protocol}: source {', '.join(result.source_domains)} "
        f"({_size(result.train)} train, {_size(result.val)} val) -> target "
        f"{', '.join(result.target_domains)} ("
        + ", ".join(f"{d}: {_size(result.test[d])} test" for d in result.target_domains)
        + f"; {_size(result.unlabelled) if result.unlabelled is not None else 0} unlabelled)"
    )
    return result


# ----------------------------------------------------------------------- split-based protocols


def _validation(
    open_one: Callable[[str], Dataset[dict[str, Any]]],
    train: Dataset[dict[str, Any]],
    splits: _SplitNamesLike,
    val_fraction: float,
    where: str,
) -> tuple[Dataset[dict[str, Any]], Dataset[dict[str, Any]], str]:
    """(train, val, how) for one source domain: its validation split, else a hold-out."""
    reason = "data.splits.val is null"
    if splits.val is not None:
        try:
            val = open_one(splits.val)
            if _size(val) > 0:
                return train, val, f"split {splits.val}"
            reason = f"split {splits.val} has no samples"
        except UserInputError as error:
            reason = str(error)
    n = _size(train)
    if n < 2:
        raise UserInputError(
            f"split {splits.train} of {where} has {n} sample(s); a validation hold-out needs 2"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    k = min(n - 1, max(1, round(val_fraction * n)))
    how = f"{val_fraction:.0%} of split {splits.train} held out, because {reason}"
    return Subset(train, sorted(order[k:])), Subset(train, sorted(order[:k])), how


def _assemble(
    sources: Sequence[str],
    targets: Sequence[str],
    open_domain: Callable[[str, str], Dataset[dict[str, Any]]],
    splits: _SplitNamesLike,
    val_fraction: float,
    describe: Callable[[str], str],
    protocol: str,
) -> DomainSplits:
    """DomainSplits from per-domain splits: ``open_domain(domain, split)``."""
    train_parts, val_parts, hows = [], [], set()
    test: dict[str, Dataset[dict[str, Any]]] = {}
    for name in sources:
        train = open_domain(name, splits.train)
        train, val, how = _validation(
            lambda split, name=name: open_domain(name, split),
            train,
            splits,
            val_fraction,
            describe(name),
        )
        train_parts.append(WithDomain(train, name))
        val_parts.append(WithDomain(val, name))
        hows.add(how)
    unlabelled_parts, target_train_parts = [], []
    for name in targets:
        test[name] = WithDomain(open_domain(name, splits.test), name)
        pool = WithDomain(open_domain(name, splits.train), name)
        unlabelled_parts.append(Unlabelled(pool))
        target_train_parts.append(pool)
    for name in sources:
        test[name] = WithDomain(open_domain(name, splits.test), name)
    for name, dataset in test.items():
        if _size(dataset) == 0:
            raise UserInputError(f"split {splits.test} of {describe(name)} has no samples")
    return DomainSplits(
        train=_concat(train_parts),
        val=_concat(val_parts),
        val_source=f"source validation: {'; '.join(sorted(hows))}",
        test=test,
        unlabelled=_concat(unlabelled_parts),
        source_domains=tuple(sources),
        target_domains=tuple(targets),
        protocol=protocol,
        target_train=_concat(target_train_parts),
    )


def _region_domains() -> tuple[str, ...]:
    from thinkingearth.data.synthetic import BIOMES

    return (*BIOMES, *FLOOD_TYPES)


def _regions(
    options: dict[str, Any],
    splits: _SplitNamesLike,
    spec: SplitSpec,
    val_fraction: float,
    log: Callable[[str], None],
) -> DomainSplits:
    available = _region_domains()
    _check_known(spec, available, "the synthetic world (biomes and flood types)")
    base = options.pop("world", None) or {}
    if not isinstance(base, Mapping):
        raise UserInputError(f"reader synthetic: option world is {base!r}; expected a mapping")

    def open_domain(name: str, split: str) -> Dataset[dict[str, Any]]:
        key = "flood_type" if name in FLOOD_TYPES else "biome"
        world = {**base, key: name}
        return open_split("synthetic", None, split, {**options, "world": world})

    return _assemble(
        spec.source,
        spec.target,
        open_domain,
        splits,
        val_fraction,
        lambda name: f"synthetic domain {name}",
        spec.protocol,
    )


def _cross_sensor(
    reader: str,
    root: str | Path | None,
    options: dict[str, Any],
    splits: _SplitNamesLike,
    spec: SplitSpec,
    val_fraction: float,
    log: Callable[[str], None],
) -> DomainSplits:
    from thinkingearth.sensors import get_sensor

    if "bands" in options:
        raise UserInputError(
            "options.bands names one sensor's bands; cross-sensor reads each sensor's own bands "
            "(drop options.bands)"
        )
    options.pop("sensor", None)
    names: dict[str, str] = {}
    for given in (*spec.source, *spec.target):
        try:
            names[given] = get_sensor(given).name
        except UserInputError as error:
            raise UserInputError(f"cross-sensor: {error}") from None
    source, target = names[spec.source[0]], names[spec.target[0]]
    if source == target:
        raise UserInputError(
            f"cross-sensor source and target are the same sensor {source} "
            f"({spec.source[0]}, {spec.target[0]})"
        )
    if reader == "synthetic":
        from thinkingearth.data.synthetic import SyntheticCopernicus

        def sensor_option(name: str) -> str:
            return name

        for name in (source, target):  # the world's one-line error for a sensor it lacks
            SyntheticCopernicus(**{**options, "sensor": name, "n": 1, "cache": False})
    else:
        known = _READER_SENSORS[reader]
        for name in (source, target):
            if name not in known:
                raise UserInputError(
                    f"reader {reader} has no sensor {name} for cross-sensor; it has "
                    f"{', '.join(known)}"
                )

        def sensor_option(name: str) -> str:
            return known[name]

    def open_domain(name: str, split: str) -> Dataset[dict[str, Any]]:
        return open_split(reader, root, split, {**options, "sensor": sensor_option(name)})

    where = f"reader {reader}" + (f" under {root}" if root else "")
    return _assemble(
        (source,),
        (target,),
        open_domain,
        splits,
        val_fraction,
        lambda name: f"{where} ({name})",
        spec.protocol,
    )


# ------------------------------------------------------------------------------ pooled protocols


def _domain_of_keys(
    keys: Sequence[str], spec: SplitSpec, what: str, log: Callable[[str], None]
) -> list[str]:
    """Each sample's domain: the group its key belongs to, else the key itself."""
    present = set(keys)
    for group, members in spec.groups.items():
        absent = [m for m in members if m not in present]
        if absent:
            log(f"[split] group {group}: no samples of {what} {', '.join(absent)}")
    group_of: dict[str, str] = {}
    for group, members in spec.groups.items():
        if group in keys and group not in members:
            raise UserInputError(f"split.groups: the group name {group} is also a {what}")
        for member in members:
            if member in group_of:
                raise UserInputError(
                    f"split.groups: {what} {member} is in both {group_of[member]} and {group}"
                )
            group_of[member] = group
    return [group_of.get(key, key) for key in keys]


def _pooled(
    reader: str,
    root: str | Path | None,
    options: dict[str, Any],
    spec: SplitSpec,
    val_fraction: float,
    log: Callable[[str], None],
) -> DomainSplits:
    if root is None:
        raise UserInputError(f"reader {reader} reads data from disk: give data.root or --data-root")
    path = Path(root)
    if not path.is_dir():
        raise UserInputError(f"data root {path} is not a folder (reader {reader})")
    dataset: Dataset[dict[str, Any]]
    if reader == "kurosiwo":
        from thinkingearth.data.formats.kurosiwo import KuroSiwo

        kuro = KuroSiwo(path, split=None, **options)
        keys = [str(int(r["actid"])) for r in kuro.records]
        dataset, what = kuro, "Kuro Siwo event (activation id)"
    else:
        from thinkingearth.data.formats.bigearthnet import BigEarthNet
        from thinkingearth.data.readers import bigearthnet_version

        version = options.pop("version", bigearthnet_version(path))
        if version != 2:
            raise UserInputError(
                f"protocol leave-countries-out needs BigEarthNet v2's country metadata "
                f"(metadata.parquet); {path} is BigEarthNet v{version}"
            )
        ben = BigEarthNet(path, split=None, version=2, **options)
        keys = [c or "unknown" for c in ben.patch_countries]
        dataset, what = ben, "BigEarthNet country"
    domains = _domain_of_keys(keys, spec, what, log)
    by_domain: dict[str, list[int]] = {}
    for index, domain in enumerate(domains):
        by_domain.setdefault(domain, []).append(index)
    available = sorted(by_domain, key=lambda d: (not d.isdigit(), int(d) if d.isdigit() else 0, d))
    where = f"reader {reader} under {path}"
    _check_known(spec, available, where)
    targets = spec.target
    sources = spec.source or tuple(d for d in available if d not in targets)
    if not sources:
        raise UserInputError(
            f"split.target takes every domain of {where}; leave at least one for the source "
            f"(available: {', '.join(available)})"
        )

    test: dict[str, Dataset[dict[str, Any]]] = {}
    unlabelled_parts, target_train_parts = [], []
    for name in targets:
        order = _shuffled(by_domain[name], name)
        if len(order) < 2:
            raise UserInputError(
                f"target domain {name} of {where} has {len(order)} sample; it needs at least 2 "
                "(unlabelled and test)"
            )
        k = min(len(order) - 1, max(1, round(spec.unlabelled_fraction * len(order))))
        test[name] = WithDomain(Subset(dataset, sorted(order[k:])), name)
        pool = WithDomain(Subset(dataset, sorted(order[:k])), name)
        unlabelled_parts.append(Unlabelled(pool))
        target_train_parts.append(pool)
    train_parts, val_parts, source_tests = [], [], {}
    for name in sources:
        order = _shuffled(by_domain[name], name)
        k = max(1, round(val_fraction * len(order))) if len(order) >= 3 else 0
        if k:
            val_parts.append(WithDomain(Subset(dataset, sorted(order[:k])), name))
            source_tests[name] = WithDomain(Subset(dataset, sorted(order[k : 2 * k])), name)
        train_parts.append(WithDomain(Subset(dataset, sorted(order[2 * k :])), name))
    if not val_parts:
        raise UserInputError(
            f"the source domains {', '.join(sources)} of {where} have too few samples for a "
            "validation hold-out (a domain needs at least 3)"
        )
    test.update(source_tests)
    return DomainSplits(
        train=_concat(train_parts),
        val=_concat(val_parts),
        val_source=(
            f"source validation: {val_fraction:.0%} of each source domain with 3 or more samples "
            "held out at random (fixed generator), as much again for its test"
        ),
        test=test,
        unlabelled=_concat(unlabelled_parts),
        source_domains=tuple(sources),
        target_domains=tuple(targets),
        protocol=spec.protocol,
        target_train=_concat(target_train_parts),
    )
