"""Uncertainty evaluation: metrics on predictions whose calibration is known by construction,
clean targets preferred, ignored pixels and NaN targets excluded, bounded pixel subsets, and the
finetune plugin's figures and report section."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from thinkingearth.errors import UserInputError
from thinkingearth.tasks.variants import TestEvaluation, UncertaintyHead
from thinkingearth.uncertainty.evaluation import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    Z90,
    _Reservoir,
    evaluate_uncertainty,
    test_evaluation,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One intra-op thread: tiny tensors on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class FakeModule(nn.Module):
    """Returns the predictive samples each batch carries under ``probs`` ([S, B, K, ...]).

    Records whether it was called in eval mode, on which device, and with gradients off.
    """

    def __init__(self, head: UncertaintyHead | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.calls: list[tuple[bool, torch.device, bool]] = []
        if head is not None:
            self.uncertainty_head = head

    def predictive_samples(self, batch: dict[str, Any]) -> Tensor:
        self.calls.append((self.training, batch["probs"].device, torch.is_grad_enabled()))
        return batch["probs"]


def _batches(probs: Tensor, targets: dict[str, Tensor], size: int) -> list[dict[str, Tensor]]:
    """Split [S, N, ...] samples and [N, ...] targets into batches of ``size`` items."""
    n = probs.shape[1]
    return [
        {"probs": probs[:, i : i + size], **{k: v[i : i + size] for k, v in targets.items()}}
        for i in range(0, n, size)
    ]


def _two_class(confidence: Tensor, predicted_first: Tensor) -> Tensor:
    """[1, N, 2] probabilities: the predicted class gets ``confidence``."""
    p0 = torch.where(predicted_first, confidence, 1 - confidence)
    return torch.stack([p0, 1 - p0], dim=1)[None]


def _calibrated(n: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Confidence c ~ U(0.5, 1); the label is the predicted class with probability c."""
    g = torch.Generator().manual_seed(seed)
    confidence = 0.5 + 0.5 * torch.rand(n, generator=g, dtype=torch.float64)
    predicted_first = torch.rand(n, generator=g) < 0.5
    right = torch.rand(n, generator=g, dtype=torch.float64) < confidence
    label = torch.where(predicted_first == right, 0, 1)
    return confidence, predicted_first, label


# ---------------------------------------------------------------------------- classification


def test_calibrated_predictions_have_a_small_ece_and_overconfident_ones_a_large_one() -> None:
    confidence, first, label = _calibrated(40_000)
    probs = _two_class(confidence, first).float()
    calibrated = evaluate_uncertainty(
        FakeModule(), _batches(probs, {"label": label}, 4096), "classification"
    )
    assert set(calibrated.metrics) == set(CLASSIFICATION_METRICS)
    assert calibrated.metrics["ece"] < 0.015
    assert calibrated.metrics["ece_bins"] == 15
    assert calibrated.items == calibrated.kept == 40_000
    # uncertainty that ranks errors: discarding by it beats discarding at random
    assert calibrated.metrics["discard_auc"] > calibrated.metrics["discard_auc_random"] + 0.03
    assert calibrated.metrics["unc_err_spearman"] > 0.1
    # nll and brier against their closed forms, over every item
    p = probs[0].double()
    truth = p[torch.arange(len(label)), label]
    assert calibrated.metrics["nll"] == pytest.approx(float(-truth.log().mean()), rel=1e-4)
    onehot = torch.nn.functional.one_hot(label, 2).double()
    brier = float(((p - onehot) ** 2).sum(1).mean())
    assert calibrated.metrics["brier"] == pytest.approx(brier, rel=1e-4)
    # deterministic: aleatoric is all of the entropy
    assert calibrated.metrics["epistemic_mean"] == pytest.approx(0.0, abs=1e-6)
    assert calibrated.metrics["aleatoric_mean"] == pytest.approx(
        calibrated.metrics["entropy_mean"], rel=1e-5
    )

    # the same labels predicted at 0.99: accuracy is about 0.75, so the ECE is about 0.24
    overconfident = _two_class(torch.full_like(confidence, 0.99), first).float()
    result = evaluate_uncertainty(
        FakeModule(), _batches(overconfident, {"label": label}, 4096), "classification"
    )
    accuracy = float((label == torch.where(first, 0, 1)).double().mean())
    assert result.metrics["ece"] == pytest.approx(0.99 - accuracy, abs=1e-4)
    assert result.metrics["ece"] > 0.2
    assert result.metrics["nll"] > calibrated.metrics["nll"] + 0.3
    assert result.reliability is not None and int(result.reliability.counts.sum()) == 40_000


