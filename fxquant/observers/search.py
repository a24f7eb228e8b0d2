"""The one range search every quantizer uses: candidate values from calibration samples, and the
choice of the candidate quantizer with the least mean squared error on them.

Samples are laid out (N,) per tensor or (N, C) per channel (channels last); a candidate is any
quantizer with `fake_quantize(x)`. Ties keep the first candidate.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence, TypeVar

import torch

PERCENTILES = (0.999, 0.9999, 0.99999)   # RepQ-ViT's candidate clipping percentiles
_QUANTILE_LIMIT = 1 << 24

Candidate = TypeVar("Candidate")


def quantile(samples: torch.Tensor, q) -> torch.Tensor:
    """torch.quantile along dim 0 for a float q, or stacked for a sequence of them (one sort);
    sorts and indexes when the tensor is too big for torch.quantile."""
    qs = list(q) if isinstance(q, (list, tuple)) else [q]
    if samples.numel() < _QUANTILE_LIMIT:
        out = torch.quantile(samples, torch.tensor(qs, dtype=samples.dtype, device=samples.device), dim=0)
    else:
        ordered = samples.sort(dim=0).values
        out = ordered[[round(v * (samples.shape[0] - 1)) for v in qs]]
    return out if isinstance(q, (list, tuple)) else out[0]


def percentile_ranges(samples: torch.Tensor, percentiles=PERCENTILES) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(low, high) clipping ranges at each percentile p: the (1 − p)- and p-quantiles."""
    bounds = quantile(samples, [1 - p for p in percentiles] + list(percentiles))
    return [(bounds[i], bounds[len(percentiles) + i]) for i in range(len(percentiles))]


def positive_highs(samples: torch.Tensor, *extra: float, percentiles=PERCENTILES) -> list[float]:
    """The distinct positive values among the samples' percentiles and `extra` (e.g. the observed
    maximum), ascending: the top-of-range candidates of one-sided quantizers."""
    values = {float(v) for v in quantile(samples, list(percentiles)).tolist()} | set(extra)
    return sorted(v for v in values if v > 0)


def mse(candidate, samples: torch.Tensor, dim=None) -> torch.Tensor:
    """Mean squared quantization error of `candidate` on the samples (over `dim`, else all)."""
    error = (candidate.fake_quantize(samples) - samples).pow(2)
    return error.mean() if dim is None else error.mean(dim)


def least_error(candidates: Iterable[Candidate], samples: torch.Tensor) -> Candidate | None:
    """The candidate with the least MSE over all samples (None when there is none)."""
    best, best_error = None, math.inf
    for candidate in candidates:
        error = mse(candidate, samples).item()
        if error < best_error:
            best, best_error = candidate, error
    return best


def least_error_per_channel(candidates: Sequence, samples: torch.Tensor) -> torch.Tensor:
    """Per channel of (N, C) samples, the index of the candidate with the least MSE there."""
    best_error, index = None, None
    for i, candidate in enumerate(candidates):
        error = mse(candidate, samples, dim=0)
        if best_error is None:
            best_error, index = error, torch.zeros_like(error, dtype=torch.long)
            continue
        index = torch.where(error < best_error, i, index)
        best_error = torch.minimum(error, best_error)
    return index
