"""``thinkingearth finetune`` with split protocols and domain adaptation: the config sections, the
per-domain summary (worst and mean domain, oracle gap), the report's domain table, the paired
source/target batches, end-to-end runs on the synthetic world, and bad input (exit 2)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from thinkingearth.cli import main
from thinkingearth.configfile import merge
from thinkingearth.data.domains import SplitSpec
from thinkingearth.errors import UserInputError
from thinkingearth.tasks import finetune, load_finetune_config
from thinkingearth.tasks.finetune_report import (
    domain_section,
    higher_is_better,
    mean_domain,
    oracle_gap,
    worst_domain,
)
from thinkingearth.tasks.finetuning import StepBatchSampler, _PairedBatches
from thinkingearth.tasks.variants import AdaptSection

NEW_CONFIGS = (
    "synthetic-landcover-biomes",
    "synthetic-cross-sensor",
    "kurosiwo-leave-events-out",
    "bigearthnet-leave-countries-out",
)

#: A tiny land-cover run per domain: 16 train / 8 val / 8 test scenes of 32 px, 3 steps.
TINY: dict[str, Any] = {
    "base": "synthetic-landcover",
    "data": {
        "options": {"size": 32, "n": {"train": 16, "val": 8, "test": 8}},
        "batch_size": 4,
        "eval_batch_size": 8,
        "cache": False,
        "stats_samples": 4,
    },
    "model": {
        "overrides": {
            "embed_dim": 48,
            "depth": 2,
            "num_heads": 3,
            "hyper_dim": 32,
            "patch_size": 8,
            "img_size": 32,
        },
        "decoder_channels": 16,
    },
    "trainer": {
        "max_steps": 3,
        "val_every": 3,
        "checkpoint_every": 3,
        "log_every": 1,
        "threads": 1,
    },
}
CROSS_SENSOR = {
    "split": {"protocol": "cross-sensor", "source": ["sentinel-2-l2a"], "target": ["landsat-8-9"]}
}
REGIONS = {
    "split": {
        "protocol": "leave-regions-out",
        "source": ["temperate"],
        "target": ["boreal", "arid"],
    }
}


def _config(tmp_path: Path, extra: dict[str, Any], name: str = "tiny.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(merge(TINY, extra)))
    return path


# ------------------------------------------------------------------------- summary functions


def test_worst_and_mean_domain_per_metric_direction() -> None:
    per_domain = {
        "boreal": {"miou": 0.40, "rmse": 2.0, "iou/water": math.nan},
        "arid": {"miou": 0.25, "rmse": 3.5, "iou/water": 0.5},
        "temperate": {"miou": 0.10, "rmse": 9.0, "iou/water": 0.1},  # a source: not compared
    }
    worst = worst_domain(per_domain, ["boreal", "arid"])
    assert worst["miou"] == 0.25  # higher is better: the minimum
    assert worst["rmse"] == 3.5  # an error: the maximum
    assert worst["iou/water"] == 0.5  # NaN (undefined) left out
    mean = mean_domain(per_domain, ["boreal", "arid"])
    assert mean["miou"] == pytest.approx(0.325)
    assert mean["rmse"] == pytest.approx(2.75)
    assert math.isnan(mean_domain({"a": {"oa": math.nan}}, ["a"])["oa"])
    with pytest.raises(KeyError, match="tundra"):
        worst_domain(per_domain, ["tundra"])
    assert higher_is_better("f1/flood") and not higher_is_better("mae")


def test_oracle_gap_is_positive_when_the_method_is_worse() -> None:
    gap = oracle_gap({"miou": 0.7, "rmse": 1.0, "oa": 0.5}, {"miou": 0.5, "rmse": 1.5, "mae": 2.0})
    assert gap["miou"] == pytest.approx(0.2)
    assert gap["rmse"] == pytest.approx(0.5)  # method - oracle for errors
    assert "mae" not in gap and "oa" not in gap  # only metrics both have


def test_domain_section_marks_the_worst_target() -> None:
    per_domain = {"boreal": {"miou": 0.4}, "arid": {"miou": 0.2}, "temperate": {"miou": 0.6}}
    text = domain_section(
        per_domain,
        ["boreal", "arid"],
        ["temperate"],
        "miou",
        protocol="leave-regions-out",
        method="dann",
        oracle={"miou": 0.7},
    )
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("|")}
    assert "arid **(worst)**" in rows and "boreal" in rows and "temperate" in rows
    assert "| source |" in rows["temperate"]
    assert "0.3000" in rows["mean of targets"] and "0.7000" in rows["oracle (target labels)"]
    assert "model selected on source validation (no target labels)" in text


def test_paired_batches_resume_exactly() -> None:
    source = StepBatchSampler(10, 4, 6, seed=3)
    whole = list(_PairedBatches(source, 7))
    resumed = list(_PairedBatches(StepBatchSampler(10, 4, 6, seed=3, start=4), 7))
    assert resumed == whole[4:]
    assert [i for i, _ in whole[2]] == source.batch(2)  # the source order is today's
    assert all(0 <= j < 7 for batch in whole for _, j in batch)
    assert [j for _, j in whole[0]] != [i for i, _ in whole[0]]  # another stream
    assert all(j is None for _, j in next(iter(_PairedBatches(source, None))))


# ------------------------------------------------------------------------------- the config


def test_config_sections_default_to_todays_behaviour() -> None:
    config = load_finetune_config("synthetic-landcover")
    assert config.split == SplitSpec() and config.adapt == AdaptSection()
    assert config.to_dict()["split"]["protocol"] == "none"
    assert config.to_dict()["adapt"]["method"] == "none"


def test_shipped_domain_configs_load() -> None:
    for name in NEW_CONFIGS:
        config = load_finetune_config(name)
        assert config.name == name and config.split.protocol != "none"
    kuro = load_finetune_config("kurosiwo-leave-events-out")
    assert kuro.split.groups["test-events-a"][0] == "321"
    assert load_finetune_config("synthetic-cross-sensor").split.target == ("landsat-8-9",)


def test_adaptation_without_a_protocol_is_one_line() -> None:
    with pytest.raises(UserInputError, match=r"adaptation needs unlabelled target data: set split"):
        load_finetune_config("synthetic-landcover", {"adapt": {"method": "dann"}})
    # augmentation alone needs no target (domain generalisation on the sources)
    config = load_finetune_config("synthetic-landcover", {"adapt": {"band_dropout": 0.2}})
    assert config.adapt.augments and not config.adapt.needs_target


def test_cli_flags_and_dotted_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["finetune", "--config", "synthetic-landcover", "--print-config"]
    args += ["--set", "split.protocol=cross-sensor", "--set", "split.source=[sentinel-2-l2a]"]
    args += ["--set", "split.target=[landsat-8-9]", "--adapt", "tent", "--oracle"]
    assert main(args) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["split"]["protocol"] == "cross-sensor"
    assert printed["split"]["target"] == ["landsat-8-9"] and printed["split"]["oracle"] is True
    assert printed["adapt"]["method"] == "tent"


@pytest.mark.parametrize(
    ("extra", "flags", "message"),
    [
        ({}, ["--adapt", "dann"], "adaptation needs unlabelled target data"),
        ({"split": {"protocol": "cross-sensor", "source": ["sentinel-2-l2a"]}}, [], "target"),
        (CROSS_SENSOR, ["--model", "unet"], "B1"),  # a fixed-band baseline names the bands
        (
            {"split": {"protocol": "cross-sensor", "source": ["sentinel-2-l2a"], "target": ["x"]}},
            [],
            "cross-sensor",
        ),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: dict[str, Any],
    flags: list[str],
    message: str,
) -> None:
    out = tmp_path / "out"
    config = _config(tmp_path, extra)
    assert main(["finetune", "--config", str(config), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("thinkingearth: error")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert message in errors[0]
    assert not out.exists()


# ---------------------------------------------------------------------------- end to end


def _document(out: Path) -> dict[str, Any]:
    return json.loads((out / "metrics.json").read_text())


def test_cross_sensor_s2_to_landsat_with_tent_and_oracle(tmp_path: Path) -> None:
    """The any-sensor encoder trained on Sentinel-2 L2A is tested on Landsat 8/9 bands, adapted
    after training by TENT on unlabelled Landsat scenes, and compared with an oracle."""
    config = _config(tmp_path, {**CROSS_SENSOR, "adapt": {"method": "tent", "steps": 2}})
    out = tmp_path / "run"
    result = finetune(config, out, oracle=True, log=None)
    document = _document(out)
    assert document["split"] == {
        "protocol": "cross-sensor",
        "source": ["sentinel-2-l2a"],
        "target": ["landsat-8-9"],
    }
    assert set(document["per_domain"]) == {"landsat-8-9", "sentinel-2-l2a"}
    # one target domain: pooled target = that domain = its worst and its mean
    target = document["per_domain"]["landsat-8-9"]
    assert document["miou"] == pytest.approx(target["miou"])
    assert document["worst_domain"]["miou"] == pytest.approx(target["miou"])
    assert document["source"]["miou"] == pytest.approx(
        document["per_domain"]["sentinel-2-l2a"]["miou"]
    )
    assert document["adapt"]["method"] == "tent"
    gap = document["oracle_gap"]["miou"]
    assert gap == pytest.approx(document["oracle"]["miou"] - document["miou"])
    assert result.metrics["miou"] == pytest.approx(document["miou"])
    report = (out / "report.md").read_text()
    assert "model selected on source validation (no target labels)" in report
    assert "normalisation of target sensor landsat-8-9: estimated from" in report
    assert "cross-sensor" in report and "(worst)" in report
    assert (out / "oracle" / "checkpoints" / "best.safetensors").is_file()
    # The saved model reads the source sensor; the Landsat statistics travel with it.
    saved = json.loads((out / "model.json").read_text())
    assert "sentinel-2-l2a" in json.dumps(saved) and "landsat-8-9" in json.dumps(saved)


def test_leave_regions_out_with_dann_reports_every_domain(tmp_path: Path) -> None:
    config = _config(tmp_path, {**REGIONS, "adapt": {"method": "dann"}})
    out = tmp_path / "run"
    finetune(config, out, log=None)
    document = _document(out)
    per_domain = document["per_domain"]
    assert set(per_domain) == {"boreal", "arid", "temperate"}
    targets = [per_domain["boreal"]["miou"], per_domain["arid"]["miou"]]
    assert document["worst_domain"]["miou"] == pytest.approx(min(targets))
    assert document["mean_domain"]["miou"] == pytest.approx(sum(targets) / 2)
    assert document["source"]["miou"] == pytest.approx(per_domain["temperate"]["miou"])
    assert document["adapt"]["method"] == "dann" and "oracle" not in document
    assert document["run"]["unlabelled_samples"] == 32  # the targets' train streams
    # the DANN run logged its alignment loss
    log = (out / "logs" / "csv" / "metrics.csv").read_text()
    assert "train/adapt_loss" in log.splitlines()[0]
    report = (out / "report.md").read_text()
    assert "leave-regions-out" in report and "adaptation: dann" in report


class _Crash(Exception):
    pass


def _crash_after(step: int) -> Any:
    from lightning.pytorch import Callback

    class Crash(Callback):
        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            if trainer.global_step == step:
                raise _Crash(f"crashed after step {step}")

    return Crash()


@pytest.mark.slow
def test_dann_cross_sensor_resumes_to_the_same_weights(tmp_path: Path) -> None:
    """A DANN run (paired source/target batches) interrupted after its step-2 checkpoint and
    resumed ends with the weights of an uninterrupted run: the pairs come from (seed, step)."""
    from safetensors.torch import load_file

    extra = {
        **CROSS_SENSOR,
        "adapt": {"method": "dann"},
        "trainer": {"max_steps": 4, "val_every": 2, "checkpoint_every": 2},
    }
    config = _config(tmp_path, extra)
    whole = finetune(config, tmp_path / "whole", log=None)
    with pytest.raises(_Crash):
        finetune(config, tmp_path / "parts", callbacks=[_crash_after(2)], log=None)
    assert not (tmp_path / "parts" / "model.safetensors").exists()
    resumed = finetune(config, tmp_path / "parts", resume=True, log=None)
    assert resumed.resumed_from == 2 and resumed.steps == whole.steps == 4
    one, two = load_file(str(whole.model)), load_file(str(resumed.model))
    assert one.keys() == two.keys() and not any(k.startswith("adapter") for k in one)
    for key in one:
        assert bool((one[key] == two[key]).all()), key
    assert _document(tmp_path / "whole")["miou"] == pytest.approx(
        _document(tmp_path / "parts")["miou"]
    )


def test_augmentation_without_a_protocol_keeps_the_plain_outputs(tmp_path: Path) -> None:
    """Domain generalisation on the reader's own splits: the source batches are augmented (the
    adaptation module trains), and metrics.json has today's keys only."""
    config = _config(tmp_path, {"adapt": {"spectral_jitter": 0.1, "band_dropout": 0.2}})
    finetune(config, tmp_path / "run", log=None)
    document = _document(tmp_path / "run")
    assert "miou" in document and "run" in document
    assert not {"per_domain", "worst_domain", "mean_domain", "source", "split"} & set(document)
    assert "adapt" not in document and "test_split" not in document["run"]
    header = (tmp_path / "run" / "logs" / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "train/task_loss" in header  # trained through the adaptation module
    assert "## Domains" not in (tmp_path / "run" / "report.md").read_text()
