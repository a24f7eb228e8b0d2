"""The calibration observer: an identity module that keeps statistics of what flows through it.

It keeps the running min/max and a bounded, seeded random sample (with replacement) of the values (rows of the
channel matrix when `per_channel`), which is what the percentile and MSE searches need.
"""
from __future__ import annotations

import torch
from torch import nn

from fxquant.errors import FxQuantError


class Observer(nn.Module):
    def __init__(self, role: str, per_channel: bool = False, max_samples: int = 1 << 18,
                 seed: int = 0):
        super().__init__()
        self.role = role
        self.per_channel = per_channel
        self.max_samples = max_samples
        self._generator = torch.Generator().manual_seed(seed)
        self._chunks: list[torch.Tensor] = []
        self.min: torch.Tensor | None = None
        self.max: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.isfinite(x).all():
            raise FxQuantError(f"non-finite values (NaN/Inf) reach the {self.role} quantizer "
                               "during calibration: check the calibration data")
        values = x.detach().float()
        values = values.reshape(-1, values.shape[-1]) if self.per_channel else values.reshape(-1)
        lo, hi = (values.amin(0), values.amax(0)) if self.per_channel else (values.min(), values.max())
        self.min = lo if self.min is None else torch.minimum(self.min, lo)
        self.max = hi if self.max is None else torch.maximum(self.max, hi)
        self._chunks.append(self._subsample(values).cpu())
        return x

    def _subsample(self, values: torch.Tensor) -> torch.Tensor:
        budget = self.max_samples // (values.shape[1] if self.per_channel else 1)
        if values.shape[0] <= budget:
            return values
        idx = torch.randint(values.shape[0], (budget,), generator=self._generator)
        return values[idx.to(values.device)]

    def samples(self) -> torch.Tensor:
        """The kept values: (N,) per tensor, (N, C) per channel, at most `max_samples` in all."""
        if not self._chunks:
            raise FxQuantError(f"the {self.role} observer saw no data: run calibration first")
        values = self._subsample(torch.cat(self._chunks))
        self._chunks = [values]
        return values
