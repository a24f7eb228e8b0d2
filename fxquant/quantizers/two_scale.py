"""TSPTQ-ViT's two-scaled scaling factors: V-2SF for post-Softmax / post-GELU values, O-2SF for
LayerNorm inputs.

V-2SF: two uniform regions whose scales differ by a power of two, b bits in all.

A b-bit code is a region bit plus (b − 1) magnitude bits. With the fine scale s_S and the coarse
scale s_L = 2^m·s_S (1 ≤ m ≤ b − 1; m ≤ b − 2 for a signed small region, so that x̂ is monotone):

    q_S = round(x / s_S)
    region S if q_S ≤ hi_S:  x̂ = clamp(q_S, lo_S, hi_S) · s_S
    region L otherwise:      x̂ = clamp(round(x / s_L), 0, M) · s_L,         M = 2^(b−1) − 1

Unsigned inputs (post-Softmax) use S codes 0 … M; inputs with a negative part (post-GELU) use
signed S codes −2^(b−2) … 2^(b−2) − 1, so the negative lobe and small positives share the fine grid.
Every level is a multiple of s_S, so ONNX holds x̂ exactly as one int16 code on the fine grid:
QuantizeLinear(x, s_S, int16) picks the region, region L's code is shifted left by m, and one
DequantizeLinear(int16, s_S) yields x̂ (spec §6: "one finer uniform grid"). Where x̂ feeds a
Linear, `passes/split_two_scale.py` splits it into its two regions (`two_scale_region`), each a
uint8 grid for onnxruntime's integer MatMul kernels.

O-2SF: per channel c of a LayerNorm input, with R_c = max_c − min_c over calibration,
outlier channels O = {c : R_c > λ·median R} get the scale s_O = 2^k·s_N, the others s_N:

    s_N = range(N) / (2^b − 1),   k = ⌈log2(range(O) / range(N))⌉,   zp_G = round(−min(G) / s_G)

where range(G) = max over the group's channels − min over them, both widened to contain 0 so that
zp_G is a code, and each group G ∈ {N, O} has its own zero point, so each covers its whole range
(the spec's s_N = max R_c / (2^b − 1) with one zero point shared as in PTF clips channels offset
from each other, and normal channels whenever the global minimum belongs to them). The result is
a two-level PTF (`ptf.PTFQuantizer`, shift α_c ∈ {0, k}, zero point per channel): the same op, ONNX
lowering and integer LayerNorm.
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
from fxquant.quantizers.ptf import PTFQuantizer
from fxquant.quantizers.uniform import MIN_SCALE, qrange

MIN_BITS, MAX_BITS = 3, 8
INT16_MAX = 2 ** 15 - 1
OUTLIER_RATIO = 4.0   # λ of O-2SF


def region_ranges(bits: int, signed: bool) -> tuple[int, int, int]:
    """(lo_S, hi_S, M): code ranges of the small region and the top code of the large one."""
    if not MIN_BITS <= bits <= MAX_BITS:
        raise FxQuantError(f"two-scale quantization supports {MIN_BITS} to {MAX_BITS} bits, "
                           f"not {bits}")
    top = 2 ** (bits - 1) - 1
    if signed:
        return -(2 ** (bits - 2)), 2 ** (bits - 2) - 1, top
    return 0, top, top


def shift_range(bits: int, signed: bool) -> range:
    """The shifts m that keep x̂ monotone: region L's first level 2^m·s_S·round((hi_S + ½) / 2^m)
    must not fall below hi_S·s_S, so m ≤ b − 1, and m ≤ b − 2 with a signed small region (else
    values just above it round to 0)."""
    return range(1, bits - int(signed))


@quant_op("two_scale_quant")
def two_scale_quant(x: torch.Tensor, fine_scale: torch.Tensor, shift: int, lo_small: int,
                    hi_small: int, hi_large: int) -> torch.Tensor:
    """x̂ on the fine grid where round(x / s_S) ≤ hi_small, else on the grid s_S·2^shift."""
    q_small = torch.round(x / fine_scale)
    coarse = fine_scale * 2.0 ** shift
    small = torch.clamp(q_small, lo_small, hi_small) * fine_scale
    large = torch.clamp(torch.round(x / coarse), 0, hi_large) * coarse
    return torch.where(q_small <= hi_small, small, large)


@quant_op("two_scale_region")
def two_scale_region(x: torch.Tensor, fine_scale: torch.Tensor, shift: int, lo_small: int,
                     hi_small: int, hi_large: int, large: bool) -> torch.Tensor:
    """The values of x above hi_small·s_S (`large`) or the others, 0 elsewhere: the two parts sum
    to x exactly. On V-2SF's output they are region L's and region S's levels, each one 8-bit
    grid (what onnxruntime's integer MatMul kernels take: spec §6, A = A_S + A_L)."""
    above = x > fine_scale * hi_small
    return torch.where(above, x, 0.0) if large else torch.where(above, 0.0, x)


@register("two_scale")
@dataclass(frozen=True)
class TwoScaleQuantizer(Quantizer):
    """A fitted V-2SF quantizer: fine scale s_S, shift m (s_L = 2^m·s_S), region code ranges."""
    fine_scale: torch.Tensor   # () float32
    shift: int
    lo_small: int
    hi_small: int
    hi_large: int
    op = two_scale_quant

    @classmethod
    def fit(cls, observer: Observer, spec: RoleSpec, bits: int) -> TwoScaleQuantizer:
        """s_L from RepQ's percentiles or the maximum, then m by MSE; the small region is signed
        when calibration saw negative values (post-GELU)."""
        samples = per_tensor_samples("two-scale quantization", observer, spec)
        highs = search.positive_highs(samples, float(observer.max))
        if not highs:
            raise FxQuantError(f"the {observer.role} values are never positive: two-scale "
                               "quantization needs a positive range")
        return search.least_error(cls.candidates(bits, highs, signed=bool(observer.min < 0)), samples)

    @classmethod
    def candidates(cls, bits: int, highs, signed: bool, shifts=None):
        """s_L = high / M for each high, with every shift m of `shift_range` unless given."""
        _, _, top = region_ranges(bits, signed)
        for high in highs:
            for shift in shifts or shift_range(bits, signed):
                yield cls.make(bits, float(high) / top, shift, signed)

    @classmethod
    def make(cls, bits: int, coarse_scale: float, shift: int, signed: bool) -> TwoScaleQuantizer:
        lo, hi, top = region_ranges(bits, signed)
        shifts = shift_range(bits, signed)
        if shift not in shifts:
            raise FxQuantError(f"two-scale shift m must be in 1 … {shifts[-1]} for {bits} "
                               f"{'signed' if signed else 'unsigned'} bits, not {shift}")
        if not coarse_scale > 0 or not math.isfinite(coarse_scale):
            raise FxQuantError(f"two-scale quantization needs a positive finite scale, "
                               f"got {coarse_scale}")
        fine = torch.tensor(coarse_scale * 2.0 ** -shift, dtype=torch.float32)
        return cls(fine, shift, lo, hi, top)

    @property
    def coarse_scale(self) -> float:
        return self.fine_scale.item() * 2.0 ** self.shift

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"fine_scale": self.fine_scale}

    def constants(self) -> tuple:
        return (self.shift, self.lo_small, self.hi_small, self.hi_large)


