"""Task-module variants (``tasks.variants``): the uncertainty head settings, builders found by
name, predictive distributions of the plain modules, the hooks variants override, and task
checkpoints that keep the head."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thinkingearth.data.sample import collate
from thinkingearth.data.synthetic import SyntheticCopernicus
from thinkingearth.data.transforms import Normaliser
from thinkingearth.errors import UserInputError
from thinkingearth.models import create_encoder
from thinkingearth.models.baselines import build_baseline
from thinkingearth.models.weights import CheckpointFormatError
from thinkingearth.tasks import variants
from thinkingearth.tasks.checkpoint import load_task_module, save_task
from thinkingearth.tasks.classification import ClassificationTask
from thinkingearth.tasks.protocols import EncoderBackbone, TaskModule, output_size
from thinkingearth.tasks.segmentation import SegmentationTask
from thinkingearth.tasks.training import build_task_module
from thinkingearth.tasks.variants import (
    ENTRY_POINT_GROUP,
    TEST_EVALUATION_GROUP,
    UNCERTAINTY_METHODS,
    TestEvaluation,
    UncertaintyHead,
    get_uncertainty_builder,
    register_test_evaluation,
    register_uncertainty,
    test_evaluations,
)

SIZE = 32


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No installed entry points and no registrations leak in or out: every test sees only the
    builders and evaluations it registers (or the entry points it fakes)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(variants, "_REGISTERED", {})
    monkeypatch.setattr(variants, "_LOADED", {})
    monkeypatch.setattr(variants, "_EVALUATIONS", {})
    monkeypatch.setattr(variants, "_entry_points", lambda group: {})
    yield
    torch.set_num_threads(before)


def _backbone() -> EncoderBackbone:
    encoder = create_encoder(
        "thinkingearth_vit_tiny", embed_dim=48, depth=2, num_heads=3, patch_size=8, img_size=SIZE
    )
    return EncoderBackbone(encoder)


def _batch(task: str, sensor: str = "sentinel-2-l2a", n: int = 2) -> dict[str, Any]:
    data = SyntheticCopernicus(task, sensor, n=n, size=SIZE)  # type: ignore[arg-type]
    norm = Normaliser()
    samples = []
    for i in range(n):
        sample = dict(data[i])
        sample["image"] = norm(sample["image"], sample["sensor"], sample["bands"])
        samples.append(sample)
    return collate(samples)


# ---------------------------------------------------------------------------- UncertaintyHead


def test_methods_are_the_contract_names() -> None:
    assert UNCERTAINTY_METHODS == ("none", "heteroscedastic", "mc_dropout", "ensemble")
    assert UncertaintyHead().to_dict() == {
        "uncertainty": "none",
        "samples": 100,
        "temperature": 1.0,
        "mc_samples": 20,
        "dropout": 0.2,
        "members": 5,
    }
    head = UncertaintyHead("mc_dropout", mc_samples=4, dropout=0.5)
    assert UncertaintyHead.from_dict(head.to_dict()) == head
    assert UncertaintyHead.from_dict(None).plain


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"uncertainty": "bayes"}, r"head\.uncertainty is 'bayes'; expected one of: none, "),
        ({"samples": 0}, r"head\.samples must be an integer >= 1; got 0"),
        ({"samples": 2.5}, r"head\.samples must be an integer >= 1"),
        ({"temperature": 0.0}, r"head\.temperature must be > 0; got 0\.0"),
        ({"temperature": float("inf")}, r"head\.temperature must be > 0"),
        ({"mc_samples": 1}, r"head\.mc_samples must be an integer >= 2; got 1"),
        ({"dropout": 1.0}, r"head\.dropout must be in \(0, 1\); got 1\.0"),
        ({"dropout": 0}, r"head\.dropout must be in \(0, 1\)"),
        (
            {"uncertainty": "ensemble", "members": 1},
            r"an ensemble needs at least 2 members; got head\.members 1",
        ),
    ],
)
def test_bad_head_values_are_one_line(values: dict[str, Any], message: str) -> None:
    with pytest.raises(UserInputError, match=message) as caught:
        UncertaintyHead(**values)
    assert "\n" not in str(caught.value)


def test_members_only_matter_for_an_ensemble() -> None:
    assert UncertaintyHead("mc_dropout", members=1).members == 1


def test_unknown_head_keys_are_named() -> None:
    with pytest.raises(UserInputError, match=r"unknown head key.*: sample; expected"):
        UncertaintyHead.from_dict({"sample": 3})


# ---------------------------------------------------------------------------- builders


def test_unknown_method_is_one_line() -> None:
    register_uncertainty("mc_dropout", lambda *a, **k: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(
        UserInputError, match=r"no builder for uncertainty method 'ensemble'; installed: mc_dropout"
    ):
        get_uncertainty_builder("ensemble")
    with pytest.raises(UserInputError, match="no builder for uncertainty method 'none'"):
        get_uncertainty_builder("none")


def test_an_entry_point_that_cannot_import_names_the_method(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = EntryPoint(
        "heteroscedastic", "thinkingearth_no_such_module.heads:heteroscedastic", ENTRY_POINT_GROUP
    )
    monkeypatch.setattr(
        variants,
        "_entry_points",
        lambda group: {"heteroscedastic": broken} if group == ENTRY_POINT_GROUP else {},
    )
    with pytest.raises(UserInputError) as caught:
        get_uncertainty_builder("heteroscedastic")
    message = str(caught.value)
    assert message.startswith("uncertainty method heteroscedastic (thinkingearth_no_such_module")
    assert "cannot be loaded" in message and "\n" not in message
    # the same error surfaces where a config names the method
    with pytest.raises(UserInputError, match="uncertainty method heteroscedastic"):
        build_task_module(
            "segmentation",
            _backbone(),
            num_classes=3,
            protocol="finetune",
            lr=1e-3,
            uncertainty=UncertaintyHead("heteroscedastic"),
        )


def test_an_entry_point_is_loaded_once_and_called_for_its_builder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    def builder(*args: Any, **kwargs: Any) -> Any:
        return None

    class FakeEntryPoint:
        value = "fake:factory"

        def load(self) -> Any:
            calls.append("load")
            return lambda: builder

    monkeypatch.setattr(variants, "_entry_points", lambda group: {"ensemble": FakeEntryPoint()})
    assert get_uncertainty_builder("ensemble") is builder
    assert get_uncertainty_builder("ensemble") is builder
    assert calls == ["load"]


class DropoutSegmentation(SegmentationTask):
    """A test variant built only from the hooks: twice the head outputs (the second half
    unused), dropout on the head's inputs kept on while sampling, ``mc_samples`` samples."""

    def __init__(self, *args: Any, uncertainty: UncertaintyHead, **kwargs: Any) -> None:
        self.uncertainty_head = uncertainty  # before the parent builds the head
        self.sampling = False
        super().__init__(*args, **kwargs)

    def head_outputs(self, outputs: int) -> int:
        assert self.uncertainty_head.uncertainty == "mc_dropout"  # readable during __init__
        return 2 * outputs

    def head_input(self, features: Any) -> Any:
        p = self.uncertainty_head.dropout
        return [F.dropout(f, p, training=self.sampling or self.training) for f in features]

    def predictive_sample_count(self) -> int:
        return self.uncertainty_head.mc_samples

    def predictive(self, batch: Mapping[str, Any], sample: int) -> Tensor:
        self.sampling = True
        try:
            size = output_size(batch, "mask")
            logits = self.logits(batch["image"], batch, size)
        finally:
            self.sampling = False
        return logits[:, : self.num_classes].softmax(dim=1)


