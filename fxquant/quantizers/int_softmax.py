"""Integer softmax (I-BERT's i-exp) on quantized logits, and FQ-ViT's Log-Int-Softmax (LIS).

i-exp on the logits' integer codes x (grid s_a), per row: x ← u·x (u a power of two, 1 unless
s_a > ln2/256: then the codes are shifted onto the grid s = s_a/u so that ln2 spans at least 256
of them), x ← x − max x (≤ 0), x ← max(x, n·x0),
    x0 = ⌊−ln2 / s⌋, k = ⌊x / x0⌋, r = x − k·x0, z = r·(r + ⌊(b/a)/s⌋) + ⌊(1/a)/s²⌋,
    e = z · 2^(n − k)        (a, b = 0.35815147, 0.96963238; n ≤ 30 as int64 allows, 24 … 26 on
                              the fine grid)
all in int64, exact. Each halving 2^−k stands for exp(k·x0·s), x0·s within s of −ln2: on a coarse
grid (ln2 spanning 4 codes: up to 19 %) each octave below the row's maximum would sharpen the
softmax by that much; on ln2 / 256 by at most 0.3 %, about the 0.33 % of I-BERT's quadratic.
Then either
- `int_softmax`: e / Σe in float32, quantized by the uniform post-Softmax quantizer that follows;
- `lis_attention` (LIS, ≤ 4 bits): code = Σ_{j=1}^{2^b} [Σe / e ≥ 0.75·2^j] (nearest power of
  two with the linear midpoint, exactly: ⌊2Σe / e⌋ ≥ 3·2^(j−1); FQ-ViT rounds Σe / e first, which
  moves e.g. 2.6 to code 2), attention 2^−code, 0 where code = 2^b; fused
  with the A·V product that reads it. Its levels are a log2 quantizer's (`log2.LogQuantizer`, Δ = 1):
  uint8 powers of two in branches of 8 codes, so ONNX computes A·V as Σ_branch MatMul(DQ(uint8
  branch, 2^−(8g+7)), V): exact integer products, no BitShift.
The ONNX lowering reads the codes with QuantizeLinear and keeps every step above in int64; only
`int_softmax`'s final division is float32.

A padding mask (scores + mask before the Softmax, mask 0 or about -3.4e38) is an input of the op,
not part of its logits: the logit grid is fitted on the scores alone, and the mask joins in codes,
m = round(max(mask, FLOOR·s) / s) with FLOOR = n·x0 − 256·u (True/False masks: 0 / FLOOR). A masked
position then lies at least n·x0 below the row's largest code, where i-exp stops: it weighs 2^−n
of the largest (about 6e−8 at n = 24), which the post-Softmax quantizer rounds to 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from onnxscript import ir
from onnxscript import opset21 as op

from fxquant.config import RoleSpec
from fxquant.errors import FxQuantError
from fxquant.observers.observer import Observer
from fxquant.quantizers.base import Quantizer, register
from fxquant.quantizers.custom_op import quant_op
from fxquant.quantizers.log2 import LogQuantizer, levels
from fxquant.quantizers.uniform import UniformQuantizer

COEFFS = (0.35815147, 0.96963238, 1.0)   # I-BERT's a·(x + b/a)² + c/a fit of exp on (−ln2, 0]
N_EXP = 30
LN2_CODES = 256                          # the fine grid s ≤ ln2 / LN2_CODES
MAX_ROW = 1 << 16                        # the int64 bound assumes rows of at most this many logits
LIS_MAX_BITS = 4                         # FQ-ViT's LIS; more attention bits stay uniform (8/8/8)


@dataclass(frozen=True)
class ExpConstants:
    """Integer constants of i-exp on the logit grid `scale`."""
    x0: int
    b_int: int
    c_int: int
    n: int
    up: int

    @classmethod
    def make(cls, scale: float) -> "ExpConstants":
        a, b, c = COEFFS
        if not scale > 0 or not math.isfinite(scale):
            raise FxQuantError(f"integer softmax needs a positive logit scale, got {scale}")
        up = 1 << max(0, math.ceil(math.log2(scale / (math.log(2) / LN2_CODES))))
        scale = scale / up
        x0, b_int = math.floor(-math.log(2) / scale), math.floor(b / a / scale)
        c_int = math.floor(c / a / scale ** 2)
        if min(r * (r + b_int) + c_int for r in range(x0 + 1, 1)) < 1:
            raise FxQuantError(f"logit scale {scale} is too coarse for the integer softmax (exp would be 0)")
        # z ≤ c_int, so Σ_row e < MAX_ROW · c_int · 2^n must stay below 2^62 (2Σ below 2^63).
        n = min(N_EXP, 62 - MAX_ROW.bit_length() - c_int.bit_length())
        if n < 1:
            raise FxQuantError(f"logit scale {scale} is too fine for a 64-bit integer softmax")
        return cls(x0, b_int, c_int, n, up)

    def constants(self) -> tuple[int, int, int, int, int]:
        return (self.x0, self.b_int, self.c_int, self.n, self.up)


def mask_floor(x0: int, n: int, up: int) -> int:
    """Mask codes stop here: n·x0 below any unmasked code of an 8-bit grid (no int64 overflow)."""
    return n * x0 - 256 * up


def mask_codes(mask: torch.Tensor, scale: torch.Tensor, x0: int, n: int, up: int) -> torch.Tensor:
    """The mask in codes of the fine grid scale/up."""
    floor = mask_floor(x0, n, up)
    scale = scale / up
    if mask.dtype == torch.bool:  # SDPA's convention: True keeps
        return torch.where(mask, 0, floor).to(torch.int64)
    return torch.round(torch.clamp(mask, min=floor * scale) / scale).to(torch.int64)


def exp_int(x: torch.Tensor, scale: torch.Tensor, x0: int, b_int: int, c_int: int, n: int,
            up: int, mask: torch.Tensor | None = None):
    """(e, Σ_row e) in int64 for dequantized logits x on the grid `scale` (last axis = row)."""
    q = torch.round(x / scale).to(torch.int64) * up
    if mask is not None:
        q = q + mask_codes(mask, scale, x0, n, up)
    q = torch.clamp(q - q.amax(-1, keepdim=True), min=n * x0)
    k = torch.div(q, x0, rounding_mode="floor")
    r = q - k * x0
    e = (r * (r + b_int) + c_int) << (n - k)
    return e, e.sum(-1, keepdim=True)


def _softmax_like_scores(x, scale, zero_point, qmin, x0, b_int, c_int, n, up, mask=None):
    shape = torch.broadcast_shapes(x.shape, mask.shape) if mask is not None else x.shape
    return x.new_empty(shape)


@quant_op("int_softmax", fake=_softmax_like_scores)
def int_softmax(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
                x0: int, b_int: int, c_int: int, n: int, up: int,
                mask: torch.Tensor | None = None) -> torch.Tensor:
    e, total = exp_int(x, scale, x0, b_int, c_int, n, up, mask)
    return e.float() / total.float()


def ratio_thresholds(n_levels: int) -> list[int]:
    """Σe/e ≥ 0.75·2^j ⇔ ⌊2Σe/e⌋ ≥ 3·2^(j−1) (an integer), j = 1 .. n_levels."""
    return [3 * 2 ** (j - 1) for j in range(1, n_levels + 1)]


def lis_index(e: torch.Tensor, total: torch.Tensor, n_levels: int) -> torch.Tensor:
    """Level index m = n_levels − code of a log2 level table (0 = masked, n_levels = 2^0)."""
    ratio = torch.div(2 * total, e, rounding_mode="floor")
    code = torch.bucketize(ratio, torch.tensor(ratio_thresholds(n_levels), device=e.device), right=True)
    return n_levels - code


def _attention_output(x, v, scale, zero_point, codes, scales, qmin, x0, b_int, c_int, n, up,
                      mask=None):
    shape = torch.broadcast_shapes(x.shape, mask.shape) if mask is not None else x.shape
    return x.new_empty((*shape[:-1], v.shape[-1]))


@quant_op("lis_attention", fake=_attention_output)
def lis_attention(x: torch.Tensor, v: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                  codes: torch.Tensor, scales: torch.Tensor, qmin: int,
                  x0: int, b_int: int, c_int: int, n: int, up: int,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """LIS(x + mask) @ v; `codes`, `scales` are the level tables of `LISQuantizer.make(bits, 1, 1)`."""
    e, total = exp_int(x, scale, x0, b_int, c_int, n, up, mask)
    attention = levels(codes, scales)[lis_index(e, total, codes.shape[1] - 1)]
    return attention @ v


@register("lis")
class LISQuantizer(LogQuantizer):
    """Post-Softmax quantizer "lis": LIS levels (no calibration) at ≤ 4 bits, else uniform."""

    @classmethod
    def fit(cls, observer: Observer, spec: RoleSpec, bits: int) -> Quantizer:
        return cls.for_bits(bits) if bits <= LIS_MAX_BITS else UniformQuantizer.fit(observer, spec, bits)

    @classmethod
    def for_bits(cls, bits: int) -> LISQuantizer:
        """LIS without the integer softmax (float Softmax in front): the log2 levels 2^−code,
        Δ = 1, rounded with LIS's linear midpoints, p ≥ (4/3)·2^−j ⇔ code < j."""
        base = cls.make(bits, 1.0, 1)
        n_levels = base.codes.shape[1] - 1
        thresholds = torch.tensor([4 / 3 * 2.0 ** -j for j in range(n_levels, 0, -1)],
                                  dtype=torch.float32)
        return replace(base, thresholds=thresholds)