@register("o2sf")
class OutlierTwoScaleQuantizer(PTFQuantizer):
    """O-2SF: a two-level PTF (shift 0 or k, a zero point per group) from per-channel ranges."""

    @classmethod
    def fit(cls, observer: Observer, spec: RoleSpec, bits: int) -> OutlierTwoScaleQuantizer:
        if not spec.per_channel or observer.min.dim() != 1:
            raise FxQuantError(f"O-2SF needs per-channel ranges: set per_channel=True for the "
                               f"{observer.role} role")
        return cls.from_ranges(observer.min, observer.max, bits)

    @classmethod
    def from_ranges(cls, lo: torch.Tensor, hi: torch.Tensor, bits: int,
                    ratio: float = OUTLIER_RATIO) -> OutlierTwoScaleQuantizer:
        """From per-channel calibration ranges [lo_c, hi_c] (channels last); each group's range
        is widened to contain 0, so its zero point is a code and its grid covers the group."""
        qmin, qmax = qrange(bits, signed=False)
        lo, hi = torch.minimum(lo, hi).float(), torch.maximum(lo, hi).float()
        spread = hi - lo
        outlier = spread > ratio * spread.median()
        normal = ~outlier
        group_lo, group_hi = lo[normal].min().clamp_max(0), hi[normal].max().clamp_min(0)
        fine = ((group_hi - group_lo) / (qmax - qmin)).clamp_min(MIN_SCALE)
        k = 0
        if outlier.any():
            outlier_lo = lo[outlier].min().clamp_max(0)
            wide = (hi[outlier].max().clamp_min(0) - outlier_lo) / (qmax - qmin)
            k = max(1, math.ceil(math.log2(wide.item() / fine.item())))
            group_lo = torch.where(outlier, outlier_lo, group_lo)
        shift = torch.where(outlier, k, 0).to(torch.int32)
        zero_point = torch.round(-group_lo / (fine * torch.exp2(shift.float())))
        return cls(fine, zero_point.to(torch.int32), shift, qmin, qmax)