def _dropout_builder(received: list[dict[str, Any]]) -> Any:
    def builder(kind: str, net: Any, *, head: UncertaintyHead, **kwargs: Any) -> TaskModule:
        received.append({"kind": kind, "head": head, **kwargs})
        if kind != "segmentation":
            raise UserInputError(f"the test variant does not support {kind}")
        return DropoutSegmentation(
            net,
            kwargs["num_classes"],
            ignore_index=kwargs["ignore_index"],
            protocol=kwargs["protocol"],
            head=kwargs["dense_head"],
            decoder_channels=kwargs["decoder_channels"],
            lr=kwargs["lr"],
            class_names=kwargs["class_names"],
            uncertainty=head,
        )

    return builder


def test_build_task_module_calls_the_registered_builder() -> None:
    received: list[dict[str, Any]] = []
    register_uncertainty("mc_dropout", _dropout_builder(received))
    head = UncertaintyHead("mc_dropout", mc_samples=3, dropout=0.5)
    torch.manual_seed(0)
    module = build_task_module(
        "segmentation",
        _backbone(),
        num_classes=4,
        protocol="linear-probe",
        lr=2e-3,
        ignore_index=255,
        decoder_channels=16,
        head="linear",
        uncertainty=head,
    )
    assert isinstance(module, DropoutSegmentation) and module.uncertainty_head is head
    call = received[0]
    assert call["kind"] == "segmentation" and call["head"] is head
    assert call["dense_head"] == "linear" and call["num_classes"] == 4 and call["lr"] == 2e-3
    assert call["protocol"] == "linear-probe" and call["ignore_index"] == 255
    assert (
        module.head is not None and module.head.decoder.classifier.out_channels == 8
    )  # 2K outputs
    batch = _batch("landcover")
    batch["mask"] = batch["mask"][:, :16, :16]
    module.train()
    samples = module.predictive_samples(batch)
    assert module.training  # the mode is restored
    assert samples.shape == (3, 2, 4, 16, 16)
    torch.testing.assert_close(samples.sum(dim=2), torch.ones(3, 2, 16, 16))
    assert not torch.allclose(samples[0], samples[1])  # dropout was on while sampling
    assert not samples.requires_grad
    # "none" builds today's module; a kind the builder refuses is its one-line error
    plain = build_task_module(
        "segmentation", _backbone(), num_classes=4, protocol="finetune", lr=1e-3
    )
    assert type(plain) is SegmentationTask and plain.uncertainty_head == UncertaintyHead()
    with pytest.raises(UserInputError, match="does not support regression"):
        build_task_module(
            "regression", _backbone(), num_classes=1, protocol="finetune", lr=1e-3, uncertainty=head
        )


