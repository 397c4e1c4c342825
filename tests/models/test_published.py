"""Published weights by name: a fake cache and a patched download, never the network."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError
from torch import nn

from thinkingearth.cli import main
from thinkingearth.errors import UserInputError
from thinkingearth.models import load, published
from thinkingearth.models import weights as weights_module
from thinkingearth.models.published import (
    ChecksumError,
    PublishedWeights,
    WeightsUnavailableError,
)
from thinkingearth.models.weights import CONFIGS, Reference

REPO = "test-org/tiny-dofa"
REVISION = "0123456789abcdef0123456789abcdef01234567"
FILENAME = "DOFA_ViT_tiny_e1.pth"
S1_WAVELENGTHS_UM = [5.405, 5.405]  # DOFA's Sentinel-1 convention (see test_exactness.py)
_UNRESOLVABLE_HOST = published._unresolvable_host  # before the autouse fixture patches it


def _one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


@pytest.fixture(scope="module")
def tiny_dofa(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path, str]:
    """A 192-wide, one-block DOFA saved in the authors' layout (MAE extras, no fc_norm/head)."""
    from torchgeo.models.dofa import DOFA

    torch.manual_seed(3)
    reference = DOFA(img_size=32, embed_dim=192, depth=1, num_heads=3).eval()
    with torch.no_grad():  # perturb every tensor (zeros included) so all of them matter
        for value in reference.state_dict().values():
            value.add_(0.02 * torch.randn(value.shape))
    state = {
        k: v for k, v in reference.state_dict().items() if not k.startswith(("fc_norm.", "head."))
    }
    state |= {
        "mask_token": torch.zeros(1, 1, 192),
        "norm.weight": torch.ones(192),
        "norm.bias": torch.zeros(192),
        "projector.weight": torch.zeros(8, 192),
        "projector.bias": torch.zeros(8),
    }
    path = tmp_path_factory.mktemp("published") / FILENAME
    torch.save(state, path)
    nn.init.ones_(reference.fc_norm.weight)  # the published files carry no fc_norm
    nn.init.zeros_(reference.fc_norm.bias)
    return reference, path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Temporary caches, offline by default, and a download that fails the test if called."""
    for variable in ("HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("THINKINGEARTH_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(**kwargs: object) -> str:
        raise AssertionError(f"hf_hub_download called: {kwargs}")

    monkeypatch.setattr(published, "hf_hub_download", no_network)
    monkeypatch.setattr(published, "_unresolvable_host", lambda: None)  # a patched download runs


@pytest.fixture
def entry(
    monkeypatch: pytest.MonkeyPatch, tiny_dofa: tuple[nn.Module, Path, str]
) -> PublishedWeights:
    """A registry entry ``tiny_dofa`` for the tiny file (added through the registry dict)."""
    _, _, digest = tiny_dofa
    new = PublishedWeights(
        name="tiny_dofa",
        repo_id=REPO,
        filename=FILENAME,
        sha256=digest,
        architecture="dofa_vit_192",
        licence="CC-BY-4.0",
        citation="test entry",
        revision=REVISION,
        size=tiny_dofa[1].stat().st_size,
    )
    monkeypatch.setitem(published.WEIGHTS, new.name, new)
    return new


def _hub_file(cache: Path, revision: str = REVISION, *, ref: str | None = "main") -> Path:
    """The path huggingface_hub's cache uses for the test repository's file."""
    repo = cache / f"models--{REPO.replace('/', '--')}"
    if ref is not None:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(revision)
    target = repo / "snapshots" / revision / FILENAME
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _s1_features(encoder: nn.Module) -> torch.Tensor:
    image = torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return encoder(image, ["VV", "VH"], sensor="sentinel-1-grd")


def test_shipped_registry() -> None:
    names = published.list_weights()
    assert {"copernicusfm_base", "dofa_base", "dofa_large"} <= set(names)
    assert not set(names) & set(CONFIGS)  # weights and architectures never share a name
    for name in names:
        entry = published.WEIGHTS[name]
        assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256), name  # full checksums, none guessed
        assert entry.architecture in CONFIGS, name
        assert entry.licence == "CC-BY-4.0" and "arXiv:" in entry.citation, name
        assert entry.url.startswith(f"https://huggingface.co/{entry.repo_id}/resolve/")
    # torchgeo names its files after the first 8 hex characters of their SHA-256.
    for name in ("copernicusfm_base_torchgeo", "dofa_base_torchgeo", "dofa_large_torchgeo"):
        entry = published.WEIGHTS[name]
        assert entry.filename.removesuffix(".pth").endswith("-" + entry.sha256[:8])
    with pytest.raises(ValueError, match="architecture"):
        published.register_weights(
            PublishedWeights("thinkingearth_vit_tiny", "a/b", "f.pth", "0" * 64, "x", "MIT", "c")
        )
    with pytest.raises(ValueError, match="hex"):
        PublishedWeights("bad_hash", "a/b", "f.pth", "ABC", "x", "MIT", "c")


def test_load_by_name_from_weights_folder(
    entry: PublishedWeights, tiny_dofa: tuple[nn.Module, Path, str], tmp_path: Path
) -> None:
    reference, path, _ = tiny_dofa
    (tmp_path / "weights").mkdir()
    shutil.copyfile(path, tmp_path / "weights" / FILENAME)
    by_name = load("tiny_dofa")
    by_path = load(path)
    assert by_name.config == by_path.config and by_name.config.name == entry.architecture
    for key, value in by_path.state_dict().items():
        assert torch.equal(by_name.state_dict()[key], value), key
    expected = reference.forward_features(
        torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(0)), S1_WAVELENGTHS_UM
    )
    assert (_s1_features(by_name) - expected).abs().max().item() <= 1e-5
    assert published.resolve("tiny_dofa") == tmp_path / "weights" / FILENAME


def test_found_in_huggingface_cache(
    entry: PublishedWeights, tiny_dofa: tuple[nn.Module, Path, str], tmp_path: Path
) -> None:
    _, path, _ = tiny_dofa
    cached = _hub_file(tmp_path / "hf" / "hub")
    shutil.copyfile(path, cached)
    assert published.find_cached("tiny_dofa") == cached
    assert torch.equal(_s1_features(load("tiny_dofa")), _s1_features(load(path)))


def test_cached_at_another_revision_counts(
    entry: PublishedWeights, tiny_dofa: tuple[nn.Module, Path, str], tmp_path: Path
) -> None:
    """A user who downloaded the branch head (not our pinned commit) is not asked again."""
    other = _hub_file(tmp_path / "hf" / "hub", "f" * 40, ref=None)
    shutil.copyfile(tiny_dofa[1], other)
    assert published.resolve("tiny_dofa") == other


def test_download_when_not_cached(
    monkeypatch: pytest.MonkeyPatch,
    entry: PublishedWeights,
    tiny_dofa: tuple[nn.Module, Path, str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    calls: list[dict[str, object]] = []

    def fake_download(**kwargs: object) -> str:
        calls.append(kwargs)
        target = _hub_file(Path(str(kwargs["cache_dir"])))
        shutil.copyfile(tiny_dofa[1], target)
        return str(target)

    monkeypatch.setattr(published, "hf_hub_download", fake_download)
    encoder = load("tiny_dofa")
    assert calls == [
        dict(repo_id=REPO, filename=FILENAME, revision=REVISION, cache_dir=tmp_path / "hf" / "hub")
    ]
    assert torch.equal(_s1_features(encoder), _s1_features(load(tiny_dofa[1])))
    load("tiny_dofa")  # now cached: no second download
    assert len(calls) == 1


@pytest.fixture
def nothing_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any checkpoint is unpickled (a bad file must not be read)."""

    def refuse(path: Path) -> object:
        raise AssertionError(f"{path} was read")

    monkeypatch.setattr(weights_module, "_read_torch", refuse)