@two_scale_quant.onnx
def two_scale_quant_onnx(x, fine_scale, shift: int, lo_small: int, hi_small: int, hi_large: int):
    """q = QuantizeLinear(x, s_S, int16) picks the region; codes on the fine grid (region L's
    shifted left by m) go through one int16 DequantizeLinear."""
    int16, int32 = ir.DataType.INT16, ir.DataType.INT32
    if hi_large * 2 ** shift > INT16_MAX:
        raise FxQuantError(f"two-scale codes up to {hi_large}·2^{shift} do not fit int16")
    coarse = op.Mul(fine_scale, op.Constant(value_float=2.0 ** shift))
    zero16 = op.Constant(value=ir.tensor(0, dtype=int16))
    q_small = op.Cast(op.QuantizeLinear(x, fine_scale, zero16), to=int32)
    clipped = op.Min(op.Max(x, op.Constant(value_float=0.0)),
                     op.Mul(coarse, op.Constant(value_float=float(hi_large))))
    q_large = op.Cast(op.QuantizeLinear(clipped, coarse, zero16), to=int32)
    lo = op.Constant(value=ir.tensor(lo_small, dtype=int32))
    hi = op.Constant(value=ir.tensor(hi_small, dtype=int32))
    code = op.Where(op.LessOrEqual(q_small, hi), op.Clip(q_small, lo, hi),
                    op.Mul(q_large, op.Constant(value=ir.tensor(2 ** shift, dtype=int32))))
    return op.DequantizeLinear(op.Cast(code, to=int16), fine_scale, zero16)


@two_scale_region.onnx
def two_scale_region_onnx(x, fine_scale, shift: int, lo_small: int, hi_small: int, hi_large: int,
                          large: bool):
    """One region's codes (the zero point elsewhere) through a uint8 QuantizeLinear /
    DequantizeLinear pair, region S with the zero point −lo_S: exact on V-2SF's levels, and
    onnxruntime fuses uint8 activations into its integer MatMul kernels."""
    uint8 = ir.DataType.UINT8
    above = op.Greater(x, op.Mul(fine_scale, op.Constant(value_float=float(hi_small))))
    scale = op.Mul(fine_scale, op.Constant(value_float=2.0 ** shift)) if large else fine_scale
    zero_point = op.Constant(value=ir.tensor(0 if large else -lo_small, dtype=uint8))
    codes = op.QuantizeLinear(x, scale, zero_point)
    codes = op.Where(above, codes, zero_point) if large else op.Where(above, zero_point, codes)
    return op.DequantizeLinear(codes, scale, zero_point)