def test_sampled_models_split_entropy_into_aleatoric_and_epistemic() -> None:
    # two weight samples that disagree completely: all of the entropy is epistemic (ln 2);
    # two that agree at 0.5: all of it is aleatoric
    disagree = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # [S=2, B=1, K=2]
    agree = torch.full((2, 1, 2), 0.5)
    probs = torch.cat([disagree, agree], dim=1)
    batches = [{"probs": probs.repeat(1, 10, 1), "label": torch.tensor([0, 1] * 10)}]
    result = evaluate_uncertainty(FakeModule(), batches, "classification", bins=2)
    ln2 = math.log(2)
    assert result.metrics["entropy_mean"] == pytest.approx(ln2, rel=1e-5)
    assert result.metrics["epistemic_mean"] == pytest.approx(ln2 / 2, rel=1e-4)
    assert result.metrics["aleatoric_mean"] == pytest.approx(ln2 / 2, rel=1e-4)


def test_the_clean_labels_are_used_when_a_batch_carries_them() -> None:
    label = torch.tensor([0, 1, 2, 0, 1, 2] * 5)
    probs = torch.nn.functional.one_hot(label, 3).float()[None] * 0.97 + 0.01
    noisy = (label + 1) % 3
    clean = evaluate_uncertainty(
        FakeModule(),
        [{"probs": probs, "label": noisy, "label_clean": label}],
        "classification",
        bins=5,
    )
    as_noisy = evaluate_uncertainty(
        FakeModule(), [{"probs": probs, "label": noisy}], "classification", bins=5
    )
    assert clean.metrics["nll"] == pytest.approx(-math.log(0.98), rel=1e-4)
    assert clean.metrics["ece"] == pytest.approx(0.02, abs=1e-4)  # right, at confidence 0.98
    assert as_noisy.metrics["ece"] == pytest.approx(0.98, abs=1e-4)  # wrong at 0.98


def test_more_bins_than_predictions_is_one_line() -> None:
    probs = torch.full((1, 7, 2), 0.5)
    batches = [{"probs": probs, "label": torch.zeros(7, dtype=torch.long)}]
    with pytest.raises(UserInputError, match=r"20 bins.*7") as error:
        evaluate_uncertainty(FakeModule(), batches, "classification", bins=20)
    assert "\n" not in str(error.value)


def test_the_module_runs_in_eval_mode_without_gradients_and_is_restored() -> None:
    module = FakeModule()
    module.train()
    label = torch.tensor([0, 1] * 10)
    evaluate_uncertainty(
        module, [{"probs": torch.full((1, 20, 2), 0.5), "label": label}], "classification", bins=2
    )
    assert module.calls == [(False, torch.device("cpu"), False)]
    assert module.training


def test_bad_inputs_are_one_line_errors() -> None:
    probs = torch.full((1, 4, 2), 0.5)
    with pytest.raises(UserInputError, match=r"outside 0\.\.1"):
        evaluate_uncertainty(
            FakeModule(),
            [{"probs": probs, "label": torch.tensor([0, 1, 2, 0])}],
            "classification",
            bins=2,
        )
    with pytest.raises(UserInputError, match="unknown task kind"):
        evaluate_uncertainty(FakeModule(), [], "detection")  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="no test item"):
        evaluate_uncertainty(
            FakeModule(),
            [{"probs": torch.full((1, 1, 2, 2, 2), 0.5), "mask": torch.full((1, 2, 2), 255)}],
            "segmentation",
            ignore_index=255,
        )