def _mask_codes_onnx(mask, scale, x0: int, n: int, up: int):
    floor = mask_floor(x0, n, up)
    scale = op.Div(scale, op.Constant(value_float=float(up)))
    if mask.dtype == ir.DataType.BOOL:
        return op.Where(mask, op.Constant(value_int=0), op.Constant(value_int=floor))
    clamped = op.Max(mask, op.Mul(op.Constant(value_float=float(floor)), scale))
    return op.Cast(op.Round(op.Div(clamped, scale)), to=ir.DataType.INT64)


def _exp_int_onnx(x, scale, zero_point, qmin: int, x0: int, b_int: int, c_int: int, n: int,
                  up: int, mask=None):
    i64 = ir.DataType.INT64
    dtype = ir.DataType.INT8 if qmin < 0 else ir.DataType.UINT8
    last = op.Constant(value_ints=[-1])
    q = op.Cast(op.QuantizeLinear(x, scale, op.Cast(zero_point, to=dtype)), to=i64)
    if up > 1:
        q = op.Mul(q, op.Constant(value_int=up))
    if mask is not None:
        q = op.Add(q, _mask_codes_onnx(mask, scale, x0, n, up))
    q = op.Max(op.Sub(q, op.ReduceMax(q, last, keepdims=1)), op.Constant(value_int=n * x0))
    x0_ = op.Constant(value_int=x0)
    k = op.Div(q, x0_)                     # both ≤ 0: truncation is the floor
    r = op.Sub(q, op.Mul(k, x0_))
    z = op.Add(op.Mul(r, op.Add(r, op.Constant(value_int=b_int))), op.Constant(value_int=c_int))
    powers = op.Constant(value_ints=[2 ** i for i in range(n + 1)])
    e = op.Mul(z, op.Gather(powers, op.Sub(op.Constant(value_int=n), k)))
    return e, op.ReduceSum(e, last, keepdims=1)


