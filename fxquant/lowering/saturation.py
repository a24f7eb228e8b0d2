"""Can any integer GEMM of an ONNX file saturate on a CPU without VNNI? Answered on any machine.

onnxruntime's u8 x s8 GEMM on AVX2 and AVX-512 without VNNI (`vpmaddubsw`) adds adjacent pairs of
uint8 x int8 products along the reduction axis in int16 with saturation, then sums the pairs in
int32. `emulate_u8s8` computes exactly that in numpy; `check` bounds every GEMM of a file from its
weight codes and its input's largest code, so a test proves on a VNNI machine what an AVX2 machine
would compute. u8 x u8 products go through a 16-bit `vpmaddwd` kernel there and are exact.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir

from fxquant.target import FULL_RANGE_ACTIVATION_MAX, INT16_MAX

GEMM_OPS = ("MatMul", "Gemm", "Conv")
_CODE_TYPES = (ir.DataType.UINT8, ir.DataType.INT8, ir.DataType.INT4, ir.DataType.UINT4)


def emulate_u8s8(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (M, K) uint8 @ b (K, N) int8 as `vpmaddubsw` computes it: int16-saturated pair sums."""
    a, b = a.astype(np.int64), b.astype(np.int64)
    if a.shape[1] % 2:
        a, b = np.pad(a, ((0, 0), (0, 1))), np.pad(b, ((0, 1), (0, 0)))
    pairs = np.einsum("mpi,pin->mpn", a.reshape(len(a), -1, 2), b.reshape(-1, 2, b.shape[1]))
    return np.clip(pairs, -INT16_MAX - 1, INT16_MAX).sum(axis=1)


@dataclass(frozen=True)
class GemmCheck:
    """One GEMM whose both inputs are 8-bit codes: what an AVX2 kernel could add in one pair."""
    node: str
    op_type: str
    activation_max: int         # the largest unsigned code its input can reach
    weight_range: tuple[int, int]
    pair_range: tuple[int, int]  # the smallest and largest sum of any two products
    unsigned_weight: bool       # u8 x u8 runs on an exact kernel

    @property
    def can_saturate(self) -> bool:
        lo, hi = self.pair_range
        return not self.unsigned_weight and (hi > INT16_MAX or lo < -INT16_MAX - 1)


def _const(value: ir.Value | None) -> np.ndarray | None:
    tensor = ir.convenience.get_const_tensor(value) if value is not None else None
    return None if tensor is None else tensor.numpy()


def _dtype(value: ir.Value) -> ir.DataType | None:
    """A value's type; a QuantizeLinear output without type information (files written without
    value_info) has its zero point's type, uint8 when it has none (the ONNX default)."""
    node = value.producer()
    if value.dtype is not None or node is None or node.op_type != "QuantizeLinear":
        return value.dtype
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        return node.inputs[2].dtype
    return ir.DataType(node.attributes.get_int("output_dtype", ir.DataType.UINT8))


def _codes(value: ir.Value) -> tuple[ir.Value, ir.DataType] | None:
    """The integer codes a DequantizeLinear turns into `value` (through a widening Cast), and
    their type."""
    node = value.producer()
    if node is None or node.op_type != "DequantizeLinear":
        return None
    codes = node.inputs[0]
    source = codes.producer()
    if source is not None and source.op_type == "Cast" and _dtype(source.inputs[0]) in _CODE_TYPES:
        codes = source.inputs[0]
    dtype = _dtype(codes)
    return (codes, dtype) if dtype in _CODE_TYPES else None


def _clip_max(value: ir.Value) -> float | None:
    """The constant upper bound of a Min / Clip in front of a QuantizeLinear, if there is one."""
    node = value.producer()
    if node is None:
        return None
    if node.op_type == "Min":
        bounds = [_const(v) for v in node.inputs]
        known = [float(b.max()) for b in bounds if b is not None]
        return min(known) if known else None
    if node.op_type == "Clip" and len(node.inputs) > 2 and _const(node.inputs[2]) is not None:
        return float(_const(node.inputs[2]).max())
    return None


