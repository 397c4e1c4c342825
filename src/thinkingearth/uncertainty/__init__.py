"""Uncertainty as a measured output: models that predict their own label noise, the split of
predictive uncertainty into aleatoric and epistemic parts, label noise you can dial, and the
tests that say whether the uncertainty is worth trusting.

* :mod:`~thinkingearth.uncertainty.losses` — heteroscedastic losses: the sampled-softmax /
  sampled-sigmoid likelihood of noisy logits (Kendall & Gal 2017; Collier et al. 2021),
  memory-bounded for segmentation maps, and the Gaussian NLL for regression;
* :mod:`~thinkingearth.uncertainty.decompose` — total predictive entropy = expected entropy
  (aleatoric) + mutual information (epistemic); the law of total variance for regression;
* :mod:`~thinkingearth.uncertainty.calibration` — reliability diagrams and ECE (bin count
  stated), NLL, Brier score, discard (selective prediction) curves with a random line, and the
  rank correlation of uncertainty with error;
* :mod:`~thinkingearth.uncertainty.noise` — label noise you can dial (flips, dropped and added
  labels, boundary shifts, eroded or dilated blobs, missed flood patches, input-dependent noise),
  the clean truth kept beside the noisy label;
* :mod:`~thinkingearth.uncertainty.heads` — the heteroscedastic, MC-dropout and deep-ensemble
  task modules (the builders of the ``thinkingearth.uncertainty`` entry points);
* :mod:`~thinkingearth.uncertainty.evaluation` and :mod:`~thinkingearth.uncertainty.plots` —
  a task module's uncertainty scored on clean test labels, reliability diagrams and discard
  curves (``finetune``'s test evaluation, ``bench``'s columns).

Layering: sensors → data → models → tasks → uncertainty → infer / bench / cli. ``tasks`` never
imports this package; it reaches the heads through the ``thinkingearth.uncertainty`` entry
points. Submodules are imported on first use so ``import thinkingearth.uncertainty`` stays light.
"""

from __future__ import annotations

_LAZY: dict[str, str] = {
    "sampled_softmax_nll": "thinkingearth.uncertainty.losses",
    "sampled_sigmoid_bce": "thinkingearth.uncertainty.losses",
    "sampled_probabilities": "thinkingearth.uncertainty.losses",
    "gaussian_nll": "thinkingearth.uncertainty.losses",
    "entropy": "thinkingearth.uncertainty.decompose",
    "binary_entropy": "thinkingearth.uncertainty.decompose",
    "split_entropy": "thinkingearth.uncertainty.decompose",
    "split_variance": "thinkingearth.uncertainty.decompose",
    "Reliability": "thinkingearth.uncertainty.calibration",
    "reliability": "thinkingearth.uncertainty.calibration",
    "expected_calibration_error": "thinkingearth.uncertainty.calibration",
    "negative_log_likelihood": "thinkingearth.uncertainty.calibration",
    "brier_score": "thinkingearth.uncertainty.calibration",
    "DiscardCurve": "thinkingearth.uncertainty.calibration",
    "discard_curve": "thinkingearth.uncertainty.calibration",
    "spearman": "thinkingearth.uncertainty.calibration",
    "NoiseModel": "thinkingearth.uncertainty.noise",
    "NOISE_MODELS": "thinkingearth.uncertainty.noise",
    "DEFAULT_NOISE": "thinkingearth.uncertainty.noise",
    "LabelNoise": "thinkingearth.uncertainty.noise",
    "NoisyLabels": "thinkingearth.uncertainty.noise",
    "measured_rate": "thinkingearth.uncertainty.noise",
    "UncertaintyEvaluation": "thinkingearth.uncertainty.evaluation",
    "evaluate_uncertainty": "thinkingearth.uncertainty.evaluation",
    "reliability_png": "thinkingearth.uncertainty.plots",
    "discard_png": "thinkingearth.uncertainty.plots",
}


def __getattr__(name: str) -> object:
    """Import the submodules lazily (``from thinkingearth.uncertainty import split_entropy``)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
