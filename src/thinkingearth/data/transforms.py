"""Normalisation of Samples, per sensor: the one normalisation every recipe, task and benchmark uses.

:class:`Normaliser` chooses per sensor:

* ``registry``: ``(x - mean) / std`` with the published statistics of the sensor registry
  (Sentinel-2 L1C/L2A: SSL4EO-S12, in stored digital numbers);
* ``sar_db``: Sentinel-1 GRD backscatter is stored as linear sigma0, for which no statistics are
  published; it is converted to decibels, ``10 log10(max(sigma0, 1e-6))``, and standardised with
  the SSL4EO-S12 dB statistics (:data:`thinkingearth.sensors.SSL4EO_S12_S1_DB_STATS`). Speckled
  linear backscatter is heavy-tailed; in dB it is close to Gaussian, which is why SAR models are
  trained on dB;
* ``dataset``: sensors without published statistics (Sentinel-3 OLCI, Sentinel-5P, the DEM,
  SLC amplitude/phase) use per-band mean and standard deviation estimated from the first training
  samples (:meth:`Normaliser.fit`); they are stored with a run (``normalisation.json``).

No-data pixels (the band's ``nodata`` value, or NaN) become 0 after normalisation, the mean.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from thinkingearth.errors import UserInputError
from thinkingearth.sensors import SSL4EO_S12_S1_DB_STATS, get_sensor

__all__ = ["NormMode", "Normaliser"]

NormMode = Literal["registry", "sar_db", "dataset"]

_DB_FLOOR = 1e-6
_EPS = 1e-6


class Normaliser:
    """Per-sensor normalisation of images to roughly zero mean and unit variance per band.

    Args:
        stats: Estimated statistics for sensors without published ones: sensor -> band ->
            ``(mean, std)`` (see :meth:`fit`).
    """

    def __init__(self, stats: Mapping[str, Mapping[str, Sequence[float]]] | None = None) -> None:
        """Keep the estimated statistics (canonical sensor names)."""
        self.stats: dict[str, dict[str, tuple[float, float]]] = {}
        for sensor, bands in (stats or {}).items():
            name = get_sensor(sensor).name
            self.stats[name] = {str(b): (float(v[0]), float(v[1])) for b, v in bands.items()}

    @staticmethod
    def mode(sensor: str, bands: Sequence[str] | None = None) -> NormMode:
        """How ``sensor`` (with these bands) is normalised: ``registry``, ``sar_db`` or ``dataset``."""
        spec = get_sensor(sensor)
        selected = spec.select(bands)
        if all(b.has_stats for b in selected):
            return "registry"
        if all(
            b.is_sar and b.component == "intensity" and b.name in SSL4EO_S12_S1_DB_STATS
            for b in selected
        ):
            return "sar_db"
        return "dataset"

    def needs_fit(self, sensor: str, bands: Sequence[str]) -> bool:
        """True if the sensor needs estimated statistics that are not there yet."""
        if self.mode(sensor, bands) != "dataset":
            return False
        have = self.stats.get(get_sensor(sensor).name, {})
        return any(get_sensor(sensor).band(b).name not in have for b in bands)

    def fit(self, sensor: str, bands: Sequence[str], images: Iterable[Tensor]) -> None:
        """Estimate per-band mean and std of ``sensor`` from images ``[C, H, W]`` (NaN ignored)."""
        spec = get_sensor(sensor)
        names = [spec.band(b).name for b in bands]
        total = torch.zeros(len(names), dtype=torch.float64)
        square = torch.zeros(len(names), dtype=torch.float64)
        count = torch.zeros(len(names), dtype=torch.float64)
        for image in images:
            x = image.reshape(len(names), -1).to(torch.float64)
            valid = torch.isfinite(x) & self._valid_mask(spec.name, names, x)
            x = torch.where(valid, x, torch.zeros_like(x))
            total += x.sum(1)
            square += (x * x).sum(1)
            count += valid.sum(1)
        if (count == 0).any():
            raise UserInputError(f"cannot estimate normalisation of {spec.name}: no valid pixels")
        mean = total / count
        std = (square / count - mean * mean).clamp_min(0).sqrt()
        entry = self.stats.setdefault(spec.name, {})
        for i, name in enumerate(names):
            scale = float(std[i]) if float(std[i]) > 0 else max(abs(float(mean[i])), 1.0)
            entry[name] = (float(mean[i]), scale)

    @staticmethod
    def _valid_mask(sensor: str, names: Sequence[str], x: Tensor) -> Tensor:
        """Valid (not no-data) pixels of ``x`` ``[C, ...]``."""
        spec = get_sensor(sensor)
        nodata = torch.tensor(
            [math.nan if (nd := spec.band(n).nodata) is None else nd for n in names],
            dtype=x.dtype,
            device=x.device,
        ).reshape(-1, *([1] * (x.ndim - 1)))
        return x != nodata

    def mean_std(self, sensor: str, bands: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``(mean, std)`` float32 ``[C]`` in the normalisation's domain (dB for ``sar_db``)."""
        spec = get_sensor(sensor)
        names = [spec.band(b).name for b in bands]
        mode = self.mode(sensor, names)
        if mode == "registry":
            mean, std = spec.normalisation(names)
            return torch.from_numpy(mean), torch.from_numpy(std)
        if mode == "sar_db":
            pairs = [SSL4EO_S12_S1_DB_STATS[n] for n in names]
        else:
            have = self.stats.get(spec.name, {})
            missing = [n for n in names if n not in have]
            if missing:
                raise UserInputError(
                    f"no normalisation statistics for {spec.name} band(s) {', '.join(missing)}: "
                    "the registry publishes none; estimate them with Normaliser.fit"
                )
            pairs = [have[n] for n in names]
        mean_t = torch.tensor([p[0] for p in pairs], dtype=torch.float32)
        std_t = torch.tensor([p[1] for p in pairs], dtype=torch.float32)
        return mean_t, std_t

    def __call__(
        self, image: Tensor, sensor: str, bands: Sequence[str], units: str | None = None
    ) -> Tensor:
        """Normalise ``image`` ``[..., C, H, W]`` of ``sensor`` with channels ``bands``.

        Args:
            image: Values in stored units.
            sensor: Registry sensor name.
            bands: Band names of the channels.
            units: SAR units of the values, ``"linear"`` (sigma0, the default) or ``"db"``
                (as BigEarthNet-S1 and Sen1Floods11 store it; the Sample's ``units``).
        """
        spec = get_sensor(sensor)
        names = [spec.band(b).name for b in bands]
        if image.shape[-3] != len(names):
            raise UserInputError(
                f"image has {image.shape[-3]} channels but {len(names)} bands were named"
            )
        mean, std = self.mean_std(spec.name, names)
        shape = (len(names), 1, 1)
        x = image.to(torch.float32)
        if units is not None and str(units).lower() not in ("linear", "db"):
            raise UserInputError(f"unknown SAR units {units!r}; expected 'linear' or 'db'")
        in_db = units is not None and str(units).lower() == "db"
        valid = torch.isfinite(x)
        if not in_db:  # the registry's no-data value (0 sigma0) is a real value in dB
            valid &= self._valid_mask(spec.name, names, x.movedim(-3, 0)).movedim(0, -3)
        if self.mode(spec.name, names) == "sar_db":
            if not in_db:
                x = 10.0 * torch.log10(x.clamp_min(_DB_FLOOR))
            else:  # already dB: the floor of the linear path, in dB
                x = x.clamp_min(10.0 * math.log10(_DB_FLOOR))
        x = (x - mean.to(x.device).reshape(shape)) / std.to(x.device).reshape(shape)
        return torch.where(valid, x, torch.zeros_like(x))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description: the estimated statistics and each mode's meaning."""
        return {
            "modes": {
                "registry": "(x - mean) / std, published registry statistics (stored units)",
                "sar_db": "10*log10(max(x, 1e-6)), then SSL4EO-S12 dB statistics",
                "dataset": "(x - mean) / std, estimated from training samples (below)",
            },
            "stats": {s: {b: list(v) for b, v in bands.items()} for s, bands in self.stats.items()},
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Normaliser:
        """Inverse of :meth:`to_dict`."""
        return cls(data.get("stats", {}))
