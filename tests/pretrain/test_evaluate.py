"""The frozen-encoder probes score mAP with the project's one definition (tasks.metrics)."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.classification import MultilabelAveragePrecision

from thinkingearth.models import create_encoder
from thinkingearth.pretrain.evaluate import ProbeSuite
from thinkingearth.tasks.metrics import multilabel_map

TINY_ENCODER = {
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "hyper_dim": 16,
    "patch_size": 8,
    "img_size": 32,
}


@pytest.mark.filterwarnings("ignore:No positive samples found in target")
def test_probe_map_leaves_out_absent_labels_and_says_how_many() -> None:
    torch.manual_seed(0)
    encoder = create_encoder("thinkingearth_vit_tiny", **TINY_ENCODER).eval()
    suite = ProbeSuite(size=32, n_train=12, n_test=8, steps=5, batch_size=8).prepare()
    target = suite._data["ml_test"].target
    present = target.sum(0) > 0
    assert bool(present.any())
    # Make sure at least one label has no positive in the test split.
    target[:, int(present.nonzero()[0])] = 0
    absent = int((target.sum(0) == 0).sum())

    scores, truth = suite.multilabel_scores(encoder, seed=3)
    assert torch.equal(truth, target.long())
    value = suite.multilabel_map(encoder, seed=3)
    assert (value, absent) == pytest.approx(multilabel_map(scores, truth))
    # torchmetrics' macro average would count the absent labels as 0: not the number reported.
    zeros = float(MultilabelAveragePrecision(num_labels=target.shape[1])(scores, truth))
    assert value > zeros

    result = suite.evaluate(encoder, seed=3)
    assert result["multilabel_map"] == pytest.approx(value)
    assert result["multilabel_map_classes_absent"] == absent
    assert set(result) == {"multilabel_map", "multilabel_map_classes_absent", "flood_miou"}
