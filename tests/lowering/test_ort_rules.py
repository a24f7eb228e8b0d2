"""Rule-level tests of fxquant/lowering/ort_rules.py, in the style of onnxscript's rewriter tests.

Each rule is applied alone to a tiny opset-21 graph. A graph it must rewrite is checked for the
rewritten structure and for onnxruntime computing the same outputs before and after (with graph
optimizations off: the rewrite must keep the ONNX semantics; onnxruntime's fusions are checked
once, through optimize_for_onnxruntime). Scales and float inputs are powers of two and small
dyadic numbers, so float arithmetic is exact and exact rewrites must give equal outputs. A graph
a rule's check refuses must come back unchanged.
"""
import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper
from onnx_ir.passes.common import RemoveUnusedNodesPass

from fxquant.lowering.export import OPSET
from fxquant.lowering.ort_rules import (DistributedBranchMatMul, GemmToMatMul, Int4Weight,
                                        QuantizedBiasGemm, TransposedWeight,
                                        optimize_for_onnxruntime)
from fxquant.lowering.runtime import session


class Graph:
    """An opset-21 graph under construction; every helper returns the name of the value it adds."""

    def __init__(self):
        self.inputs, self.initializers, self.nodes = [], [], []

    def input(self, shape, dtype=np.float32) -> str:
        name = f"input{len(self.inputs)}"
        elem_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def const(self, array) -> str:
        name = f"const{len(self.initializers)}"
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type: str, *inputs: str, **attributes) -> str:
        name = f"{op_type}{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=name, **attributes))
        return name

    def dequantize(self, codes, scale, **attributes) -> str:
        """DequantizeLinear with a zero zero-point, as the exporter writes it; codes given as an
        array are a constant weight, given as a name they are computed at run time."""
        dtype = codes.dtype if isinstance(codes, np.ndarray) else self._dtype(codes)
        codes = self.const(codes) if isinstance(codes, np.ndarray) else codes
        zero_point = self.const(np.zeros(np.shape(scale), dtype))
        return self.op("DequantizeLinear", codes, self.const(np.float32(scale)), zero_point,
                       **attributes)

    def _dtype(self, name: str) -> np.dtype:
        info = next(i for i in self.inputs if i.name == name)
        return helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type)

    def model(self, output: str) -> onnx.ModelProto:
        """Shapes inferred: QuantizedBiasGemm reads the rank of its input."""
        outputs = [helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None)]
        graph = helper.make_graph(self.nodes, "g", self.inputs, outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def codes(shape, low=-128, high=127, dtype=np.int8, seed=0) -> np.ndarray:
    """Integer codes covering [low, high] (both ends appear)."""
    array = np.random.default_rng(seed).integers(low, high + 1, shape).astype(dtype)
    array.flat[:2] = low, high
    return array


def pow2_scales(shape, seed=1) -> np.ndarray:
    return (2.0 ** -np.random.default_rng(seed).integers(3, 7, shape)).astype(np.float32)


def feeds(model: onnx.ModelProto, seed=2) -> dict[str, np.ndarray]:
    """Full-range integer codes, small dyadic floats."""
    rng, out = np.random.default_rng(seed), {}
    for value in model.graph.input:
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            out[value.name] = codes(shape, info.min, info.max, dtype, seed=rng.integers(1 << 30))
        else:
            out[value.name] = (rng.integers(-64, 64, shape) / 8).astype(dtype)
    return out


def apply(rule_class, model: onnx.ModelProto) -> tuple[int, onnx.ModelProto]:
    """Apply one rule: (number of rewrites, the rewritten model without its dead nodes)."""
    ir_model = ir.from_proto(model)
    count = rule_class.rule().apply_to_model(ir_model)
    RemoveUnusedNodesPass()(ir_model)
    return count, ir.to_proto(ir_model)


def run(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)[0]


def op_types(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def producer(model: onnx.ModelProto, value: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if value in n.output)


def attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def constant(model: onnx.ModelProto, value: str) -> onnx.TensorProto:
    return next(i for i in model.graph.initializer if i.name == value)


def array(model: onnx.ModelProto, value: str) -> np.ndarray:
    return numpy_helper.to_array(constant(model, value))


def assert_rewritten_exactly(rule_class, model: onnx.ModelProto) -> onnx.ModelProto:
    count, rewritten = apply(rule_class, model)
    assert count == 1
    inputs = feeds(model)
    np.testing.assert_array_equal(run(rewritten, inputs), run(model, inputs))
    return rewritten


def assert_unchanged(rule_class, model: onnx.ModelProto) -> None:
    count, rewritten = apply(rule_class, model)
    assert count == 0
    assert [str(n) for n in rewritten.graph.node] == [str(n) for n in model.graph.node]


# Weight codes _int8_weight refuses (TransposedWeight, GemmToMatMul, QuantizedBiasGemm).
NOT_INT8_WEIGHTS = ["uint8", "computed at run time"]


def weight(g: Graph, kind: str, shape, axis: int) -> str:
    """A per-channel weight [out, in] (axis 0) or [in, out] (axis 1) of the given kind."""
    scale = pow2_scales(shape[axis])
    if kind == "uint8":
        return g.dequantize(codes(shape, 0, 255, np.uint8), scale, axis=axis)
    if kind == "computed at run time":
        return g.dequantize(g.input(shape, np.int8), scale, axis=axis)
    return g.dequantize(codes(shape), scale, axis=axis)


def transposed_weight_model(kind="int8") -> onnx.ModelProto:
    g = Graph()
    x = g.input([3, 4])
    w = g.op("Transpose", weight(g, kind, [5, 4], axis=0), perm=[1, 0])
    return g.model(g.op("MatMul", x, w))


def test_transposed_weight_stores_the_weight_transposed():
    """Transpose(DQ(W, axis=0)) -> DQ(W^T, axis=1), W^T an int8 initializer."""
    model = transposed_weight_model()
    w = array(model, model.graph.node[0].input[0])
    rewritten = assert_rewritten_exactly(TransposedWeight, model)
    assert op_types(rewritten) == ["DequantizeLinear", "MatMul"]
    dq = rewritten.graph.node[0]
    assert attributes(dq) == {"axis": 1}
    stored = constant(rewritten, dq.input[0])
    assert stored.data_type == onnx.TensorProto.INT8
    np.testing.assert_array_equal(numpy_helper.to_array(stored), w.T)


@pytest.mark.parametrize("kind", NOT_INT8_WEIGHTS)
def test_transposed_weight_needs_constant_int8_codes(kind):
    assert_unchanged(TransposedWeight, transposed_weight_model(kind))


def gemm_model(kind="int8", **gemm_attributes) -> onnx.ModelProto:
    g = Graph()
    x = g.input([3, 4])
    w = weight(g, kind, [5, 4], axis=0)
    bias = g.const((np.arange(5) / 4 - 0.5).astype(np.float32))
    return g.model(g.op("Gemm", x, w, bias, transB=1, **gemm_attributes))


def test_gemm_becomes_matmul_on_the_transposed_weight_plus_bias():
    """Gemm(A, DQ(W, axis=0), C, transB=1) -> MatMul(A, DQ(W^T, axis=1)) + C."""
    model = gemm_model()
    w = array(model, model.graph.node[0].input[0])
    rewritten = assert_rewritten_exactly(GemmToMatMul, model)
    assert op_types(rewritten) == ["DequantizeLinear", "MatMul", "Add"]
    dq, matmul, add = rewritten.graph.node
    assert attributes(dq) == {"axis": 1}
    assert list(matmul.input) == [model.graph.input[0].name, dq.output[0]]
    assert list(add.input) == [matmul.output[0], model.graph.node[1].input[2]]
    np.testing.assert_array_equal(array(rewritten, dq.input[0]), w.T)


@pytest.mark.parametrize("kind, gemm_attributes", [
    *[pytest.param(kind, {}, id=kind) for kind in NOT_INT8_WEIGHTS],
    pytest.param("int8", {"alpha": 0.5}, id="alpha"),
    pytest.param("int8", {"beta": 2.0}, id="beta"),
])
def test_gemm_to_matmul_needs_constant_int8_codes_and_a_plain_gemm(kind, gemm_attributes):
    assert_unchanged(GemmToMatMul, gemm_model(kind, **gemm_attributes))


A_SCALE = np.float32(0.037)


def quantized_bias_model(kind="int8", input_shape=(3, 4), weight_shape=(4, 5),
                         runtime_bias=False, per_channel_input=False) -> onnx.ModelProto:
    g = Graph()
    a_codes = g.input(list(input_shape), np.uint8)
    a = (g.dequantize(a_codes, np.full(input_shape[-1], A_SCALE), axis=1) if per_channel_input
         else g.dequantize(a_codes, A_SCALE))
    if len(weight_shape) == 3:
        w = g.dequantize(codes(weight_shape), pow2_scales(weight_shape[1]), axis=1)
    else:
        w = weight(g, kind, weight_shape, axis=1)
    bias = (g.input([weight_shape[-1]]) if runtime_bias else
            g.const(np.random.default_rng(3).normal(size=weight_shape[-1]).astype(np.float32)))
    return g.model(g.op("Add", g.op("MatMul", a, w), bias))


def test_bias_is_quantized_on_the_grid_of_the_product():
    """Add(MatMul(DQ(a), DQ(W, axis=1)), b), a 2-D -> Gemm(DQ(a), DQ(W), DQ(b_q, s_a * s_w)) with
    b_q = round(b / (s_a * s_w)) int32: each output moves by at most s_a * s_w / 2."""
    model = quantized_bias_model()
    count, rewritten = apply(QuantizedBiasGemm, model)
    assert count == 1
    assert op_types(rewritten) == ["DequantizeLinear"] * 3 + ["Gemm"]
    gemm = rewritten.graph.node[-1]
    assert attributes(gemm) == {}
    bias_dq = producer(rewritten, gemm.input[2])
    assert attributes(bias_dq) == {"axis": 0}
    q_bias = array(rewritten, bias_dq.input[0])
    grid = A_SCALE * array(model, model.graph.node[1].input[1])  # s_a * s_w
    bias = array(model, model.graph.node[3].input[1])
    assert q_bias.dtype == np.int32
    np.testing.assert_array_equal(q_bias, np.round(bias / grid))
    np.testing.assert_allclose(array(rewritten, bias_dq.input[1]), grid)
    inputs = feeds(model)
    error = np.abs(run(rewritten, inputs) - run(model, inputs))
    assert (error <= grid / 2 + 1e-5).all(), (error, grid / 2)  # 1e-5: float Gemm vs MatMul+Add


@pytest.mark.parametrize("case", [
    {"kind": kind} for kind in NOT_INT8_WEIGHTS] + [
    {"input_shape": (2, 3, 4)},
    {"weight_shape": (2, 4, 5)},
    {"runtime_bias": True},
    {"per_channel_input": True},
], ids=lambda case: "-".join(f"{k}={v}" for k, v in case.items()))
def test_quantized_bias_needs_a_2d_product_of_constants(case):
    assert_unchanged(QuantizedBiasGemm, quantized_bias_model(**case))


def int4_model(w: np.ndarray | None, scale, **dq_attributes) -> onnx.ModelProto:
    g = Graph()
    x = g.input([3, 4])
    w = g.input([4, 6], np.int8) if w is None else w
    return g.model(g.op("MatMul", x, g.dequantize(w, scale, **dq_attributes)))


@pytest.mark.parametrize("scale, dq_attributes", [
    (pow2_scales(6), {"axis": 1}),
    (pow2_scales(4), {"axis": 0}),
    (np.float32(2 ** -3), {}),
    pytest.param(pow2_scales([2, 6]), {"axis": 0, "block_size": 2}),
], ids=["per-channel-axis-1", "per-channel-axis-0", "per-tensor", "block-wise"])
def test_4bit_codes_are_stored_as_int4(scale, dq_attributes):
    """DQ(W int8 in [-8, 7]) -> DQ(Cast(W stored as int4, to=int8)), its attributes kept."""
    w = codes([4, 6], -8, 7)
    model = int4_model(w, scale, **dq_attributes)
    rewritten = assert_rewritten_exactly(Int4Weight, model)
    assert op_types(rewritten) == ["Cast", "DequantizeLinear", "MatMul"]
    cast, dq, _ = rewritten.graph.node
    assert attributes(cast) == {"to": onnx.TensorProto.INT8}
    assert attributes(dq) == {"axis": 1, **dq_attributes}
    stored = constant(rewritten, cast.input[0])
    assert stored.data_type == onnx.TensorProto.INT4
    np.testing.assert_array_equal(numpy_helper.to_array(stored), w)


@pytest.mark.parametrize("w", [
    codes([4, 6], -9, 7), codes([4, 6], -8, 8), codes([4, 6], 0, 7, np.uint8), None,
], ids=["below -8", "above 7", "uint8", "computed at run time"])
def test_int4_storage_needs_constant_int8_codes_in_range(w):
    assert_unchanged(Int4Weight, int4_model(w, pow2_scales(6), axis=1))


def branch_model(left="uint8", v="int8", b_dtype=np.uint8) -> onnx.ModelProto:
    g = Graph()
    a = g.dequantize(g.input([2, 3, 4], np.uint8), np.float32(2 ** -8)) if left == "uint8" \
        else g.input([2, 3, 4])
    b = g.dequantize(g.input([2, 3, 4], b_dtype), np.float32(2 ** -9))
    v = g.dequantize(g.input([2, 4, 5], np.int8), np.float32(2 ** -4)) if v == "int8" \
        else g.input([2, 4, 5])
    return g.model(g.op("MatMul", g.op("Add", a, b), v))


def test_product_is_distributed_over_the_branches():
    """MatMul(DQ(a) + DQ(b), DQ(v)) -> MatMul(DQ(a), DQ(v)) + MatMul(DQ(b), DQ(v)), a, b uint8."""
    model = branch_model()
    rewritten = assert_rewritten_exactly(DistributedBranchMatMul, model)
    assert sorted(op_types(rewritten)) == ["Add"] + ["DequantizeLinear"] * 3 + ["MatMul"] * 2
    add = producer(rewritten, model.graph.output[0].name)
    assert add.op_type == "Add"
    branches = [producer(rewritten, value) for value in add.input]
    v = model.graph.node[2].output[0]
    assert [m.op_type for m in branches] == ["MatMul", "MatMul"]
    assert [m.input[1] for m in branches] == [v, v]
    dequantized = [producer(rewritten, m.input[0]) for m in branches]
    assert [n.op_type for n in dequantized] == ["DequantizeLinear", "DequantizeLinear"]
    copies = {n.input[0]: (list(n.input), attributes(n)) for n in dequantized}
    assert copies == {n.input[0]: (list(n.input), attributes(n)) for n in model.graph.node[:2]}


@pytest.mark.parametrize("case", [{"left": "float"}, {"v": "float"}, {"b_dtype": np.int16}],
                         ids=["float branch", "V not dequantized", "int16 branch"])
def test_distribution_needs_8bit_branches_and_a_dequantized_factor(case):
    assert_unchanged(DistributedBranchMatMul, branch_model(**case))


@pytest.mark.parametrize("low, high, stored", [(-128, 127, onnx.TensorProto.INT8),
                                               (-8, 7, onnx.TensorProto.INT4)], ids=["w8", "w4"])
def test_optimized_gemm_runs_as_an_integer_kernel(low, high, stored, tmp_path):
    """The rules together make onnxruntime run an exported quantized Gemm as QGemm."""
    g = Graph()
    x = g.input([3, 4])
    a_scale, a_zero_point = g.const(np.float32(0.05)), g.const(np.uint8(128))
    a = g.op("DequantizeLinear", g.op("QuantizeLinear", x, a_scale, a_zero_point), a_scale,
             a_zero_point)
    w = g.dequantize(codes([5, 4], low, high), np.full(5, 0.01, np.float32), axis=0)
    model = g.model(g.op("Gemm", a, w, g.const(np.linspace(-1, 1, 5, dtype=np.float32)), transB=1))

    def optimized_ops(model: onnx.ModelProto, name: str) -> list[str]:
        onnx.save(model, tmp_path / f"{name}.onnx")
        session(tmp_path / f"{name}.onnx", optimized_path=tmp_path / f"{name}_ort.onnx", warn=False)
        return op_types(onnx.load(tmp_path / f"{name}_ort.onnx"))

    float_gemm = ["QuantizeLinear", "DequantizeLinear", "DequantizeLinear", "Gemm"]
    assert optimized_ops(model, "exported") == float_gemm  # what onnxruntime does without the rules
    rewritten = ir.to_proto(optimize_for_onnxruntime(ir.from_proto(model)))
    assert optimized_ops(rewritten, "rewritten") == ["QuantizeLinear", "QGemm"]
    assert [i.data_type for i in rewritten.graph.initializer if len(i.dims) == 2] == [stored]
