"""Label fractions and protocol names."""

from __future__ import annotations

import pytest

from thinkingearth.errors import UserInputError
from thinkingearth.tasks.protocols import PROTOCOLS, check_protocol, label_fraction_indices


def test_label_fractions_are_seeded_subsets() -> None:
    assert label_fraction_indices(200, 1.0, seed=3) == list(range(200))
    ten = label_fraction_indices(200, 0.1, seed=0)
    assert len(ten) == 20 and ten == sorted(set(ten)) and all(0 <= i < 200 for i in ten)
    assert ten == label_fraction_indices(200, 0.1, seed=0)  # reproducible
    assert ten != label_fraction_indices(200, 0.1, seed=1)  # each seed draws its own
    assert len(label_fraction_indices(200, 0.01, seed=0)) == 2
    assert len(label_fraction_indices(50, 0.01, seed=0)) == 2  # never fewer than 2
    assert len(label_fraction_indices(1, 0.5, seed=0)) == 1


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan")])
def test_bad_label_fractions(fraction: float) -> None:
    with pytest.raises(UserInputError, match=r"label fraction must be in \(0, 1\]"):
        label_fraction_indices(10, fraction, seed=0)


def test_protocol_names() -> None:
    assert PROTOCOLS == ("linear-probe", "frozen-upernet", "finetune")
    assert check_protocol("finetune") == "finetune"
    with pytest.raises(UserInputError, match="expected one of: linear-probe, frozen-upernet"):
        check_protocol("lora")