def _activation_max(codes: ir.Value, dtype: ir.DataType) -> int:
    """The largest unsigned code a GEMM input can reach (int8 codes count 128 more, as a
    u8 x s8 kernel sees them); 255 unless a constant or a clipped QuantizeLinear says less."""
    offset = 128 if dtype in (ir.DataType.INT8, ir.DataType.INT4) else 0
    constant = _const(codes)
    if constant is not None:
        return int(constant.max()) + offset
    node = codes.producer()
    if node is not None and node.op_type == "QuantizeLinear":
        top, scale = _clip_max(node.inputs[0]), _const(node.inputs[1])
        zero_point = _const(node.inputs[2]) if len(node.inputs) > 2 else np.zeros(1)
        if top is not None and scale is not None and zero_point is not None:
            code = np.round(top / scale.astype(np.float64)) + zero_point.astype(np.float64)
            return int(min(code.max() + offset, FULL_RANGE_ACTIVATION_MAX))
    return FULL_RANGE_ACTIVATION_MAX


def _reduction_columns(node: ir.Node, weight: np.ndarray) -> np.ndarray:
    """The weight as (K, N): one column per output, the reduction axis first."""
    if node.op_type == "Conv":
        return weight.reshape(weight.shape[0], -1).T
    if node.op_type == "Gemm" and node.attributes.get_int("transB", 0):
        return weight.T
    return np.moveaxis(weight, -2, 0).reshape(weight.shape[-2], -1)


def _pair_range(columns: np.ndarray, activation_max: int) -> tuple[int, int]:
    """The extreme sums a0*w0 + a1*w1 over any two weights of one column, 0 <= a <= max."""
    if len(columns) < 2:
        columns = np.pad(columns, ((0, 2 - len(columns)), (0, 0)))
    ordered = np.sort(columns.astype(np.int64), axis=0)
    top = np.maximum(ordered[-2:], 0).sum(axis=0).max()
    bottom = np.minimum(ordered[:2], 0).sum(axis=0).min()
    return int(activation_max * bottom), int(activation_max * top)


def _check_node(node: ir.Node) -> GemmCheck | None:
    a, b = (_codes(v) if v is not None else None for v in node.inputs[:2])
    if a is None or b is None:
        return None  # a float input: onnxruntime runs it in float
    activation_max = _activation_max(*a)
    weight = _const(b[0])
    signed = b[1] in (ir.DataType.INT8, ir.DataType.INT4)
    if weight is None:  # two activations: the codes' type bounds them
        weight = np.array([[-128], [127]] if signed else [[0], [255]], dtype=np.int64)
    columns = _reduction_columns(node, weight) if weight.ndim >= 2 else weight.reshape(-1, 1)
    return GemmCheck(node.name or node.op_type, node.op_type, activation_max,
                     (int(weight.min()), int(weight.max())), _pair_range(columns, activation_max),
                     unsigned_weight=not signed)


def check(model: ir.Model | str | Path) -> list[GemmCheck]:
    """Every GEMM of a QDQ `model` (MatMul / Gemm / Conv reading two DequantizeLinear outputs,
    what onnxruntime fuses into its integer kernels) with its worst pair sum. Files already in
    operator form (QLinearMatMul, MatMulInteger) are not read."""
    if not isinstance(model, ir.Model):
        model = ir.load(str(model))
    checks = (_check_node(n) for n in model.graph.all_nodes() if n.op_type in GEMM_OPS)
    return [c for c in checks if c is not None]


def saturating(model: ir.Model | str | Path) -> list[GemmCheck]:
    """The GEMMs of `model` that an AVX2 CPU without VNNI could compute wrong."""
    return [c for c in check(model) if c.can_saturate]
