"""Metadata encoding: where (longitude, latitude), when (time) and how large (area of a patch).

Following Copernicus-FM (Wang et al. 2025, "Towards a Unified Copernicus Foundation Model for
Earth Vision"), each field is expanded in Fourier features over log-spaced periods, projected by
a linear layer and added to every token's position embedding:

* location: ``lon + 180`` and ``lat + 90`` (degrees), periods 1e-4 .. 720, half the width each;
* time: days since 1970-01-01, periods 1 .. 365.25 days;
* area: ground area of one patch in km², periods 1e-3 .. 5.1e8 km².

A field that is unknown (NaN) is replaced by a learned token (also projected).

Our changes, neutral for imported published weights:

* masking per sample (``masking="per_sample"``): the published models use the learned token for
  the *whole batch* as soon as one sample lacks a field, so a sample's features depend on its
  batch-mates. Here each sample uses its own value or the token. With a fully known or fully
  unknown batch both agree exactly.
* year: the published time code has no period longer than a year, so it cannot say which year it
  is. A second expansion of the time with periods from one year to 1000 years, through its own
  projection ``year_fc``, adds the year; ``year_fc`` starts at zero in imported models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from thinkingearth.models.hypernet import fourier_features

__all__ = ["AREA_PERIODS", "COORD_PERIODS", "TIME_PERIODS", "YEAR_PERIODS", "MetadataEncoder"]

MetaMasking = Literal["per_sample", "batch"]

COORD_PERIODS: tuple[float, float] = (1e-4, 720.0)
AREA_PERIODS: tuple[float, float] = (1e-3, 5.1e8)
TIME_PERIODS: tuple[float, float] = (1.0, 365.25)
YEAR_PERIODS: tuple[float, float] = (365.25, 365.25e3)


class MetadataEncoder(nn.Module):
    """Encode ``[B, 4]`` metadata (lon °, lat °, days since 1970, patch area km²) to ``[B, 1, D]`` terms.

    Args:
        embed_dim: Token width ``D`` (even).
        year: Add the long-period (year) time expansion.
        masking: ``"per_sample"`` (ours) or ``"batch"`` (published behaviour).
    """

    def __init__(
        self, embed_dim: int, year: bool = True, masking: MetaMasking = "per_sample"
    ) -> None:
        """Create the projections and the learned tokens for unknown fields."""
        super().__init__()
        if embed_dim % 2:
            raise ValueError(f"metadata encoding needs an even width, got {embed_dim}")
        self.embed_dim = embed_dim
        self.masking: MetaMasking = masking
        self.coord_fc = nn.Linear(embed_dim, embed_dim)
        self.area_fc = nn.Linear(embed_dim, embed_dim)
        self.time_fc = nn.Linear(embed_dim, embed_dim)
        self.year_fc = nn.Linear(embed_dim, embed_dim) if year else None
        self.coord_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.area_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.time_token = nn.Parameter(torch.zeros(1, 1, embed_dim))

    def _coord(self, lon: Tensor, lat: Tensor) -> Tensor:
        half = self.embed_dim // 2
        half -= half % 2
        code = torch.cat(
            (
                fourier_features(lon + 180, *COORD_PERIODS, half),
                fourier_features(lat + 90, *COORD_PERIODS, half),
            ),
            dim=-1,
        )
        if code.shape[-1] < self.embed_dim:
            pad = code.new_zeros(code.shape[0], self.embed_dim - code.shape[-1])
            code = torch.cat((code, pad), dim=-1)
        return code.unsqueeze(1)

    def _field(
        self,
        known: Tensor,
        encode: Callable[[Tensor], Tensor],
        token: Tensor,
        fc: nn.Linear,
    ) -> Tensor:
        """Projected embedding of one field: ``[B, 1, D]``, or ``[1, 1, D]`` if all use the token.

        ``encode`` gets a ``[B]`` mask-safe selector: it must return the ``[B, 1, D]`` code of the
        samples, reading only known values (unknown ones are replaced by 0 and then masked).
        """
        if bool(known.all()):
            return fc(encode(known))
        if self.masking == "batch" or not bool(known.any()):
            return fc(token)
        return torch.where(known.view(-1, 1, 1), fc(encode(known)), fc(token))

    def forward(self, meta: Tensor) -> list[Tensor]:
        """Return the metadata embeddings ``[B, 1, D]`` (or ``[1, 1, D]``) for ``[B, 4]``.

        The terms (location, area, time and, if enabled, year) are returned separately so the
        caller adds them to the position embedding in the published order.

        The four columns are longitude and latitude in degrees, days since 1970-01-01 and the
        ground area of one patch in km²; NaN marks an unknown value.
        """
        lon, lat, time, area = meta[:, 0], meta[:, 1], meta[:, 2], meta[:, 3]

        def safe(value: Tensor, known: Tensor) -> Tensor:
            return value if bool(known.all()) else torch.where(known, value, 0.0)

        coord_known = ~(torch.isnan(lon) | torch.isnan(lat))
        area_known = ~torch.isnan(area)
        time_known = ~torch.isnan(time)
        d = self.embed_dim
        coord = self._field(
            coord_known,
            lambda k: self._coord(safe(lon, k), safe(lat, k)),
            self.coord_token,
            self.coord_fc,
        )
        area_embed = self._field(
            area_known,
            lambda k: fourier_features(safe(area, k), *AREA_PERIODS, d).unsqueeze(1),
            self.area_token,
            self.area_fc,
        )
        time_embed = self._field(
            time_known,
            lambda k: fourier_features(safe(time, k), *TIME_PERIODS, d).unsqueeze(1),
            self.time_token,
            self.time_fc,
        )
        out = [coord, area_embed, time_embed]
        if self.year_fc is not None and bool(time_known.any()):
            if self.masking == "batch" and not bool(time_known.all()):
                return out
            code = fourier_features(safe(time, time_known), *YEAR_PERIODS, d).unsqueeze(1)
            year = self.year_fc(code)
            if not bool(time_known.all()):
                year = year * time_known.view(-1, 1, 1).to(year.dtype)
            out.append(year)
        return out