# ---------------------------------------------------------------------------- multi-label


def test_multilabel_scores_every_image_label_pair() -> None:
    # 10 images x 4 labels, every probability 0.8 or 0.2 (confidence 0.8) and exactly 8 of
    # every 10 pairs right: perfectly calibrated in one bin
    g = torch.Generator().manual_seed(1)
    positive = torch.rand(10, 4, generator=g) < 0.5
    probs = torch.where(positive, 0.8, 0.2)
    right = torch.ones(40, dtype=torch.bool)
    right[torch.randperm(40, generator=g)[:8]] = False
    label = torch.where(right.reshape(10, 4), positive, ~positive).long()
    batches = _batches(probs[None], {"label": label}, 3)
    result = evaluate_uncertainty(FakeModule(), batches, "multilabel", bins=4)
    assert result.items == 10  # images, as the discard test counts them
    assert result.reliability is not None and int(result.reliability.counts.sum()) == 40
    assert result.metrics["ece"] == pytest.approx(0.0, abs=1e-6)
    # every image has the same summed Bernoulli entropy 4 H(0.8)
    h = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
    assert result.metrics["entropy_mean"] == pytest.approx(4 * h, rel=1e-5)
    # discard scores the share of an image's labels right: 0.8 on average
    assert result.discard.values[0] == pytest.approx(0.8)
    # overconfident: the same labels at 0.99 / 0.01
    sharp = torch.where(positive, 0.99, 0.01)
    result = evaluate_uncertainty(
        FakeModule(), _batches(sharp[None], {"label": label}, 3), "multilabel", bins=10
    )
    assert result.metrics["ece"] == pytest.approx(0.19, abs=1e-5)


# ---------------------------------------------------------------------------- dense


def test_segmentation_ignored_pixels_count_nowhere() -> None:
    g = torch.Generator().manual_seed(2)
    mask = torch.randint(0, 3, (6, 8, 8), generator=g)
    ignored = torch.rand(6, 8, 8, generator=g) < 0.3
    probs = torch.nn.functional.one_hot(mask, 3).permute(0, 3, 1, 2).float() * 0.9 + 0.1 / 3
    # where ignored, the label says 255 and the prediction is confidently wrong elsewhere
    wrong = torch.nn.functional.one_hot((mask + 1) % 3, 3).permute(0, 3, 1, 2).float()
    probs = torch.where(ignored[:, None], wrong, probs)
    target = torch.where(ignored, 255, mask)
    batches = _batches(probs[None], {"mask": target}, 4)
    result = evaluate_uncertainty(FakeModule(), batches, "segmentation", ignore_index=255)
    valid = int((~ignored).sum())
    assert result.items == result.kept == valid
    assert result.reliability is not None and int(result.reliability.counts.sum()) == valid
    # only the right, 0.9333-confident pixels are scored
    assert result.metrics["ece"] == pytest.approx(1 - (0.9 + 0.1 / 3), abs=1e-5)
    assert result.metrics["nll"] == pytest.approx(-math.log(0.9 + 0.1 / 3), rel=1e-5)
    assert result.discard.values[0] == pytest.approx(1.0)