def test_checksum_mismatch_is_one_line_and_not_loaded(
    monkeypatch: pytest.MonkeyPatch, entry: PublishedWeights, tmp_path: Path, nothing_read: None
) -> None:
    folder = tmp_path / "weights"
    folder.mkdir()
    bad = folder / FILENAME
    size = entry.size
    assert size is not None
    bad.write_bytes(b"x" * size)  # the right size, the wrong bytes
    with pytest.raises(ChecksumError) as info:
        load("tiny_dofa")
    message = _one_line(info)
    assert str(bad) in message and "SHA-256" in message and "weights fetch tiny_dofa" in message

    bad.write_bytes(b"short")
    with pytest.raises(ChecksumError, match="5 bytes") as info:
        published.fetch("tiny_dofa")
    _one_line(info)

    # A download that brings the wrong bytes is refused as well.
    bad.unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    def corrupt_download(**kwargs: object) -> str:
        target = _hub_file(Path(str(kwargs["cache_dir"])))
        target.write_bytes(b"y" * size)
        return str(target)

    monkeypatch.setattr(published, "hf_hub_download", corrupt_download)
    with pytest.raises(ChecksumError) as info:
        load("tiny_dofa")
    _one_line(info)


def test_prefix_checksum_is_checked_like_torchgeo(
    monkeypatch: pytest.MonkeyPatch,
    entry: PublishedWeights,
    tiny_dofa: tuple[nn.Module, Path, str],
    tmp_path: Path,
) -> None:
    _, path, digest = tiny_dofa
    (tmp_path / "weights").mkdir()
    shutil.copyfile(path, tmp_path / "weights" / FILENAME)
    prefixed = PublishedWeights(**{**entry.__dict__, "sha256": digest[:8], "size": None})
    assert not prefixed.full_checksum
    monkeypatch.setitem(published.WEIGHTS, "tiny_dofa", prefixed)
    assert published.resolve("tiny_dofa") == tmp_path / "weights" / FILENAME
    wrong = f"{(int(digest[:8], 16) + 1) % 16**8:08x}"
    monkeypatch.setitem(
        published.WEIGHTS, "tiny_dofa", PublishedWeights(**{**prefixed.__dict__, "sha256": wrong})
    )
    with pytest.raises(ChecksumError, match="SHA-256 prefix"):
        published.resolve("tiny_dofa")


