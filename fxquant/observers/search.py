"""Ranges from calibration statistics: min-max, percentile, and the percentile-MSE search.

All functions take samples laid out (N,) per tensor or (N, C) per channel (channels last) and
return a `UniformParams` of matching granularity. Everything is vectorized over channels.
"""
from __future__ import annotations

import torch

from fxquant.quantizers.uniform import UniformParams, params_from_range

PERCENTILES = (0.999, 0.9999, 0.99999)
_QUANTILE_LIMIT = 1 << 24


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


def minmax(samples, lo, hi, bits: int, symmetric: bool, axis: int = -1) -> UniformParams:
    return params_from_range(lo, hi, bits, symmetric, axis)


def percentile(samples, bits: int, symmetric: bool, p: float = 0.9999,
               axis: int = -1) -> UniformParams:
    return params_from_range(quantile(samples, 1 - p), quantile(samples, p), bits, symmetric, axis)


def percentile_mse(samples, bits: int, symmetric: bool, candidates=PERCENTILES,
                   axis: int = -1) -> UniformParams:
    """RepQ-ViT's search: of the candidate percentile ranges, keep the one with least MSE."""
    best, best_err = None, None
    bounds = quantile(samples, [1 - p for p in candidates] + list(candidates))
    for i in range(len(candidates)):
        params = params_from_range(bounds[i], bounds[len(candidates) + i], bits, symmetric)
        err = (params.fake_quantize(samples) - samples).pow(2).mean(0)
        if best is None:
            best, best_err = params, err
            continue
        better = err < best_err
        best = UniformParams(torch.where(better, params.scale, best.scale),
                             torch.where(better, params.zero_point, best.zero_point),
                             params.qmin, params.qmax, -1)
        best_err = torch.minimum(err, best_err)
    return UniformParams(best.scale, best.zero_point, best.qmin, best.qmax, axis)


def fit(method: str, samples, lo, hi, bits: int, symmetric: bool, axis: int = -1) -> UniformParams:
    """Dispatch on the observer method a recipe names."""
    if method == "minmax":
        return minmax(samples, lo, hi, bits, symmetric, axis)
    if method == "percentile":
        return percentile(samples, bits, symmetric, axis=axis)
    if method == "mse":
        return percentile_mse(samples, bits, symmetric, axis=axis)
    raise ValueError(f"unknown observer method {method!r}: use minmax, percentile or mse")
