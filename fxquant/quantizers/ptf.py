"""PTF (FQ-ViT's Power-of-Two Factor): per-channel grids 2^α_c · s on one layer scale s, one zero point.

    s = (max X − min X) / (2^b − 1) / 2^K,   zp = round(−min X / (2^K s))
    (min X ≤ 0 ≤ max X: the range is widened to contain 0, so zp is in 0 … 2^b − 1)
    α_c = argmin_{α ∈ 0..K} ‖X_c − fq(X_c; 2^α s, zp)‖²       (first minimum: the finer grid)
    q = clip(round(x_c / (2^α_c s)) + zp, 0, 2^b − 1),   x̂ = (q − zp) · 2^α_c · s

min/max are over all channels; α is searched on the observer's sample of every calibration batch
(FQ-ViT scores only the last batch). (q − zp) · 2^α_c are integers on the one grid s: what the
integer LayerNorm (`quantizers/int_layernorm.py`) sums. ONNX: per-axis QuantizeLinear /
DequantizeLinear on the last axis with the scale vector 2^α s and a zero-point vector of equal
entries; standard QDQ, exact (2^α s is an exact float32 product).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from onnxscript import opset21 as op

from fxquant.config import RoleSpec
from fxquant.errors import FxQuantError
from fxquant.observers import search
from fxquant.observers.observer import Observer
from fxquant.quantizers.base import Quantizer, register
from fxquant.quantizers.custom_op import quant_op
from fxquant.quantizers.uniform import (MIN_SCALE, UniformQuantizer, fake_quant_onnx, fake_quantize,
                                        qrange)

K = 3            # factors 2^0 .. 2^K
MAX_SHIFT = 31   # float32 powers of two the ONNX lowering tabulates


def channel_scales(scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """2^α_c · s, exact in float32."""
    return scale * torch.exp2(shift.to(scale.dtype))


@quant_op("ptf_quant")
def ptf_quant(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, shift: torch.Tensor,
              qmin: int, qmax: int) -> torch.Tensor:
    return fake_quantize(x, channel_scales(scale, shift), zero_point, qmin, qmax, -1)


@register("ptf")
@dataclass(frozen=True)
class PTFQuantizer(Quantizer):
    """A fitted PTF quantizer: layer scale, zero points, per-channel shifts α_c (last axis)."""
    scale: torch.Tensor        # () float32
    zero_point: torch.Tensor   # () int32, or (C,) for the two-level PTF of O-2SF
    shift: torch.Tensor        # (C,) int32 in 0..K
    qmin: int
    qmax: int
    op = ptf_quant

    @classmethod
    def fit(cls, observer: Observer, spec: RoleSpec, bits: int) -> PTFQuantizer:
        if not spec.per_channel:
            raise FxQuantError(f"PTF searches a factor per channel: set per_channel=True for the "
                               f"{observer.role} role")
        return cls.from_samples(observer.samples(), observer.min.min(), observer.max.max(), bits)

    @classmethod
    def from_samples(cls, samples: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int,
                     k: int = K) -> PTFQuantizer:
        """The K-candidate search on `samples` (N, C), with the layer range [lo, hi] widened to
        contain 0 (else the zero point clamps and the widest grid misses the range)."""
        qmin, qmax = qrange(bits, signed=False)
        lo, hi = torch.minimum(lo, hi).float().clamp_max(0), torch.maximum(lo, hi).float().clamp_min(0)
        widest = ((hi - lo) / (qmax - qmin)).clamp_min(MIN_SCALE * 2 ** k)
        scale = widest / 2 ** k
        zero_point = torch.round(-lo / widest).to(torch.int32)
        factors = [UniformQuantizer(scale * 2 ** a, zero_point, qmin, qmax) for a in range(k + 1)]
        shift = search.least_error_per_channel(factors, samples).to(torch.int32)
        return cls(scale, zero_point, shift, qmin, qmax)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"scale": self.scale, "zero_point": self.zero_point, "shift": self.shift}

    def constants(self) -> tuple:
        return (self.qmin, self.qmax)


@ptf_quant.onnx
def ptf_quant_onnx(x, scale, zero_point, shift, qmin: int, qmax: int):
    """Per-axis QDQ: scales Gather'ed from a table of powers of two (exact, folded at export)."""
    powers = op.Constant(value_floats=[float(2 ** i) for i in range(MAX_SHIFT + 1)])
    scales = op.Mul(scale, op.Gather(powers, shift))
    zero_points = op.Expand(zero_point, op.Shape(shift))
    return fake_quant_onnx(x, scales, zero_points, qmin, qmax, -1)