def test_change_detection_uses_the_clean_mask_and_its_ignore_index() -> None:
    mask = torch.tensor([[[0, 1], [2, 3]]]).repeat(8, 1, 1)  # 3 = invalid (Kuro Siwo)
    predicted = torch.where(mask == 3, 0, mask)
    probs = torch.nn.functional.one_hot(predicted, 3).permute(0, 3, 1, 2).float()[None]
    noisy = torch.zeros_like(mask)  # "missed flood": every pixel labelled no water
    batches = [{"probs": probs, "mask": noisy, "mask_clean": mask}]
    result = evaluate_uncertainty(FakeModule(), batches, "change", ignore_index=3, bins=4)
    assert result.items == 24
    assert result.metrics["ece"] == pytest.approx(0.0, abs=1e-6)
    assert result.discard.values[0] == pytest.approx(1.0)


def test_max_items_bounds_the_kept_pixels_and_the_subset_is_seeded_and_uniform() -> None:
    mask = torch.zeros(40, 16, 16, dtype=torch.long)
    probs = torch.full((1, 40, 2, 16, 16), 0.5)
    batches = _batches(probs, {"mask": mask}, 5)
    result = evaluate_uncertainty(FakeModule(), batches, "segmentation", max_items=1000, bins=2)
    assert result.items == 40 * 256
    assert result.kept == 1000
    assert result.reliability is not None and int(result.reliability.counts.sum()) == 1000

    # the reservoir itself: never above capacity, a uniform sample of every part, seeded
    def sample(seed: int) -> Tensor:
        reservoir = _Reservoir(500, torch.Generator().manual_seed(seed))
        for part in range(20):
            reservoir.add({"index": torch.arange(part * 1000, (part + 1) * 1000)})
            assert len(reservoir) <= 500
        return reservoir.fields["index"]

    kept = sample(0)
    assert kept.numel() == 500 == kept.unique().numel()
    assert float(kept.double().mean()) == pytest.approx(10_000, rel=0.08)
    assert len(set((kept // 1000).tolist())) == 20  # every part represented
    assert torch.equal(kept, sample(0))
    assert not torch.equal(kept.sort().values, sample(1).sort().values)


# ---------------------------------------------------------------------------- regression


def test_regression_gaussian_nll_and_coverage_of_a_correctly_specified_gaussian() -> None:
    g = torch.Generator().manual_seed(3)
    mean = 10 * torch.rand(20, 1, 32, 32, generator=g)
    variance = 0.5 + 2 * torch.rand(20, 1, 32, 32, generator=g)
    target = mean + variance.sqrt() * torch.randn(20, 1, 32, 32, generator=g)
    target[:, :, :4] = math.nan  # unknown pixels count nowhere
    probs = torch.cat([mean, variance], dim=1)[None]  # [S=1, B, 2, H, W]
    batches = _batches(probs, {"target": target}, 4)
    result = evaluate_uncertainty(FakeModule(), batches, "regression")
    assert set(result.metrics) == set(REGRESSION_METRICS)
    assert result.reliability is None
    finite = torch.isfinite(target)
    assert result.items == int(finite.sum()) == 20 * 28 * 32
    y, mu, var = target[finite].double(), mean[finite].double(), variance[finite].double()
    nll = 0.5 * (torch.log(2 * math.pi * var) + (y - mu) ** 2 / var)
    assert result.metrics["nll"] == pytest.approx(float(nll.mean()), rel=1e-5)
    assert result.metrics["coverage90"] == pytest.approx(0.9, abs=0.01)
    inside = ((y - mu).abs() <= Z90 * var.sqrt()).double().mean()
    assert result.metrics["coverage90"] == pytest.approx(float(inside), abs=1e-9)
    assert result.metrics["aleatoric_mean"] == pytest.approx(float(var.mean()), rel=1e-5)
    assert result.metrics["epistemic_mean"] == pytest.approx(0.0, abs=1e-9)
    assert result.discard.metric == "rmse" and not result.discard.higher_is_better
    # larger predicted std goes with larger errors
    assert result.metrics["unc_err_spearman"] > 0.1
    assert result.metrics["discard_auc"] < result.metrics["discard_auc_random"]

    # overconfident: the same means with a quarter of the std cover far less
    tight = torch.cat([mean, variance / 16], dim=1)[None]
    result = evaluate_uncertainty(
        FakeModule(), _batches(tight, {"target": target}, 4), "regression"
    )
    assert result.metrics["coverage90"] < 0.4


def test_regression_variance_split_and_clean_targets() -> None:
    # two weight samples with means 1 and 3 and variance 0.5 each: total variance 0.5 + 1
    means = torch.tensor([1.0, 3.0]).reshape(2, 1, 1, 1, 1).expand(2, 3, 1, 4, 4)
    variances = torch.full((2, 3, 1, 4, 4), 0.5)
    probs = torch.cat([means, variances], dim=2)
    clean = torch.full((3, 1, 4, 4), 2.0)
    noisy = clean + 100
    result = evaluate_uncertainty(
        FakeModule(), [{"probs": probs, "target": noisy, "target_clean": clean}], "regression"
    )
    assert result.metrics["aleatoric_mean"] == pytest.approx(0.5, rel=1e-6)
    assert result.metrics["epistemic_mean"] == pytest.approx(1.0, rel=1e-6)
    expected = 0.5 * math.log(2 * math.pi * 1.5)  # the target sits at the mixture's mean
    assert result.metrics["nll"] == pytest.approx(expected, rel=1e-6)
    assert result.metrics["coverage90"] == 1.0


# ---------------------------------------------------------------------------- finetune plugin


def _png_size(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size


def test_test_evaluation_writes_figures_and_a_report_section(tmp_path: Path) -> None:
    confidence, first, label = _calibrated(3000)
    probs = _two_class(confidence, first).float()
    module = FakeModule(UncertaintyHead(uncertainty="mc_dropout", mc_samples=4))
    found = test_evaluation(
        module,
        _batches(probs, {"label": label}, 500),
        "classification",
        ignore_index=None,
        out=tmp_path,
    )
    assert isinstance(found, TestEvaluation)
    assert set(found.metrics) == set(CLASSIFICATION_METRICS)
    assert found.files == (tmp_path / "reliability.png", tmp_path / "discard.png")
    for path in found.files:
        width, height = _png_size(path)
        assert 300 <= width <= 2000 and 300 <= height <= 2000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["discard.png", "reliability.png"]
    text = found.markdown
    assert text.startswith("## Uncertainty")
    assert "15 equal-width confidence bins" in text
    assert "| ece_bins | 15 |" in text
    assert "mc_dropout" in text and "4 dropout passes" in text
    assert "](reliability.png)" in text and "](discard.png)" in text


def test_test_evaluation_states_fewer_bins_on_a_tiny_split_and_skips_reliability_for_regression(
    tmp_path: Path,
) -> None:
    probs = torch.tensor([[[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]]])
    found = test_evaluation(
        FakeModule(),
        [{"probs": probs, "label": torch.tensor([0, 1, 1, 1])}],
        "classification",
        ignore_index=None,
        out=tmp_path / "a",
    )
    assert found.metrics["ece_bins"] == 4
    assert "over 4 equal-width confidence bins" in found.markdown
    assert "`none` (deterministic)" in found.markdown

    mean = torch.linspace(0, 1, 64).reshape(1, 1, 8, 8)
    probs = torch.cat([mean, torch.full_like(mean, 0.1)], dim=1)[None]
    found = test_evaluation(
        FakeModule(),
        [{"probs": probs, "target": mean + 0.05}],
        "regression",
        ignore_index=None,
        out=tmp_path / "b",
    )
    assert set(found.metrics) == set(REGRESSION_METRICS)
    assert found.files == (tmp_path / "b" / "discard.png",)
    assert not (tmp_path / "b" / "reliability.png").exists()
    assert "reliability" not in found.markdown and "](discard.png)" in found.markdown


# ---------------------------------------------------------------------------- real task modules


def _has_predictive_samples() -> bool:
    from thinkingearth.tasks.protocols import TaskModule

    try:
        from thinkingearth.tasks.segmentation import SegmentationTask

        return "predictive" in vars(SegmentationTask) and hasattr(TaskModule, "predictive_samples")
    except ImportError:  # pragma: no cover
        return False


@pytest.mark.parametrize(
    ("kind", "method"),
    [
        ("segmentation", "none"),
        ("regression", "none"),
        ("multilabel", "none"),
        ("segmentation", "mc_dropout"),
        ("regression", "heteroscedastic"),
    ],
)
def test_a_task_module_evaluates_end_to_end(kind: str, method: str, tmp_path: Path) -> None:
    if not _has_predictive_samples():
        pytest.skip("the task modules have no predictive_samples yet")
    from torch.utils.data import DataLoader

    from thinkingearth.data.sample import collate
    from thinkingearth.data.synthetic import SyntheticCopernicus
    from thinkingearth.models import create_encoder
    from thinkingearth.pretrain.transforms import Normaliser
    from thinkingearth.tasks import EncoderBackbone
    from thinkingearth.tasks.training import build_task_module

    torch.manual_seed(0)
    task = {"segmentation": "landcover", "regression": "biomass", "multilabel": "multilabel"}[kind]
    ds = SyntheticCopernicus(task, "sentinel-2-l2a", n=2, size=32)  # type: ignore[arg-type]
    norm = Normaliser()
    samples = []
    for i in range(len(ds)):
        s = dict(ds[i])
        s["image"] = norm(s["image"], s["sensor"], s["bands"])
        samples.append(s)
    loader = DataLoader(samples, batch_size=2, collate_fn=collate)
    backbone = EncoderBackbone(create_encoder("thinkingearth_vit_tiny", depth=2), patch_size=8)
    head = UncertaintyHead(uncertainty=method, mc_samples=3, samples=8)  # type: ignore[arg-type]
    module = build_task_module(
        kind,  # type: ignore[arg-type]
        backbone,
        num_classes=9,
        protocol="linear-probe",
        lr=1e-3,
        ignore_index=None,
        decoder_channels=16,
        uncertainty=head,
    )
    module.train()
    bins = 2 if kind == "multilabel" else 15
    result = evaluate_uncertainty(module, loader, kind, bins=bins)  # type: ignore[arg-type]
    assert module.training  # restored
    expected = REGRESSION_METRICS if kind == "regression" else CLASSIFICATION_METRICS
    assert set(result.metrics) == set(expected)
    if kind == "regression":
        finite = sum(int(torch.isfinite(s["target"]).sum()) for s in samples)
        assert result.items == finite
        if method == "none":
            assert result.metrics["aleatoric_mean"] == 0.0  # a plain module predicts no variance
            # no predictive distribution to score: NaN, not the huge value a floor would give
            assert math.isnan(result.metrics["coverage90"])
            assert math.isnan(result.metrics["nll"])
        else:
            assert result.metrics["aleatoric_mean"] > 0.0
            assert math.isfinite(result.metrics["nll"])
    else:
        assert result.items == (2 if kind == "multilabel" else 2 * 32 * 32)
        assert 0.0 <= result.metrics["ece"] <= 1.0
        assert math.isfinite(result.metrics["nll"]) and result.metrics["nll"] > 0
        if method == "none":
            assert result.metrics["epistemic_mean"] == pytest.approx(0.0, abs=1e-6)  # S = 1
        else:  # dropout passes disagree
            assert result.metrics["epistemic_mean"] > 0.0
    found = test_evaluation(module, loader, kind, ignore_index=None, out=tmp_path)  # type: ignore[arg-type]
    undefined = {"unc_err_spearman"} | (
        {"nll", "coverage90"} if (kind, method) == ("regression", "none") else set()
    )
    assert all(np.isfinite(v) or k in undefined for k, v in found.metrics.items())
    assert f"`{method}`" in found.markdown
    assert (tmp_path / "discard.png").is_file()
