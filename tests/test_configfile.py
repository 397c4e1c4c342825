"""configfile.read_config: an empty YAML file is an error, not an empty configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from thinkingearth.cli import main
from thinkingearth.configfile import read_config
from thinkingearth.errors import UserInputError
from thinkingearth.pretrain import load_config
from thinkingearth.tasks import load_finetune_config


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
def test_an_empty_config_is_an_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(UserInputError, match="is empty") as caught:
        read_config(path, "configs", list)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(UserInputError, match="is empty"):
        load_config(str(path))
    with pytest.raises(UserInputError, match="is empty"):
        load_finetune_config(str(path))


def test_an_empty_base_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("")
    (tmp_path / "run.yaml").write_text("base: base.yaml\nname: run\n")
    with pytest.raises(UserInputError, match=r"base\.yaml is empty"):
        read_config(tmp_path / "run.yaml", "configs", list)


def test_an_empty_config_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert main(["pretrain", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("thinkingearth: error:") and "is empty" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_an_empty_mapping_is_still_a_config(tmp_path: Path) -> None:
    path = tmp_path / "braces.yaml"
    path.write_text("{}\n")
    assert read_config(path, "configs", list) == {}
