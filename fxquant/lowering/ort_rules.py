"""Rewrites that put an exported graph in the shape onnxruntime's QDQ fusions need:
- Transpose(DequantizeLinear(W, axis=0)) -> DequantizeLinear(W^T, axis=1): weights stored [in, out]
- Gemm(A, DequantizeLinear(W), C, transB=1) -> MatMul(A, DequantizeLinear(W^T, axis=1)) + C, for a
  plain Gemm (alpha = beta = 1, A not transposed)
- Add(MatMul(DQ(a), DQ(W)), b) on 2-D inputs -> Gemm(DQ(a), DQ(W), DQ(b as int32)): onnxruntime
  turns 2-D MatMul+Add into a float Gemm before its QDQ fusions run, and fuses QGemm only with
  an int32 bias on the grid s_a * s_w (rounding it there moves a logit by at most s_a * s_w / 2)
- MatMul(DQ(a) + DQ(b), DQ(v)) -> MatMul(DQ(a), DQ(v)) + MatMul(DQ(b), DQ(v)): a post-Softmax
  value held as a sum of uint8 branches (log2 at <= 4 bits, TanQ) multiplies V on two integer
  kernels instead of one float MatMul (onnxruntime fuses DQ -> MatMul, not DQ + DQ -> MatMul)
- DequantizeLinear(W int8 in [-8, 7]) -> DequantizeLinear(Cast(W int4 -> int8)): 4-bit weights are
  stored as 4 bits; onnxruntime folds the Cast at load time and runs its int8 kernels
  (MatMulNBits would need float activations: it does not fuse behind an activation QDQ pair)
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import MatchResult, pattern, rewrite

INT4_RANGE = (-8, 7)


def _const(value: ir.Value) -> np.ndarray | None:
    tensor = ir.convenience.get_const_tensor(value) if value is not None else None
    return None if tensor is None else tensor.numpy()


def _int8_weight(codes: ir.Value, ndim: int | None = 2) -> MatchResult:
    check = MatchResult()
    array = _const(codes)
    if array is None or array.dtype != np.int8:
        return check.fail("weight codes are not a constant int8 tensor")
    if ndim is not None and array.ndim != ndim:
        return check.fail(f"weight codes are {array.ndim}-D, not {ndim}-D")
    return check


def _transposed(op, codes: ir.Value) -> ir.Value:
    return op.initializer(ir.tensor(np.ascontiguousarray(_const(codes).T)), f"{codes.name}_t")


class TransposedWeight(pattern.RewriteRuleClassBase):
    def pattern(self, op, codes, scale, zero_point):
        return op.Transpose(op.DequantizeLinear(codes, scale, zero_point, axis=0), perm=[1, 0])

    def check(self, op, codes, scale, zero_point) -> MatchResult:
        return _int8_weight(codes)

    def rewrite(self, op, codes, scale, zero_point):
        return op.DequantizeLinear(_transposed(op, codes), scale, zero_point, axis=1)


class GemmToMatMul(pattern.RewriteRuleClassBase):
    def pattern(self, op, a, codes, scale, zero_point, c):
        weight = op.DequantizeLinear(codes, scale, zero_point, axis=0)
        return op.Gemm(a, weight, c, transB=1)

    def check(self, context, a, codes, scale, zero_point, c) -> MatchResult:
        gemm = context.root.attributes
        plain = (gemm.get_float("alpha", 1.0) == 1.0 and gemm.get_float("beta", 1.0) == 1.0
                 and gemm.get_int("transA", 0) == 0)
        return _int8_weight(codes) if plain else MatchResult().fail("Gemm scales or transposes A")

    def rewrite(self, op, a, codes, scale, zero_point, c):
        weight = op.DequantizeLinear(_transposed(op, codes), scale, zero_point, axis=1)
        return op.Add(op.MatMul(a, weight), c)


def _fits_int4(codes: ir.Value) -> MatchResult:
    check = _int8_weight(codes, ndim=None)
    if check and not INT4_RANGE[0] <= int(_const(codes).min()) <= int(_const(codes).max()) <= INT4_RANGE[1]:
        return check.fail("weight codes do not fit in 4 bits")
    return check


class QuantizedBiasGemm(pattern.RewriteRuleClassBase):
    def pattern(self, op, a_codes, a_scale, a_zero_point, codes, w_scale, w_zero_point, bias):
        a = op.DequantizeLinear(a_codes, a_scale, a_zero_point, _allow_other_attributes=True,
                                _outputs=["a"])
        w = op.DequantizeLinear(codes, w_scale, w_zero_point, axis=1)
        return op.Add(op.MatMul(a, w), bias)

    def check(self, op, a_codes, a_scale, a_zero_point, codes, w_scale, w_zero_point, bias,
              a) -> MatchResult:
        check = _int8_weight(codes)
        if check and (a.shape is None or len(a.shape) != 2):
            return check.fail("not a 2-D product: onnxruntime keeps it a MatMul")
        if check and any(_const(v) is None for v in (a_scale, w_scale, bias)):
            return check.fail("scales or bias are not constant")
        if check and _const(a_scale).size != 1:
            return check.fail("activation scale is not per tensor")
        return check

    def rewrite(self, op, a_codes, a_scale, a_zero_point, codes, w_scale, w_zero_point, bias, a):
        scale = (_const(a_scale) * _const(w_scale)).astype(np.float32).reshape(-1)
        q_bias = np.round(_const(bias) / scale).astype(np.int32)
        bias_dq = op.DequantizeLinear(
            op.initializer(ir.tensor(q_bias), f"{bias.name}_int32"),
            op.initializer(ir.tensor(scale), f"{bias.name}_scale"), axis=0)
        a = op.DequantizeLinear(a_codes, a_scale, a_zero_point)
        return op.Gemm(a, op.DequantizeLinear(codes, w_scale, w_zero_point, axis=1), bias_dq)


class Int4Weight(pattern.RewriteRuleClassBase):
    def pattern(self, op, codes, scale, zero_point):
        return op.DequantizeLinear(codes, scale, zero_point, _allow_other_attributes=True,
                                   _outputs=["dequantized"])

    def check(self, op, codes, scale, zero_point, dequantized) -> MatchResult:
        return _fits_int4(codes)

    def rewrite(self, op, codes, scale, zero_point, dequantized):
        packed = op.initializer(ir.tensor(_const(codes), dtype=ir.DataType.INT4), f"{codes.name}_int4")
        attributes = dequantized.producer().attributes   # axis, block_size: kept as they were
        kept = {name: attr.value for name, attr in attributes.items()} | {
            "axis": attributes.get_int("axis", 1)}
        return op.DequantizeLinear(op.Cast(packed, to=ir.DataType.INT8), scale, zero_point, **kept)


class DistributedBranchMatMul(pattern.RewriteRuleClassBase):
    def pattern(self, op, a, b, v):
        left = op.DequantizeLinear(a, _allow_other_inputs=True, _allow_other_attributes=True,
                                   _outputs=["left"])
        right = op.DequantizeLinear(b, _allow_other_inputs=True, _allow_other_attributes=True,
                                    _outputs=["right"])
        return op.MatMul(op.Add(left, right), v)

    def check(self, op, a, b, v, left, right) -> MatchResult:
        check = MatchResult()
        if v.producer() is None or v.producer().op_type != "DequantizeLinear":
            return check.fail("the other factor is not dequantized: no integer kernel either way")
        if any(x.dtype not in (ir.DataType.UINT8, ir.DataType.INT8) for x in (a, b)):
            return check.fail("branches are not 8-bit codes")
        return check

    def rewrite(self, op, a, b, v, left, right):
        def copy_of(value: ir.Value) -> ir.Value:
            node = value.producer()
            return op.DequantizeLinear(*node.inputs, **{k: attr.value for k, attr in node.attributes.items()})
        return op.Add(op.MatMul(copy_of(left), v), op.MatMul(copy_of(right), v))


def optimize_for_onnxruntime(model: ir.Model) -> ir.Model:
    """Apply the rules above, layout first, then 4-bit storage."""
    rewrite(model, pattern_rewrite_rules=[TransposedWeight.rule(), GemmToMatMul.rule(),
                                          DistributedBranchMatMul.rule()])
    rewrite(model, pattern_rewrite_rules=[QuantizedBiasGemm.rule()])
    rewrite(model, pattern_rewrite_rules=[Int4Weight.rule()])
    return model
