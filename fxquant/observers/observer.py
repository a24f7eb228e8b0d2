"""The calibration observer: an identity module that keeps statistics of what flows through it.

It keeps the running min/max and a bounded, seeded random sample (with replacement) of the values (rows of the
channel matrix when `per_channel`), which is what the percentile and MSE searches need. The sample
is bounded whatever the number of batches: once the kept rows exceed the budget they are resampled
at once from the union, each kept row weighted by the rows it stands for, so every batch counts as
much as in one sample drawn at the end (for one or two batches it is that very draw).
While `keep` holds a (samples, tokens) mask (calibration sets it per batch from the graph's
padding masks, `fxquant/padding.py`), a (samples, tokens, ...) tensor is observed at the kept
tokens only; attention's 4-D tensors are observed whole.
"""
from __future__ import annotations

import torch
from torch import nn

from fxquant.errors import FxQuantError


def token_rows(x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """`x` (samples, tokens, ...) at the tokens `keep` (samples, tokens) marks: (kept, ...); `x`
    itself when there is no mask or its first two axes are not the mask's."""
    if keep is None or x.ndim < 3 or x.shape[:2] != keep.shape:
        return x
    return x[keep.to(x.device)]


class Observer(nn.Module):
    def __init__(self, role: str, per_channel: bool = False, max_samples: int = 1 << 18,
                 seed: int = 0):
        super().__init__()
        self.role = role
        self.per_channel = per_channel
        self.max_samples = max_samples
        self._generator = torch.Generator().manual_seed(seed)
        self._kept: torch.Tensor | None = None
        self._stands_for = 0  # rows seen (after each batch's own subsample) that _kept represents
        self.min: torch.Tensor | None = None
        self.max: torch.Tensor | None = None
        self.keep: torch.Tensor | None = None   # tokens of the current batch to observe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.isfinite(x).all():
            raise FxQuantError(f"non-finite values (NaN/Inf) reach the {self.role} quantizer "
                               "during calibration: check the calibration data")
        values = token_rows(x.detach(), self.keep).float()
        values = values.reshape(-1, values.shape[-1]) if self.per_channel else values.reshape(-1)
        lo, hi = (values.amin(0), values.amax(0)) if self.per_channel else (values.min(), values.max())
        self.min = lo if self.min is None else torch.minimum(self.min, lo)
        self.max = hi if self.max is None else torch.maximum(self.max, hi)
        self._keep(self._subsample(values).cpu())
        return x

    def _keep(self, chunk: torch.Tensor) -> None:
        if self._kept is None:
            self._kept, self._stands_for = chunk, len(chunk)
            return
        kept, seen = self._kept, self._stands_for
        union = torch.cat([kept, chunk])
        total = seen + len(chunk)
        budget = self._budget(union)
        if len(union) > budget:
            # uniform over the `total` rows: an index below `seen` picks the kept row standing for it
            idx = torch.randint(total, (budget,), generator=self._generator)
            union = union[torch.where(idx < seen, idx * len(kept) // seen, idx - seen + len(kept))]
        self._kept, self._stands_for = union, total

    def _budget(self, values: torch.Tensor) -> int:
        """How many rows of `values` fit in max_samples values."""
        return self.max_samples // (values.shape[1] if self.per_channel else 1)

    def _subsample(self, values: torch.Tensor) -> torch.Tensor:
        budget = self._budget(values)
        if values.shape[0] <= budget:
            return values
        idx = torch.randint(values.shape[0], (budget,), generator=self._generator)
        return values[idx.to(values.device)]

    def samples(self) -> torch.Tensor:
        """The kept values: (N,) per tensor, (N, C) per channel, at most `max_samples` in all."""
        if self._kept is None:
            raise FxQuantError(f"the {self.role} observer saw no data: run calibration first")
        return self._kept