def test_a_builder_must_return_a_module_with_its_head() -> None:
    register_uncertainty(
        "ensemble",
        lambda kind, net, *, head, **kw: build_task_module(
            kind, net, num_classes=kw["num_classes"], protocol="finetune", lr=1e-3
        ),
    )
    with pytest.raises(TypeError, match=r"must set module\.uncertainty_head"):
        build_task_module(
            "classification",
            _backbone(),
            num_classes=3,
            protocol="finetune",
            lr=1e-3,
            uncertainty=UncertaintyHead("ensemble", members=2),
        )


# ---------------------------------------------------------------------------- plain modules


def _module(kind: str, num_classes: int, **kwargs: Any) -> TaskModule:
    torch.manual_seed(0)
    return build_task_module(
        kind,  # type: ignore[arg-type]
        _backbone(),
        num_classes=num_classes,
        protocol="finetune",
        lr=1e-3,
        decoder_channels=16,
        **kwargs,
    )


def test_classification_probabilities_sum_to_one_and_match_step() -> None:
    module = _module("classification", 9)
    batch = _batch("multilabel")
    batch["label"] = batch["label"].argmax(dim=1)
    samples = module.predictive_samples(batch)
    assert samples.shape == (1, 2, 9)
    torch.testing.assert_close(samples.sum(dim=2), torch.ones(1, 2))
    _, logits, _ = module.eval().step(batch)
    torch.testing.assert_close(samples[0], logits.softmax(dim=1))


