"""TanQ (DopQ-ViT): a tangent-companded codebook for post-Softmax values, dense near 0 and near 1.

Levels on [0, Δ], 2^b of them, from a tangent curve with shape θ and crossover c (c = 1/2 is the
symmetric family of the spec; c > 1/2 spends fewer levels above c·Δ, where softmax mass is small):

    u(x) = tan(θ·(x/Δ − c)),  u0 = u(0), u1 = u(Δ)
    code  q = round((u(x) − u0) / (u1 − u0) · (2^b − 1)),  clipped to [0, 2^b − 1]
    level ℓ_q = Δ·(c + arctan(u0 + q/(2^b − 1)·(u1 − u0)) / θ)

The numerics are written so that ONNX reproduces them bit for bit:
- the code is the number of thresholds t_k ≤ x, t_k the companded-rounding boundaries (no `tan` at
  run time, so no ulp differences), found by a b-step binary search in ONNX;
- levels are snapped to the uniform fine grid s = Δ/65535 (error ≤ Δ/131070): the codebook holds
  L_q = round(ℓ_q·65535/Δ), split into uint8 halves L_q = 256·H_q + L'_q, and x̂ = H_q·(256·s) +
  L'_q·s: two Gathers, two uint8 DequantizeLinear, one Add, the same float32 operations in both
  runtimes, and A·V runs as two integer MatMuls in onnxruntime (`lowering/ort_rules.py`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from onnxscript import ir
from onnxscript import opset21 as op

from fxquant.config import RoleSpec
from fxquant.errors import FxQuantError
from fxquant.observers import search
from fxquant.observers.observer import Observer
from fxquant.quantizers.base import Quantizer, per_tensor_samples, register
from fxquant.quantizers.custom_op import quant_op

FINE_STEPS = 65535
HALF = 256  # L = HALF·high + low, both uint8
THETAS = tuple(f * math.pi for f in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95))
CROSSOVERS = (0.5, 0.6, 0.7, 0.8)
MIN_BITS, MAX_BITS = 3, 8


def level_table(bits: int, theta: float, crossover: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """(levels, thresholds) on [0, 1] in float64: 2^b levels, 2^b − 1 rounding boundaries."""
    if not MIN_BITS <= bits <= MAX_BITS:
        raise FxQuantError(f"TanQ supports {MIN_BITS} to {MAX_BITS} bits, not {bits}")
    if not 0 < theta * max(crossover, 1 - crossover) < math.pi / 2:
        raise FxQuantError(f"TanQ needs 0 < θ·max(c, 1 − c) < π/2 (θ = {theta:.4g}, c = {crossover})")
    n = 2 ** bits - 1
    u0, u1 = math.tan(-theta * crossover), math.tan(theta * (1 - crossover))

    def inverse(steps: torch.Tensor) -> torch.Tensor:
        return crossover + torch.atan(u0 + steps / n * (u1 - u0)) / theta

    steps = torch.arange(n + 1, dtype=torch.float64)
    levels = inverse(steps)
    levels[0], levels[-1] = 0.0, 1.0
    return levels, inverse(steps[1:] - 0.5)


@quant_op("tan_quant")
def tan_quant(x: torch.Tensor, thresholds: torch.Tensor, codebook: torch.Tensor,
              fine_scale: torch.Tensor) -> torch.Tensor:
    """x -> codebook[#{t_k <= x}] · fine_scale (the codebook holds integers in [0, 65535]), summed
    from its uint8 halves as the ONNX lowering computes it. The sum is formed on the 2^b-entry
    table, then gathered: per element the same float32 operations as in ONNX, one gather of x's
    size instead of two gathers and three arithmetic passes."""
    q = torch.bucketize(x, thresholds, right=True)
    high, low = (codebook // HALF).to(fine_scale.dtype), (codebook % HALF).to(fine_scale.dtype)
    return (high * (fine_scale * HALF) + low * fine_scale)[q]


@register("tan")
@dataclass(frozen=True)
class TanQuantizer(Quantizer):
    """A fitted TanQ quantizer; `delta`, `theta`, `crossover` say how the tables were made."""
    thresholds: torch.Tensor   # (2^b − 1,) float32, absolute
    codebook: torch.Tensor     # (2^b,) int32 in [0, 65535]
    fine_scale: torch.Tensor   # () float32 = Δ / 65535
    delta: float
    theta: float
    crossover: float
    op = tan_quant

    @classmethod
    def fit(cls, observer: Observer, spec: RoleSpec, bits: int) -> TanQuantizer:
        """Δ among RepQ's percentiles and the maximum, then θ and c: the MSE-best of the grid."""
        samples = per_tensor_samples("TanQ", observer, spec)
        deltas = search.positive_highs(samples, float(observer.max))
        return search.least_error(cls.candidates(bits, deltas), samples)

    @classmethod
    def candidates(cls, bits: int, deltas, thetas=THETAS, crossovers=CROSSOVERS):
        """Every valid (Δ, θ, c) of the grid, Δ outermost."""
        for delta in deltas:
            for theta in thetas:
                for c in crossovers:
                    if theta * max(c, 1 - c) < math.pi / 2:
                        yield cls.make(bits, float(delta), theta, c)

    @classmethod
    def make(cls, bits: int, delta: float, theta: float, crossover: float = 0.5) -> TanQuantizer:
        levels, thresholds = level_table(bits, theta, crossover)
        codebook = torch.round(levels * FINE_STEPS).to(torch.int32)
        return cls((thresholds * delta).float(), codebook,
                   torch.tensor(delta / FINE_STEPS, dtype=torch.float32), delta, theta, crossover)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"thresholds": self.thresholds, "codebook": self.codebook,
                "fine_scale": self.fine_scale}


@tan_quant.onnx
def tan_quant_onnx(x, thresholds, codebook, fine_scale):
    """Binary search for #{t_k <= x} (b compare/select steps), then the codebook's uint8 halves:
    Gather and DequantizeLinear each, summed."""
    bits = int(math.log2(thresholds.shape[0] + 1))
    q = op.ConstantOfShape(op.Shape(x), value=ir.tensor([0], dtype=ir.DataType.INT64))
    for bit in reversed(range(bits)):
        candidate = op.Add(q, op.Constant(value_int=2 ** bit))
        threshold = op.Gather(thresholds, op.Sub(candidate, op.Constant(value_int=1)))
        q = op.Where(op.GreaterOrEqual(x, threshold), candidate, q)
    half = op.Constant(value_int=HALF)
    high = op.Gather(op.Cast(op.Div(codebook, op.CastLike(half, codebook)), to=ir.DataType.UINT8), q)
    low = op.Gather(op.Cast(op.Mod(codebook, op.CastLike(half, codebook)), to=ir.DataType.UINT8), q)
    return op.Add(op.DequantizeLinear(high, op.Mul(fine_scale, op.CastLike(half, fine_scale))),
                  op.DequantizeLinear(low, fine_scale))

