"""Integer-only audit: every ONNX node that computes in float after the input QuantizeLinear.

It reads the graph onnxruntime runs (its optimized graph, where DQ -> MatMul -> Q became integer
kernels) unless `optimized=False`. A node computes in float when it reads or writes a float tensor
and is not a quantization boundary (QuantizeLinear, DequantizeLinear), an integer kernel (whose
float scales and float output are the dequantization it fuses) or a layout op (moves values only).
Only nodes downstream of a QuantizeLinear of a graph input count (of the inputs themselves when
none is quantized: then the float head of the model counts too); the float tail after the last
dequantization (a classifier's logits) counts as well.
"""
from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import onnx

from fxquant.errors import FxQuantError
from fxquant.lowering.runtime import session

BOUNDARIES = {"QuantizeLinear", "DequantizeLinear"}
INTEGER_KERNELS = {"QLinearMatMul", "QGemm", "MatMulIntegerToFloat", "MatMulInteger", "ConvInteger",
                   "QLinearConv", "QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearSoftmax",
                   "QLinearSigmoid", "QLinearLeakyRelu", "QLinearAveragePool", "QLinearGlobalAveragePool",
                   "QAttention", "DynamicQuantizeMatMul"}
LAYOUT = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Concat", "Split", "Slice",
          "Gather", "Expand", "Identity", "Shape", "Tile"}
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
               onnx.TensorProto.BFLOAT16}


@dataclass(frozen=True)
class FloatNode:
    name: str
    op_type: str


def _element_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every value: declared ones, else Cast's `to`, else the first input's."""
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*graph.input, *graph.output, *graph.value_info)}
    types.update({t.name: t.data_type for t in graph.initializer})
    for node in graph.node:
        for out in node.output:
            if types.get(out):
                continue
            if node.op_type == "Cast":
                types[out] = next(a.i for a in node.attribute if a.name == "to")
            elif node.op_type == "DequantizeLinear":
                types[out] = onnx.TensorProto.FLOAT
            elif node.input and node.input[0] in types:
                types[out] = types[node.input[0]]
    return types


def _downstream_of_input_quantizers(model: onnx.ModelProto) -> set[int]:
    graph = model.graph
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    inputs = {v.name for v in graph.input} - {t.name for t in graph.initializer}
    readers = [i for i, n in enumerate(graph.node) if set(n.input) & inputs]
    stack = [i for i in readers if graph.node[i].op_type == "QuantizeLinear"] or readers
    seen: set[int] = set()
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        for out in graph.node[i].output:
            stack.extend(consumers.get(out, ()))
    return seen


def audit_model(model: onnx.ModelProto) -> list[FloatNode]:
    types = _element_types(model)
    found = []
    for i in sorted(_downstream_of_input_quantizers(model)):
        node = model.graph.node[i]
        if node.op_type in BOUNDARIES | INTEGER_KERNELS | LAYOUT:
            continue
        if any(types.get(v) in FLOAT_TYPES for v in (*node.input, *node.output) if v):
            found.append(FloatNode(node.name, node.op_type))
    return found


def audit(onnx_path: str | Path, optimized: bool = True) -> list[FloatNode]:
    """The float-computing nodes of the model at `onnx_path`, in graph order."""
    path = Path(onnx_path)
    if not path.is_file():
        raise FxQuantError(f"cannot audit {path}: no such file")
    if not optimized:
        return audit_model(onnx.load(path))
    with tempfile.TemporaryDirectory() as tmp:
        session(path, optimized_path=Path(tmp) / "optimized.onnx")
        return audit_model(onnx.load(Path(tmp) / "optimized.onnx"))


def summary(nodes: list[FloatNode]) -> dict[str, int]:
    """Float nodes per op type, most frequent first."""
    return dict(Counter(n.op_type for n in nodes).most_common())


def markdown(nodes: list[FloatNode]) -> str:
    rows = [f"| {op} | {count} |" for op, count in summary(nodes).items()]
    return "\n".join([f"{len(nodes)} ONNX nodes compute in float after the input QuantizeLinear",
                      "", "| op | nodes |", "|---|---|", *rows])