def test_multilabel_probabilities_are_per_label_sigmoids() -> None:
    module = _module("multilabel", 9)
    batch = _batch("multilabel")
    samples = module.predictive_samples(batch)
    assert samples.shape == (1, 2, 9)
    _, probs, _ = module.eval().step(batch)
    torch.testing.assert_close(samples[0], probs)  # step gives probabilities for multi-label
    assert ((samples > 0) & (samples < 1)).all()
    assert not torch.allclose(samples.sum(dim=2), torch.ones(1, 2))  # not a softmax


def test_segmentation_probabilities_are_at_the_mask_size() -> None:
    module = _module("segmentation", 9)
    batch = _batch("landcover")
    batch["mask"] = batch["mask"][:, ::2, ::2].contiguous()  # a coarser label grid
    module.train()
    samples = module.predictive_samples(batch)
    assert module.training
    assert samples.shape == (1, 2, 9, 16, 16)
    torch.testing.assert_close(samples.sum(dim=2), torch.ones(1, 2, 16, 16))
    _, logits, _ = module.eval().step(batch)
    torch.testing.assert_close(samples[0], logits.softmax(dim=1))
    del batch["mask"]  # no labels: the image's size
    assert module.predictive_samples(batch).shape == (1, 2, 9, SIZE, SIZE)


def test_change_probabilities_sum_to_one() -> None:
    module = _module("change", 3, ignore_index=3)
    batch = _batch("flood", "sentinel-1-grd")
    samples = module.predictive_samples(batch)
    assert samples.shape == (1, 2, 3, SIZE, SIZE)
    torch.testing.assert_close(samples.sum(dim=2), torch.ones(1, 2, SIZE, SIZE))
    _, logits, _ = module.eval().step(batch)
    torch.testing.assert_close(samples[0], logits.softmax(dim=1))


def test_regression_gives_mean_and_zero_variance_in_target_units_at_the_target_size() -> None:
    module = _module("regression", 1, target_stats=(50.0, 20.0))
    batch = _batch("biomass")
    batch["target"] = batch["target"][..., :24, :20].contiguous()
    samples = module.predictive_samples(batch)
    assert samples.shape == (1, 2, 2, 24, 20)
    assert torch.equal(samples[0, :, 1], torch.zeros(2, 24, 20))
    _, preds, _ = module.eval().step(batch)
    torch.testing.assert_close(samples[0, :, :1], preds)  # target units, as the metrics see
    assert samples[0, :, 0].mean() == pytest.approx(50.0, abs=30.0)  # de-standardised
    del batch["target"]
    assert module.predictive_samples(batch).shape == (1, 2, 2, SIZE, SIZE)


def test_a_complete_network_must_have_the_head_outputs() -> None:
    class Doubled(SegmentationTask):
        def head_outputs(self, outputs: int) -> int:
            return 2 * outputs

    unet = build_baseline("unet", "segmentation", 3, 4, unet_widths=(8, 16))
    with pytest.raises(ValueError, match="has 4 outputs; the task has 4 classes \\(8 outputs\\)"):
        Doubled(unet, 4)


# ---------------------------------------------------------------------------- checkpoints


def _save(module: TaskModule, path: Path, classes: int) -> Path:
    return save_task(
        module.eval(),
        path,
        task="landcover",
        classes=[f"c{i}" for i in range(classes)],
        sensor="sentinel-2-l2a",
        bands=["B02", "B03", "B04"],
        normaliser=Normaliser(),
        tile=SIZE,
    )


def _rgb_batch() -> dict[str, Any]:
    batch = _batch("landcover")
    keep = [list(batch["bands"][0]).index(b) for b in ("B02", "B03", "B04")]
    batch["image"] = batch["image"][:, keep]
    batch["bands"] = [("B02", "B03", "B04")] * batch["image"].shape[0]
    return batch


