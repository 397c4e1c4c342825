"""Source and unlabelled target samples served together, for methods that adapt in training.

:class:`SourceTargetPairs` pairs every item of a labelled source dataset with an item of an
unlabelled target dataset; :func:`collate_pairs` collates both sides with the toolkit's
:func:`~thinkingearth.data.sample.collate`, giving the ``{"source": batch, "target": batch}``
that :mod:`thinkingearth.adapt.methods` trains on. The two sides may differ in sensor, bands and
image size (cross-sensor adaptation): each side is collated on its own.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from thinkingearth.data.sample import collate_sides
from thinkingearth.errors import UserInputError

__all__ = ["SourceTargetPairs", "collate_pairs"]


class SourceTargetPairs(Dataset[dict[str, Any]]):
    """Item ``i``: ``{"source": source[i mod n_s], "target": target[π(i mod n_t)]}``.

    The length is ``max(n_s, n_t)``, so one pass covers every source and every target sample
    (the smaller side repeats); ``π`` is a permutation seeded by ``seed``, so which target
    sample meets which source sample is fixed by the seed and not by the order of the two
    datasets. Shuffle the pairs with the DataLoader as usual.

    Args:
        source: Labelled source samples.
        target: Unlabelled target samples.
        seed: Seed of the pairing.

    Raises:
        UserInputError: If either dataset is empty.
    """

    def __init__(
        self, source: Dataset[dict[str, Any]], target: Dataset[dict[str, Any]], seed: int = 0
    ) -> None:
        """Pair the datasets."""
        self.source = source
        self.target = target
        self.n_source = len(source)  # type: ignore[arg-type]
        self.n_target = len(target)  # type: ignore[arg-type]
        if self.n_source == 0:
            raise UserInputError("domain adaptation needs labelled source samples; none given")
        if self.n_target == 0:
            raise UserInputError("domain adaptation needs unlabelled target samples; none given")
        generator = torch.Generator().manual_seed(int(seed))
        self.order = torch.randperm(self.n_target, generator=generator).tolist()

    def __len__(self) -> int:
        return max(self.n_source, self.n_target)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"pair {index} out of range (0..{len(self) - 1})")
        return {
            "source": self.source[index % self.n_source],
            "target": self.target[self.order[index % self.n_target]],
        }


#: Collate ``{"source": Sample, "target": Sample}`` pairs into ``{"source": batch, "target":
#: batch}``, each side collated on its own (the two may differ in sensor, bands and size).
collate_pairs = collate_sides
