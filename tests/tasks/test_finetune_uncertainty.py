"""``thinkingearth finetune`` with the ``head:`` section and test-split evaluations: the config
reads and checks the head, and every registered test evaluation runs on the saved model, its
metrics in metrics.json and its section in report.md; one that fails loses nothing else."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from thinkingearth.cli import main
from thinkingearth.errors import UserInputError
from thinkingearth.tasks import finetune, load_finetune_config, variants
from thinkingearth.tasks.variants import (
    TestEvaluation,
    UncertaintyHead,
    register_test_evaluation,
    register_uncertainty,
)

#: A tiny flood run (as tests/tasks/test_finetune.py): seconds on a CPU.
TINY: dict[str, Any] = {
    "base": "synthetic-flood",
    "data": {"options": {"n": {"train": 8, "val": 4, "test": 6}}, "batch_size": 4},
    "model": {"overrides": {"embed_dim": 48, "depth": 2, "num_heads": 2, "hyper_dim": 32}},
    "trainer": {"max_steps": 2, "val_every": 2, "checkpoint_every": 2, "log_every": 1},
}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Only what a test registers: no installed plugins (thinkingearth.uncertainty) run here."""
    monkeypatch.setattr(variants, "_REGISTERED", {})
    monkeypatch.setattr(variants, "_LOADED", {})
    monkeypatch.setattr(variants, "_EVALUATIONS", {})
    monkeypatch.setattr(variants, "_entry_points", lambda group: {})
    yield


def _never_built(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the config tests read the head; they build no module")


def _config(tmp_path: Path, **extra: Any) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **extra}))
    return path


def test_head_section_is_read_and_defaults_to_none(tmp_path: Path) -> None:
    assert load_finetune_config(str(_config(tmp_path))).head == UncertaintyHead()
    register_uncertainty("heteroscedastic", _never_built)
    config = load_finetune_config(
        str(_config(tmp_path, head={"uncertainty": "heteroscedastic", "samples": 8}))
    )
    assert config.head == UncertaintyHead("heteroscedastic", samples=8)
    assert config.to_dict()["head"]["samples"] == 8


@pytest.mark.parametrize(
    ("head", "message"),
    [
        ({"uncertainty": "bayes"}, "head.uncertainty is 'bayes'"),
        ({"uncertainty": "ensemble", "members": 1}, "an ensemble needs at least 2 members"),
        ({"temperature": -1}, "head.temperature must be > 0"),
        ({"sample": 4}, "unknown key 'head.sample'"),
        ({"samples": "many"}, "head.samples is 'many'; expected an integer"),
        ({"uncertainty": "mc_dropout"}, "no builder for uncertainty method 'mc_dropout'"),
    ],
)
def test_a_bad_head_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], head: dict[str, Any], message: str
) -> None:
    out = tmp_path / "out"
    code = main(["finetune", "--config", str(_config(tmp_path, head=head)), "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("thinkingearth: error")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err
    assert not out.exists()


def test_print_config_shows_the_head_and_set_changes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(_config(tmp_path))
    assert main(["finetune", "--config", config, "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["head"] == UncertaintyHead().to_dict()
    assert (
        main(["finetune", "--config", config, "--set", "head.dropout=0.4", "--print-config"]) == 0
    )
    assert yaml.safe_load(capsys.readouterr().out)["head"]["dropout"] == 0.4
    assert main(["finetune", "--config", config, "--set", "head.dropout=2", "--print-config"]) == 2
    assert "head.dropout must be in (0, 1); got 2" in capsys.readouterr().err


@pytest.mark.slow
def test_finetune_runs_the_test_evaluations_and_survives_a_failing_one(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def items(module: Any, loader: Any, kind: str, *, ignore_index: Any, out: Path) -> Any:
        """Counts test pixels and checks the saved module's probabilities (a real reading)."""
        seen.update(kind=kind, ignore_index=ignore_index, out=out, training=module.training)
        pixels, worst = 0, 0.0
        for batch in loader:
            probs = module.predictive_samples(batch)
            mask = batch["mask"]
            assert probs.shape[1:] == (mask.shape[0], 3, *mask.shape[-2:])
            worst = max(worst, float((probs.sum(dim=2) - 1).abs().max()))
            pixels += int((mask != ignore_index).sum())
        figure = out / "items.txt"
        figure.write_text(str(pixels))
        return TestEvaluation(
            {"counted_pixels": float(pixels), "prob_sum_error": worst},
            "## Counted\n\nSee items.txt.",
            (figure,),
        )

    def broken(module: Any, loader: Any, kind: str, *, ignore_index: Any, out: Path) -> Any:
        raise RuntimeError("the plot backend exploded")

    def clashing(module: Any, loader: Any, kind: str, *, ignore_index: Any, out: Path) -> Any:
        return TestEvaluation({"miou": 1.0}, "## Clash")

    register_test_evaluation("counted", items)
    register_test_evaluation("broken", broken)
    register_test_evaluation("clashing", clashing)
    out = tmp_path / "run"
    lines: list[str] = []
    result = finetune(str(_config(tmp_path)), out, log=lines.append)

    assert seen == {"kind": "change", "ignore_index": 3, "out": out, "training": False}
    assert (out / "model.safetensors").is_file() and (out / "items.txt").is_file()
    record = json.loads((out / "metrics.json").read_text())
    expected_pixels = int((out / "items.txt").read_text())
    assert expected_pixels > 0 and record["counted_pixels"] == expected_pixels
    assert record["prob_sum_error"] < 1e-5
    assert "miou" in record  # the task's own metrics stay
    assert result.metrics["counted_pixels"] == expected_pixels
    errors = record["run"]["evaluation_errors"]
    assert errors["broken"] == "RuntimeError: the plot backend exploded"
    # an evaluation may not replace the task's own metrics
    assert "are the task's or another's" in errors["clashing"] and record["miou"] != 1.0
    assert "counted_pixels" not in record["run"]
    report = (out / "report.md").read_text()
    assert "## Counted\n\nSee items.txt." in report
    assert "## Test evaluation broken: failed" in report
    assert "the plot backend exploded" in report
    assert any("test evaluation broken FAILED" in line for line in lines)
    assert "## Clash" not in report
    # the pixel count is that of the test split: 6 samples of 32 x 32, ignore pixels excluded
    assert expected_pixels <= 6 * 32 * 32


def test_resume_check_reads_a_run_from_before_the_head_section(tmp_path: Path) -> None:
    """A run whose config.yaml has no head section trained the plain head: it may resume with
    ``head.uncertainty: none``, not with another head."""
    from thinkingearth.tasks.finetuning import _check_same_config

    config = load_finetune_config(str(_config(tmp_path)))
    saved = config.to_dict()
    del saved["head"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    _check_same_config(tmp_path, config)  # no error
    register_uncertainty("mc_dropout", _never_built)
    other = load_finetune_config(str(_config(tmp_path, head={"uncertainty": "mc_dropout"})))
    with pytest.raises(UserInputError, match=r"head\.uncertainty was 'none', is 'mc_dropout'"):
        _check_same_config(tmp_path, other)