def test_checkpoint_keeps_the_head_and_rebuilds_the_variant(tmp_path: Path) -> None:
    register_uncertainty("mc_dropout", _dropout_builder([]))
    head = UncertaintyHead("mc_dropout", mc_samples=2, dropout=0.3)
    module = _module("segmentation", 4, uncertainty=head)
    _save(module, tmp_path / "model", 4)
    header = json.loads((tmp_path / "model.json").read_text())
    assert header["uncertainty"] == head.to_dict() and header["format_version"] == 3
    loaded = load_task_module(tmp_path / "model")
    assert type(loaded.module) is DropoutSegmentation
    assert loaded.module.uncertainty_head == head
    batch = _rgb_batch()
    torch.manual_seed(1)
    before = module.predictive_samples(batch)
    torch.manual_seed(1)
    after = loaded.module.predictive_samples(batch)
    torch.testing.assert_close(before, after)  # same weights, same dropout draws
    # the method not installed where the checkpoint is read: one line naming both
    register_uncertainty("mc_dropout", None)
    with pytest.raises(UserInputError, match=r"model\.json: no builder for uncertainty method"):
        load_task_module(tmp_path / "model")


def test_a_checkpoint_without_the_key_loads_as_plain(tmp_path: Path) -> None:
    module = _module("segmentation", 4)
    _save(module, tmp_path / "model", 4)
    header = json.loads((tmp_path / "model.json").read_text())
    assert header["uncertainty"]["uncertainty"] == "none"
    del header["uncertainty"]
    header["format_version"] = 2
    (tmp_path / "model.json").write_text(json.dumps(header))
    loaded = load_task_module(tmp_path / "model")
    assert type(loaded.module) is SegmentationTask
    assert loaded.module.uncertainty_head == UncertaintyHead()
    header["uncertainty"] = {"uncertainty": "none", "samples": 0}
    (tmp_path / "model.json").write_text(json.dumps(header))
    with pytest.raises(CheckpointFormatError, match=r"head\.samples must be an integer >= 1"):
        load_task_module(tmp_path / "model")


class SharedBackboneClassifier(ClassificationTask):
    """The backbone also registered under a second name (as an ensemble whose members share
    the frozen backbone): one parameter, two state_dict names."""

    def __init__(self, *args: Any, uncertainty: UncertaintyHead, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.uncertainty_head = uncertainty
        self.members = nn.ModuleList([nn.ModuleDict({"backbone": self.backbone})])


def test_a_parameter_under_two_names_is_saved_and_loaded(tmp_path: Path) -> None:
    register_uncertainty(
        "ensemble",
        lambda kind, net, *, head, **kw: SharedBackboneClassifier(
            net, kw["num_classes"], protocol=kw["protocol"], uncertainty=head
        ),
    )
    torch.manual_seed(0)
    module = _module("classification", 4, uncertainty=UncertaintyHead("ensemble", members=2))
    assert isinstance(module, SharedBackboneClassifier)
    names = module.state_dict()
    shared = [k for k in names if k.startswith("members.0.backbone.")]
    assert shared and names[shared[0]].data_ptr() == names[shared[0][10:]].data_ptr()
    path = _save(module, tmp_path / "model", 4)
    assert path.is_file()
    loaded = load_task_module(tmp_path / "model")
    assert type(loaded.module) is SharedBackboneClassifier
    batch = _rgb_batch()
    torch.testing.assert_close(
        loaded.module.predictive_samples(batch), module.predictive_samples(batch)
    )


# ---------------------------------------------------------------------------- test evaluations


def test_test_evaluations_skip_what_cannot_import(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def working(module: Any, loader: Any, kind: str, *, ignore_index: Any, out: Path) -> Any:
        return TestEvaluation({"x": 1.0})

    register_test_evaluation("registered", working)
    broken = EntryPoint(
        "uncertainty", "thinkingearth_no_such_module.evaluation:test_evaluation", "x"
    )
    monkeypatch.setattr(
        variants,
        "_entry_points",
        lambda group: {"uncertainty": broken} if group == TEST_EVALUATION_GROUP else {},
    )
    with caplog.at_level("WARNING", logger="thinkingearth.tasks.variants"):
        found = test_evaluations()
    assert found == {"registered": working}
    assert "test evaluation uncertainty" in caplog.text and "cannot be loaded" in caplog.text
    register_test_evaluation("registered", None)
    assert test_evaluations() == {}
