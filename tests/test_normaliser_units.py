"""The Normaliser reads SAR units from the Sample: dB input is not taken for linear sigma0."""

from __future__ import annotations

import pytest
import torch

from thinkingearth.data.transforms import Normaliser
from thinkingearth.errors import UserInputError


def test_db_input_normalises_like_the_same_backscatter_in_linear_units() -> None:
    linear = torch.rand(2, 8, 8) * 0.3 + 1e-3
    db = 10 * torch.log10(linear)
    normaliser = Normaliser()
    expected = normaliser(linear, "sentinel-1-grd", ["VV", "VH"])
    got = normaliser(db, "sentinel-1-grd", ["VV", "VH"], units="dB")
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # taken as linear, dB values collapse to the floor: the silent trap this guards against
    wrong = normaliser(db, "sentinel-1-grd", ["VV", "VH"])
    assert wrong.flatten(1).std(1).max() < 1e-3 < got.flatten(1).std(1).min()


def test_unknown_units_are_refused() -> None:
    with pytest.raises(UserInputError, match="units"):
        Normaliser()(torch.ones(2, 4, 4), "sentinel-1-grd", ["VV", "VH"], units="natural")
