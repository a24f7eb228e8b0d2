"""Integer LayerNorm (FQ-ViT's QIntLayerNorm) from PTF codes straight to the output quantizer's codes.

Per token, with x̂_c = (q_c − zp) · 2^α_c (integers on the one input grid s) and C channels:
    Σx̂, Σx̂² in int64;  V = C·Σx̂² − (Σx̂)² = C²·var / s²;  D = sqrt(V) = C·σ / s
    A_c = (C / D) · γ_c / s_out = sign · M / 2^N  with N = clip(7 − ⌊log2|A_c|⌋, 0, 31),
                                                    M = clip(⌊|A_c|·2^N⌋, 0, 255)
    B_c = round(β_c / s_out · 2^N − sign·M·(Σx̂ / C))
    y_c = round((sign·M·x̂_c + B_c) / 2^N),   codes = clip(y_c + zp_out, qmin, qmax)
so y_c = round(sign·M/2^N·(x̂_c − μ) + β_c / s_out) with μ = Σx̂ / C, to within half a step,
and M/2^N is within |A|/128 of |A|: an error of 1/128 of the normalized output. (FQ-ViT's
B = round((β/s_out − μ·A)·2^N) subtracts the mean with A, not M/2^N: the error then grows with
x̂_c itself, several output steps when the channels share an offset.)
A token whose channels are all equal (V = 0, NaN in FQ-ViT) gets y = round(β / s_out), LayerNorm's
limit. ε is ignored, as in FQ-ViT. The ONNX lowering reads the input codes with QuantizeLinear and
does the sums in int64 (exact); D, A, M, N, B and y are float32, as in FQ-ViT's own code (sqrt
and the per-token rescale have no integer ONNX op; ORT matches the reference bit for bit).
N counts the powers of two above |A| (exact, no Log); the output goes out through
DequantizeLinear of the codes.
"""
from __future__ import annotations

import torch
from onnxscript import ir
from onnxscript import opset21 as op

from fxquant.quantizers.custom_op import quant_op
from fxquant.quantizers.ptf import MAX_SHIFT

M_BITS = 8   # A = M / 2^N with an 8-bit M
_N_POWERS = [2.0 ** j for j in range(M_BITS - 1 - MAX_SHIFT, M_BITS)]   # 2^-23 .. 2^7


@quant_op("int_layer_norm")
def int_layer_norm(x: torch.Tensor, in_scale: torch.Tensor, in_zero_point: torch.Tensor,
                   shift: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                   out_scale: torch.Tensor, out_zero_point: torch.Tensor,
                   qmin: int, qmax: int) -> torch.Tensor:
    """x: dequantized unsigned PTF (or per-tensor uniform, shift 0) values; the ONNX lowering reads
    their codes with (in_scale, in_zero_point, shift), here x / s rounds to x̂ exactly."""
    xq = torch.round(x / in_scale).to(torch.int64)
    c = xq.shape[-1]
    s1 = xq.sum(-1, keepdim=True)
    var = c * (xq * xq).sum(-1, keepdim=True) - s1 * s1
    d = torch.sqrt(var.float())
    g, h = weight / out_scale, bias / out_scale
    a = g * (c / d)
    n = len(_N_POWERS) - torch.bucketize(a.abs(), torch.tensor(_N_POWERS, device=x.device), right=True)
    p = torch.exp2(n.float())
    mult = torch.sign(a) * torch.clamp(torch.floor(a.abs() * p), 0, 2 ** M_BITS - 1)
    b = torch.round(h * p - mult * (s1.float() / c))
    y = torch.round((mult * xq.float() + b) / p)
    y = torch.where(var == 0, torch.round(h), y)
    zp = out_zero_point.to(y.dtype)
    return (torch.clamp(y + zp, qmin, qmax) - zp) * out_scale


def _code_type(qmin: int) -> ir.DataType:
    return ir.DataType.INT8 if qmin < 0 else ir.DataType.UINT8


@int_layer_norm.onnx
def int_layer_norm_onnx(x, in_scale, in_zero_point, shift, weight, bias, out_scale, out_zero_point,
                        qmin: int, qmax: int):
    f32, i64 = ir.DataType.FLOAT, ir.DataType.INT64
    c = weight.shape[0]
    float_powers = op.Constant(value_floats=[float(2 ** i) for i in range(MAX_SHIFT + 1)])
    codes = op.QuantizeLinear(x, op.Mul(in_scale, op.Gather(float_powers, shift)),
                              op.Expand(op.Cast(in_zero_point, to=ir.DataType.UINT8), op.Shape(shift)),
                              axis=-1)
    int_powers = op.Constant(value_ints=[2 ** i for i in range(MAX_SHIFT + 1)])
    xq = op.Mul(op.Sub(op.Cast(codes, to=i64), op.Cast(in_zero_point, to=i64)),
                op.Gather(int_powers, shift))
    last = op.Constant(value_ints=[-1])
    s1 = op.ReduceSum(xq, last, keepdims=1)
    var = op.Sub(op.Mul(op.Constant(value_int=c), op.ReduceSum(op.Mul(xq, xq), last, keepdims=1)),
                 op.Mul(s1, s1))
    d = op.Sqrt(op.Cast(var, to=f32))
    g, h = op.Div(weight, out_scale), op.Div(bias, out_scale)
    a = op.Mul(g, op.Div(op.Constant(value_float=float(c)), d))
    a_abs = op.Abs(a)
    n = op.ReduceSum(op.Cast(op.Less(op.Unsqueeze(a_abs, last), op.Constant(value_floats=_N_POWERS)),
                             to=i64), last, keepdims=0)
    p = op.Gather(float_powers, n)
    mult = op.Clip(op.Floor(op.Mul(a_abs, p)), op.Constant(value_float=0.0),
                   op.Constant(value_float=float(2 ** M_BITS - 1)))
    signed_mult = op.Mul(op.Sign(a), mult)
    mean = op.Div(op.Cast(s1, to=f32), op.Constant(value_float=float(c)))
    b = op.Round(op.Sub(op.Mul(h, p), op.Mul(signed_mult, mean)))
    y = op.Round(op.Div(op.Add(op.Mul(signed_mult, op.Cast(xq, to=f32)), b), p))
    y = op.Where(op.Equal(var, op.Constant(value_int=0)), op.Round(h), y)
    dtype = _code_type(qmin)
    zp = op.Cast(out_zero_point, to=f32)
    out_codes = op.Cast(op.Clip(op.Add(y, zp), op.Constant(value_float=float(qmin)),
                                op.Constant(value_float=float(qmax))), to=dtype)
    return op.DequantizeLinear(out_codes, out_scale, op.Cast(out_zero_point, to=dtype), axis=-1)

