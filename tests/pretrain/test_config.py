"""Configurations: shipped names, YAML files, strict validation before any training."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from thinkingearth.cli import main
from thinkingearth.errors import UnknownBandError, UnknownSensorError, UserInputError
from thinkingearth.pretrain import config_from_dict, list_configs, load_config


def _tiny(tiny):  # the dict behind the fixture
    return tiny().to_dict()


def test_shipped_tiny_synthetic_loads_and_round_trips():
    assert "tiny-synthetic" in list_configs()
    config = load_config("tiny-synthetic")
    assert config.recipe == "mae"
    assert config.sensors == ("sentinel-2-l2a", "sentinel-1-grd")
    assert config_from_dict(config.to_dict()) == config


def test_every_shipped_config_is_valid():
    for name in list_configs():
        load_config(name)


def test_unknown_keys_are_named_with_the_valid_keys(tiny):
    data = _tiny(tiny)
    data["mae"]["mask_rato"] = 0.5
    with pytest.raises(UserInputError, match=r"'mae\.mask_rato'.*mask_ratio"):
        config_from_dict(data)
    data = _tiny(tiny)
    data["optimiser"] = {}
    with pytest.raises(UserInputError, match=r"'optimiser'.*optim"):
        config_from_dict(data)
    data = _tiny(tiny)
    data["data"]["sensors"][0]["bandz"] = ["B04"]
    with pytest.raises(UserInputError, match=r"data\.sensors\[0\]\.bandz.*bands"):
        config_from_dict(data)
    data = _tiny(tiny)
    data["encoder"]["overrides"]["depht"] = 2
    with pytest.raises(UserInputError, match=r"encoder\.overrides\.depht"):
        config_from_dict(data)


def test_unknown_sensor_and_band_raise_the_registry_errors(tiny):
    data = _tiny(tiny)
    data["data"]["sensors"][0]["sensor"] = "sentinel-9"
    with pytest.raises(UnknownSensorError, match="unknown sensor 'sentinel-9'; expected one of"):
        config_from_dict(data)
    data = _tiny(tiny)
    data["data"]["sensors"][0]["bands"] = ["B04", "B99"]
    with pytest.raises(UnknownBandError, match="unknown band 'B99' for sentinel-2-l2a"):
        config_from_dict(data)
    data = _tiny(tiny)
    data["data"]["sensors"][0]["sensor"] = "landsat-8-9"
    with pytest.raises(UserInputError, match="synthetic world has no landsat-8-9"):
        config_from_dict(data)


def test_types_ranges_and_recipe_consistency(tiny):
    cases = [
        (("trainer", "max_steps"), "ten", "trainer.max_steps is 'ten'; expected an integer"),
        (("recipe",), "byol", "recipe is 'byol'; expected one of: mae, softcon"),
        (("mae", "mask_ratio"), 1.5, "mae.mask_ratio must be in"),
        (("augment", "crop_size"), 30, "multiple of the encoder's patch size"),
        (("data", "batch_size"), 0, "data.batch_size must be positive"),
    ]
    for path, value, message in cases:
        data = _tiny(tiny)
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        with pytest.raises(UserInputError, match=message):
            config_from_dict(data)
    data = _tiny(tiny)
    data["recipe"] = "cross_sensor"
    with pytest.raises(UserInputError, match=r"needs data\.pair"):
        config_from_dict(data)
    data = _tiny(tiny)
    data["recipe"] = "softcon"
    data["contrastive"]["targets"] = "supcon"
    with pytest.raises(UserInputError, match="contradicts recipe"):
        config_from_dict(data)


def test_base_merges_over_a_shipped_config(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: tiny-synthetic\nname: mine\ntrainer: {max_steps: 7}\n")
    config = load_config(path)
    assert (config.name, config.trainer.max_steps) == ("mine", 7)
    assert config.trainer.checkpoint_every == load_config("tiny-synthetic").trainer.checkpoint_every


def test_cli_rejects_bad_configs_before_training(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"base": "tiny-synthetic", "trainer": {"max_stepz": 3}}))
    out = tmp_path / "run"
    cases = [
        (["--config", str(bad)], "unknown key 'trainer.max_stepz'"),
        (["--config", "no-such-config"], "unknown config 'no-such-config'"),
        (["--config", str(tmp_path / "missing.yaml")], "does not exist"),
        (["--config", "tiny-synthetic", "--max-steps", "0"], "--max-steps must be positive"),
        (["--config", "tiny-synthetic", "--resume"], "--resume: no checkpoint"),
    ]
    for args, message in cases:
        assert main(["pretrain", *args, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "Traceback" not in err
    assert not Path(out).exists()