def test_offline_without_file_names_file_and_folder(
    entry: PublishedWeights, tmp_path: Path
) -> None:
    with pytest.raises(WeightsUnavailableError) as info:
        load("tiny_dofa")
    message = _one_line(info)
    assert f"put {FILENAME}" in message and str(tmp_path / "weights") in message
    assert "HF_HUB_OFFLINE" in message and entry.url in message


def test_network_error_becomes_one_line(
    monkeypatch: pytest.MonkeyPatch, entry: PublishedWeights, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    def unreachable(**kwargs: object) -> str:
        raise LocalEntryNotFoundError("cannot reach the Hub\nand nothing is cached")

    monkeypatch.setattr(published, "hf_hub_download", unreachable)
    with pytest.raises(WeightsUnavailableError) as info:
        load("tiny_dofa")
    message = _one_line(info)
    assert "cannot reach the Hub" in message and str(tmp_path / "weights") in message


def test_no_network_fails_at_once_and_the_hub_retry_warnings_stay_quiet(
    monkeypatch: pytest.MonkeyPatch, entry: PublishedWeights, capfd: pytest.CaptureFixture[str]
) -> None:
    """huggingface_hub retries for ~25 s printing two lines per try; the user gets one line."""
    import logging
    import socket

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    for variable in published._PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(published, "_unresolvable_host", _UNRESOLVABLE_HOST)  # the real check

    def no_dns(*args: object, **kwargs: object) -> object:
        raise socket.gaierror(-2, "Name or service not known")

    # No DNS: one line at once, and the download (which would retry) is never called.
    monkeypatch.setattr(published.socket, "getaddrinfo", no_dns)
    with pytest.raises(WeightsUnavailableError) as info:
        load("tiny_dofa")
    assert "huggingface.co does not resolve" in _one_line(info)

    # A name that resolves but a failing download: the hub's warnings are not shown.
    monkeypatch.setattr(published.socket, "getaddrinfo", lambda *a, **k: [])

    def retrying(**kwargs: object) -> str:
        logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
        raise OSError("connection reset")

    monkeypatch.setattr(published, "hf_hub_download", retrying)
    with pytest.raises(WeightsUnavailableError, match="connection reset"):
        load("tiny_dofa")
    assert "Retrying" not in capfd.readouterr().err
    assert logging.getLogger("huggingface_hub").level != logging.ERROR  # restored


def test_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(UserInputError) as info:
        load("no_such_weights")
    message = _one_line(info)
    assert "does not exist" in message and "copernicusfm_base" in message and "path" in message
    # A pretraining run's folder, or its file without the suffix: not "does not exist".
    run = tmp_path / "run"
    run.mkdir()
    (run / "encoder.safetensors").write_bytes(b"")
    for given in (run, run / "encoder"):
        with pytest.raises(UserInputError) as info:
            load(given)
        assert f"did you mean {run / 'encoder.safetensors'}?" in _one_line(info)
    with pytest.raises(UserInputError) as info:
        load("thinkingearth_vit_tiny")
    assert "architecture" in _one_line(info) and "create_encoder" in str(info.value)
    with pytest.raises(UserInputError, match="unknown published weights"):
        published.fetch("thinkingearth_vit_tiny")


def test_existing_file_wins_over_registry_name(
    monkeypatch: pytest.MonkeyPatch,
    entry: PublishedWeights,
    tiny_dofa: tuple[nn.Module, Path, str],
    tmp_path: Path,
) -> None:
    """A path that exists is a path, even when it spells a registry name (offline, not cached)."""
    monkeypatch.chdir(tmp_path)
    shutil.copyfile(tiny_dofa[1], tmp_path / "tiny_dofa")
    assert torch.equal(_s1_features(load("tiny_dofa")), _s1_features(load(tiny_dofa[1])))


def test_entry_reference_chooses_copernicusfm_epsilon(
    monkeypatch: pytest.MonkeyPatch, small_cfm: tuple[nn.Module, Path], tmp_path: Path
) -> None:
    """The authors' Copernicus-FM file is a bare state dict: the entry says which eps it means."""
    _, path = small_cfm
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    cases: tuple[tuple[str, Reference], ...] = (
        ("tiny_cfm", "original"),
        ("tiny_cfm_torchgeo", "torchgeo"),
    )
    for name, reference in cases:
        monkeypatch.setitem(
            published.WEIGHTS,
            name,
            PublishedWeights(
                name,
                "test-org/cfm",
                f"{name}.pth",
                digest,
                "x",
                "CC-BY-4.0",
                "c",
                reference=reference,
            ),
        )
        (tmp_path / "weights").mkdir(exist_ok=True)
        shutil.copyfile(path, tmp_path / "weights" / f"{name}.pth")
    assert load("tiny_cfm").config.norm_eps == 1e-6
    assert load("tiny_cfm_torchgeo").config.norm_eps == 1e-5
    assert load("tiny_cfm", reference="torchgeo").config.norm_eps == 1e-5  # the caller decides


def test_cli_list_and_fetch(
    capsys: pytest.CaptureFixture[str],
    entry: PublishedWeights,
    tiny_dofa: tuple[nn.Module, Path, str],
    tmp_path: Path,
) -> None:
    assert main(["weights", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "ARCHITECTURE", "LICENCE", "CACHED", "SIZE", "SOURCE"]
    rows = {line.split()[0]: line.split() for line in lines[1:-1]}
    assert rows["tiny_dofa"][3] == "no" and rows["copernicusfm_base"][1:4] == [
        "copernicusfm_vit_base",
        "CC-BY-4.0",
        "no",
    ]
    assert str(tmp_path / "weights") in lines[-1]

    # Offline and not cached: one line on stderr, exit 2, and nothing read.
    assert main(["weights", "fetch", "tiny_dofa"]) == 2
    captured = capsys.readouterr()
    assert (
        captured.out == "" and captured.err.count("\n") == 1 and f"put {FILENAME}" in captured.err
    )

    (tmp_path / "weights").mkdir()
    shutil.copyfile(tiny_dofa[1], tmp_path / "weights" / FILENAME)
    assert main(["weights", "fetch", "tiny_dofa"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "weights" / FILENAME)
    assert main(["weights", "fetch", "tiny_dofa", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["path"] == str(tmp_path / "weights" / FILENAME) and record["name"] == "tiny_dofa"
    assert record["sha256"] == published.sha256_of(tmp_path / "weights" / FILENAME)
    assert record["bytes"] == (tmp_path / "weights" / FILENAME).stat().st_size
    assert main(["weights", "list"]) == 0
    row = next(
        line for line in capsys.readouterr().out.splitlines() if line.startswith("tiny_dofa")
    )
    assert row.split()[3] == "yes"

    assert main(["weights", "fetch", "no_such_weights"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dofa_base" in err
