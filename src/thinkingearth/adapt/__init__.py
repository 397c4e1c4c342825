"""Domain adaptation and generalisation: a model trained on one domain made to work on another.

Layering: sensors → data → models → tasks → adapt → infer / bench / cli. ``tasks`` never
imports this package; the methods plug in through the ``thinkingearth.adaptation`` entry points
(:func:`thinkingearth.tasks.variants.get_adaptation`, configured by
:class:`thinkingearth.tasks.variants.AdaptSection`).

* :mod:`~thinkingearth.adapt.losses`: gradient reversal, domain discriminator, CORAL, MMD,
  entropy, pseudo-labels;
* :mod:`~thinkingearth.adapt.methods`: DANN, DeepCORAL, MMD, self-training (in training, through
  :class:`~thinkingearth.adapt.methods.AdaptedModule`), AdaBN and TENT (after training);
* :mod:`~thinkingearth.adapt.generalise`: band dropout, spectral jitter, metadata dropout;
* :mod:`~thinkingearth.adapt.data`: source and unlabelled target samples paired for training.
"""

from thinkingearth.adapt.data import SourceTargetPairs, collate_pairs
from thinkingearth.adapt.generalise import augment_batch
from thinkingearth.adapt.losses import (
    DomainDiscriminator,
    coral_loss,
    entropy,
    grad_reverse,
    mmd_loss,
    pseudo_labels,
)
from thinkingearth.adapt.methods import AdaptedModule, Method, adapt_batchnorm, tent_adapt

__all__ = [
    "AdaptedModule",
    "DomainDiscriminator",
    "Method",
    "SourceTargetPairs",
    "adapt_batchnorm",
    "augment_batch",
    "collate_pairs",
    "coral_loss",
    "entropy",
    "grad_reverse",
    "mmd_loss",
    "pseudo_labels",
    "tent_adapt",
]
