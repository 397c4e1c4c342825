"""The shared contrastive loss reduces to SimCLR and SupCon; SoftCon follows label similarity."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from thinkingearth.pretrain.losses import (
    contrastive_loss,
    contrastive_targets,
    cosine_distillation_loss,
    masked_reconstruction_loss,
    mean_per_group,
)


def _nt_xent(z1, z2, t):
    """SimCLR's NT-Xent, written out (Chen et al. 2020)."""
    z = F.normalize(torch.cat((z1, z2)), dim=1)
    n = z1.shape[0]
    sim = z @ z.T / t
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        others = torch.cat((sim[i, :i], sim[i, i + 1 :]))
        total += -(sim[i, j] - torch.logsumexp(others, 0))
    return total / (2 * n)


def _supcon(z1, z2, labels, t):
    """SupCon L_out (Khosla et al. 2020, eq. 2) with same-label-set positives."""
    z = F.normalize(torch.cat((z1, z2)), dim=1)
    y = torch.cat((labels, labels))
    sim = z @ z.T / t
    total = 0.0
    for i in range(len(z)):
        others = [k for k in range(len(z)) if k != i]
        log_den = torch.logsumexp(sim[i, others], 0)
        positives = [p for p in others if torch.equal(y[p], y[i])]
        total += -sum(sim[i, p] - log_den for p in positives) / len(positives)
    return total / len(z)


def test_simclr_and_supcon_match_their_definitions():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    labels = torch.tensor([[1, 0, 1], [1, 0, 1], [0, 1, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    assert torch.allclose(contrastive_loss(z1, z2, 0.2, "simclr"), _nt_xent(z1, z2, 0.2), atol=1e-5)
    assert torch.allclose(
        contrastive_loss(z1, z2, 0.2, "supcon", labels), _supcon(z1, z2, labels, 0.2), atol=1e-5
    )


def test_softcon_targets_follow_label_similarity_with_views_as_full_positives():
    labels = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]])
    w = contrastive_targets(4, "softcon", labels)
    assert torch.allclose(w.sum(1), torch.ones(8))
    assert (w.diagonal() == 0).all()
    raw = w / w.max(dim=1, keepdim=True).values  # undo the row normalisation
    for i in range(4):
        assert raw[i, i + 4] == 1 and raw[i + 4, i] == 1  # the other view: a full positive
    assert torch.isclose(raw[0, 1], torch.tensor(2**-0.5))  # cosine of the label vectors
    assert raw[0, 2] == 0 and raw[3, :4].sum() == 0  # disjoint labels / no labels: negatives
    # Identical label sets: SoftCon's targets equal SupCon's.
    same = torch.tensor([[1, 0], [1, 0], [0, 1]])
    assert torch.allclose(
        contrastive_targets(3, "softcon", same), contrastive_targets(3, "supcon", same)
    )


def test_softcon_prefers_embeddings_that_mirror_label_similarity():
    labels = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 1]])
    aligned = F.normalize(labels.float() + 0.01, dim=1)
    shuffled = aligned[[2, 3, 0, 1]]
    loss = lambda z: contrastive_loss(z, z, 0.1, "softcon", labels)  # noqa: E731
    assert loss(aligned) < loss(shuffled)


def test_mae_loss_counts_masked_patches_only_and_normalises_pixels():
    target = torch.randn(2, 4, 3, 16)
    pred = torch.zeros_like(target)
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 1]])
    loss = masked_reconstruction_loss(pred, target, mask, norm_pix=True)
    assert torch.allclose(loss, torch.ones(2), atol=1e-4)  # predicting the mean costs 1
    wrong = pred.clone()
    wrong[0, 2:] = 100.0  # visible patches do not count
    assert torch.allclose(masked_reconstruction_loss(wrong, target, mask), loss)


def test_cosine_distillation_and_per_group_means():
    a = torch.randn(5, 7)
    assert cosine_distillation_loss(a, 3 * a).abs() < 1e-6
    assert torch.isclose(cosine_distillation_loss(a, -a), torch.tensor(2.0))
    overall, groups = mean_per_group(torch.tensor([1.0, 1.0, 1.0, 4.0]), ["s2", "s2", "s2", "s1"])
    assert groups["s2"] == 1 and groups["s1"] == 4 and overall == 2.5
