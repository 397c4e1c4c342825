"""Atomic outputs: permissions from the umask (not the 0600 of private temporary files), the one
overwrite policy, and --overwrite removing only what a run wrote."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from thinkingearth.errors import UserInputError
from thinkingearth.fileio import (
    atomic_dir,
    atomic_file,
    check_new_file,
    current_umask,
    remove_outputs,
)


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_current_umask_reads_without_changing(umask_022: None) -> None:
    assert current_umask() == 0o022
    os.umask(0o027)
    assert current_umask() == 0o027
    assert current_umask() == 0o027


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_file_gives_a_private_temporary_file_the_umask_mode(
    tmp_path: Path, mask: int, expected: int
) -> None:
    from safetensors.torch import save_file

    previous = os.umask(mask)
    try:
        with atomic_file(tmp_path / "w.safetensors") as tmp:
            save_file({"a": torch.zeros(2)}, str(tmp))  # safetensors writes mode 0600
        with atomic_file(tmp_path / "private.txt") as tmp:
            tmp.write_text("x")
            os.chmod(tmp, 0o600)
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "w.safetensors") == expected
    assert _mode(tmp_path / "private.txt") == expected


def test_atomic_dir_gives_its_contents_the_umask_modes(tmp_path: Path, umask_022: None) -> None:
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "sub").mkdir(mode=0o700)
        (tmp / "sub" / "a.bin").write_bytes(b"1")
        os.chmod(tmp / "sub" / "a.bin", 0o600)
        (tmp / "run.sh").write_text("#!/bin/sh\n")
        os.chmod(tmp / "run.sh", 0o700)
    out = tmp_path / "out"
    assert _mode(out) == 0o755
    assert _mode(out / "sub") == 0o755
    assert _mode(out / "sub" / "a.bin") == 0o644
    assert _mode(out / "run.sh") == 0o755  # an executable stays executable


def test_saved_encoder_and_checkpoint_follow_the_umask(tmp_path: Path, umask_022: None) -> None:
    from thinkingearth.models import create_encoder, save
    from thinkingearth.runs import AtomicCheckpointIO

    encoder = create_encoder("thinkingearth_vit_tiny", depth=1, embed_dim=32, num_heads=2)
    path = save(encoder, tmp_path / "encoder")
    assert _mode(path) == 0o644 and _mode(path.with_suffix(".json")) == 0o644
    AtomicCheckpointIO().save_checkpoint({"step": torch.tensor(1)}, tmp_path / "step-1.ckpt")
    assert _mode(tmp_path / "step-1.ckpt") == 0o644


def test_existing_folder_message_names_overwrite(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    with pytest.raises(UserInputError, match="--overwrite"), atomic_dir(tmp_path / "out"):
        pass
    assert (tmp_path / "out" / "x").read_text() == "x"


def test_check_new_file(tmp_path: Path) -> None:
    assert (
        check_new_file(tmp_path / "a" / "map.tif", suffixes=(".tif",)) == tmp_path / "a" / "map.tif"
    )
    with pytest.raises(UserInputError, match=r"ending in \.tif or \.tiff"):
        check_new_file(tmp_path / "map.png", suffixes=(".tif", ".tiff"), what="GeoTIFF map")
    (tmp_path / "map.tif").write_text("x")
    with pytest.raises(UserInputError, match="exists; pass --overwrite"):
        check_new_file(tmp_path / "map.tif")
    check_new_file(tmp_path / "map.tif", overwrite=True)
    (tmp_path / "folder.tif").mkdir()
    with pytest.raises(UserInputError, match="is a folder"):
        check_new_file(tmp_path / "folder.tif", overwrite=True)
    with pytest.raises(UserInputError, match="not a folder"):  # root may write anywhere else
        check_new_file(tmp_path / "map.tif" / "inside.tif")


def test_remove_outputs_deletes_only_what_is_named(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "step-1.ckpt").write_text("x")
    (tmp_path / "config.yaml").write_text("x")
    (tmp_path / "notes.txt").write_text("mine")
    removed = remove_outputs(tmp_path, ("checkpoints", "config.yaml", "summary.json"))
    assert removed == [tmp_path / "checkpoints", tmp_path / "config.yaml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_remove_temporaries_sweeps_what_killed_writers_left(tmp_path: Path) -> None:
    from thinkingearth.fileio import remove_temporaries

    left = [
        ".scene_00000.tif.tmp-d4a516f7.tif",
        ".scene_00000.tif.stream-295acc34-uncertainty.tif",
        ".scene_00001_uncertainty.tif.tmp-a871688f.tif.ovr.tmp",
    ]
    kept = ["scene_00000.tif", ".other.tif.tmp-d4a516f7.tif", ".scene_00000.notes", "x.tmp-1"]
    for name in left + kept:
        (tmp_path / name).write_text("x")
    (tmp_path / ".scene_00002.tmp-0123abcd").mkdir()  # an atomic_dir staging folder
    removed = remove_temporaries(tmp_path, ["scene_00000", "scene_00001", "scene_00002"])
    assert sorted(p.name for p in removed) == sorted([*left, ".scene_00002.tmp-0123abcd"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