@int_softmax.onnx
def int_softmax_onnx(x, scale, zero_point, qmin: int, x0: int, b_int: int, c_int: int, n: int,
                     up: int, mask=None):
    e, total = _exp_int_onnx(x, scale, zero_point, qmin, x0, b_int, c_int, n, up, mask)
    return op.Div(op.Cast(e, to=ir.DataType.FLOAT), op.Cast(total, to=ir.DataType.FLOAT))


@lis_attention.onnx
def lis_attention_onnx(x, v, scale, zero_point, codes, scales, qmin: int,
                       x0: int, b_int: int, c_int: int, n: int, up: int, mask=None):
    n_levels = codes.shape[1] - 1
    e, total = _exp_int_onnx(x, scale, zero_point, qmin, x0, b_int, c_int, n, up, mask)
    two = op.Constant(value_int=2)
    ratio = op.Div(op.Mul(two, total), e)    # positive: truncation = floor
    above = op.GreaterOrEqual(op.Unsqueeze(ratio, op.Constant(value_ints=[-1])),
                              op.Constant(value_ints=ratio_thresholds(n_levels)))
    code = op.ReduceSum(op.Cast(above, to=ir.DataType.INT64), op.Constant(value_ints=[-1]), keepdims=0)
    index = op.Sub(op.Constant(value_int=n_levels), code)
    out = None
    for branch in range(codes.shape[0]):
        b = op.Constant(value_int=branch)
        attention = op.DequantizeLinear(op.Gather(op.Gather(codes, b), index), op.Gather(scales, b))
        term = op.MatMul(attention, v)
        out = term if out is None else op.Add(out, term)
    return out

