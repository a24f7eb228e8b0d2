"""What this CPU's int8 GEMM can gain over fp32 on a model's own GEMM shapes: the ceiling a
quantized model's speed-up sits under.

The (M, K, N) of every MatMul / Gemm with a constant weight in the FP32 ONNX file at one batch size
(the GEMMs quantization makes integer), each timed as a one-node model in onnxruntime: fp32 MatMul,
uint8 x int8 MatMulInteger (u8s8, the kernel fxquant's and onnxruntime's int8 files run) and
uint8 x uint8 MatMulInteger (u8u8, weights offset by 128: exact on every CPU, at the speed shown
here). The ratios sum each shape's time as often as the model runs it.
"""
from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fxquant.bench.timing import median_ms, random_feed
from fxquant.errors import FxQuantError
from fxquant.lowering.export import OPSET
from fxquant.lowering.runtime import session

GEMMS = ("MatMul", "Gemm")
KINDS = ("fp32", "u8s8", "u8u8")


def gemm_shapes(fp32_onnx: str | Path, batch: int, sequence: int = 64) -> Counter:
    """(M, K, N) -> how many MatMul / Gemm nodes with a 2-D initializer weight run that shape.
    M comes from running the model once (activation shapes depend on the batch and on reshapes;
    a token model's on `sequence`)."""
    model = onnx.load(str(fp32_onnx))
    weights = {w.name: tuple(w.dims) for w in model.graph.initializer if len(w.dims) == 2}
    gemms = [n for n in model.graph.node if n.op_type in GEMMS and n.input[1] in weights]
    feed = random_feed(fp32_onnx, batch, sequence)
    inner = [a for a in dict.fromkeys(n.input[0] for n in gemms) if a not in feed]
    outputs = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=a) for a in inner if a not in outputs)
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(model, Path(tmp) / "probe.onnx")
        values = session(Path(tmp) / "probe.onnx").run(inner, feed)
    sizes = {**{a: v.size for a, v in feed.items()}, **{a: v.size for a, v in zip(inner, values)}}
    shapes = Counter()
    for node in gemms:
        k, n = weights[node.input[1]]
        if any(a.name == "transB" and a.i for a in node.attribute):
            k, n = n, k
        shapes[(sizes[node.input[0]] // k, k, n)] += 1  # M: all of A but the reduced axis
    return shapes


def _one_node(kind: str, m: int, k: int, n: int,
              rng: np.random.Generator) -> tuple[onnx.ModelProto, np.ndarray]:
    """A one-GEMM model of `kind` with a constant weight (onnxruntime prepacks it), and an input."""
    if kind == "fp32":
        a = rng.standard_normal((m, k)).astype(np.float32)
        inits = {"w": rng.standard_normal((k, n)).astype(np.float32)}
        node = helper.make_node("MatMul", ["a", *inits], ["y"])
    else:
        a = rng.integers(0, 256, (m, k), dtype=np.uint8)
        w = (rng.integers(-128, 128, (k, n), dtype=np.int8) if kind == "u8s8"
             else rng.integers(0, 256, (k, n), dtype=np.uint8))
        inits = {"w": w, "a_zp": np.array(128, np.uint8),
                 "w_zp": np.array(128 if kind == "u8u8" else 0, w.dtype)}
        node = helper.make_node("MatMulInteger", ["a", *inits], ["y"])
    y_type = TensorProto.FLOAT if kind == "fp32" else TensorProto.INT32
    a_type = helper.np_dtype_to_tensor_dtype(a.dtype)
    graph = helper.make_graph(
        [node], kind, [helper.make_tensor_value_info("a", a_type, a.shape)],
        [helper.make_tensor_value_info("y", y_type, [m, n])],
        [numpy_helper.from_array(v, name) for name, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), a


def time_shapes(shapes: Counter, threads: int, repeats: int, warmup: int) -> dict:
    """Each shape's fp32 / u8s8 / u8u8 time (one interleaved round over all of them) and the
    count-weighted totals and ratios."""
    rng = np.random.default_rng(0)
    paths, inputs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for m, k, n in shapes:
            for kind in KINDS:
                key = (m, k, n, kind)
                model, inputs[key] = _one_node(kind, m, k, n, rng)
                paths[key] = Path(tmp) / f"{kind}_{m}x{k}x{n}.onnx"
                onnx.save(model, paths[key])
        ms = median_ms(paths, inputs, threads, repeats, warmup)
    rows = [{"m": m, "k": k, "n": n, "count": count,
             **{f"{kind}_ms": ms[(m, k, n, kind)] for kind in KINDS}}
            for (m, k, n), count in shapes.items()]
    total = {kind: sum(r["count"] * r[f"{kind}_ms"] for r in rows) for kind in KINDS}
    return {"threads": threads, "repeats": repeats, "shapes": rows,
            **{f"{kind}_ms": total[kind] for kind in KINDS},
            "u8s8_speedup": total["fp32"] / total["u8s8"],
            "u8u8_speedup": total["fp32"] / total["u8u8"]}


def ceiling(fp32_onnx: str | Path, batch: int, threads: int = 2, repeats: int = 20,
            warmup: int = 5, sequence: int = 64) -> dict:
    """The int8-vs-fp32 GEMM ceiling of the model in `fp32_onnx` at `batch` on this CPU."""
    shapes = gemm_shapes(fp32_onnx, batch, sequence)
    if not shapes:
        raise FxQuantError(f"{fp32_onnx} has no MatMul or Gemm with a constant 2-D weight")
    return {"batch": batch, **time_shapes(shapes, threads, repeats, warmup)}
