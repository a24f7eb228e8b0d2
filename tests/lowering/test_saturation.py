"""The AVX2 emulation is checked against this CPU's onnxruntime, then used to prove that
portable exports cannot saturate and that full-range (vnni) exports can, on any machine."""
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper

import fxquant
from fxquant import cpu, target
from fxquant.lowering import runtime, saturation

K, N = 64, 16


def _matmul_integer(w: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [None, w.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [None, w.shape[1]])],
        [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _adversarial(rng, weight_lo: int, weight_hi: int):
    a = rng.integers(200, 256, (4, K)).astype(np.uint8)
    w = rng.integers(weight_lo, weight_hi + 1, (K, N)).astype(np.int8)
    return a, w


def _exact(a, w):
    return a.astype(np.int64) @ w.astype(np.int64)


def test_emulation_matches_onnxruntime_on_this_cpu():
    """On a CPU without VNNI onnxruntime computes what the emulation says; with VNNI, the exact
    product. Either way the emulation is checked against a real kernel."""
    a, w = _adversarial(np.random.default_rng(0), -128, 127)
    got = ort.InferenceSession(_matmul_integer(w).SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"a": a})[0]
    expected = _exact(a, w) if cpu.current().full_range_int8_exact else saturation.emulate_u8s8(a, w)
    np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(saturation.emulate_u8s8(a, w), _exact(a, w))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2 ** 16), k=st.integers(1, 40))
def test_seven_bit_weights_never_saturate(seed, k):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (3, k)).astype(np.uint8)
    a[0] = 255
    w = rng.choice(np.array([-64, 63, 0, 1, -1], dtype=np.int8), (k, 5))
    np.testing.assert_array_equal(saturation.emulate_u8s8(a, w), _exact(a, w))


QEMU = shutil.which("qemu-x86_64")


@pytest.mark.skipif(QEMU is None, reason="qemu-user is not installed (.ci/run installs it)")
def test_emulation_matches_onnxruntime_on_an_emulated_avx2_cpu(tmp_path):
    """onnxruntime under `qemu-x86_64 -cpu Haswell` (AVX2, no VNNI) on the full-range and the
    7-bit weights: what a CPU without VNNI really computes, on whichever CPU runs the tests."""
    rng = np.random.default_rng(1)
    cases = {"full": _adversarial(rng, -128, 127), "seven": _adversarial(rng, -64, 63)}
    for name, (a, w) in cases.items():
        onnx.save(_matmul_integer(w), tmp_path / f"{name}.onnx")
        np.save(tmp_path / f"{name}_a.npy", a)
    script = ("import sys, numpy as np, onnxruntime as ort\n"
              "for name in ('full', 'seven'):\n"
              "    s = ort.InferenceSession(f'{sys.argv[1]}/{name}.onnx', providers=['CPUExecutionProvider'])\n"
              "    np.save(f'{sys.argv[1]}/{name}_y.npy', s.run(None, {'a': np.load(f'{sys.argv[1]}/{name}_a.npy')})[0])\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    subprocess.run([QEMU, "-cpu", "Haswell", os.path.realpath(sys.executable), "-c", script,
                    str(tmp_path)], env=env, check=True, capture_output=True, timeout=300)
    full_a, full_w = cases["full"]
    np.testing.assert_array_equal(np.load(tmp_path / "full_y.npy"), saturation.emulate_u8s8(full_a, full_w))
    assert not np.array_equal(np.load(tmp_path / "full_y.npy"), _exact(full_a, full_w))
    seven_a, seven_w = cases["seven"]
    np.testing.assert_array_equal(np.load(tmp_path / "seven_y.npy"), _exact(seven_a, seven_w))


@pytest.fixture(scope="module")
def exports(ref, calib_loader, tmp_path_factory):
    out = tmp_path_factory.mktemp("targets")
    paths = {}
    for name in (target.PORTABLE, target.VNNI):
        qmodel = fxquant.convert(ref.model, calib_loader, "minmax", "w8a8", target=name)
        paths[name] = fxquant.export_onnx(qmodel, out / f"{name}.onnx", next(iter(calib_loader))[0][:4])
    return paths


def test_portable_export_cannot_saturate_and_vnni_can(exports):
    portable, vnni = (saturation.check(exports[t]) for t in (target.PORTABLE, target.VNNI))
    assert len(portable) == len(vnni) > 0
    assert not [c for c in portable if c.can_saturate]
    weights = [c for c in portable if not c.unsigned_weight]
    assert weights and all(c.activation_max == 255 and -64 <= c.weight_range[0] and c.weight_range[1] <= 63
                           for c in weights)
    assert len([c for c in vnni if c.can_saturate]) == len(weights)


def test_saturating_pairs_are_real_for_the_vnni_file(exports):
    """A worst case the check reports, run through the emulation: the products really overflow."""
    model = onnx.load(exports[target.VNNI])
    codes = next(numpy_helper.to_array(i) for i in model.graph.initializer
                 if i.data_type == TensorProto.INT8 and i.dims and len(i.dims) == 2)
    column = codes[:, np.argmax(np.abs(codes.astype(int)).max(axis=0))].astype(int)
    order = np.argsort(-column)[:2] if column.max() >= -column.min() else np.argsort(column)[:2]
    w = np.zeros((2, 1), np.int8)
    w[:, 0] = column[order]
    a = np.full((1, 2), 255, np.uint8)
    assert saturation.emulate_u8s8(a, w)[0, 0] != _exact(a, w)[0, 0]


def _as_cpu(monkeypatch, flags, machine="x86_64"):
    monkeypatch.setattr(cpu, "current", lambda: cpu.CpuInfo("test CPU", machine, flags))


def test_loading_a_vnni_file_on_an_avx2_cpu_warns(exports, monkeypatch, tmp_path):
    _as_cpu(monkeypatch, ("avx2",))
    with pytest.warns(UserWarning, match="can saturate on this CPU .*target='portable'"):
        runtime.OnnxModule(exports[target.VNNI])
    unlabeled = onnx.load(exports[target.VNNI])
    del unlabeled.metadata_props[:]  # an export from before targets: checked as full range
    onnx.save(unlabeled, tmp_path / "old.onnx")
    with pytest.warns(UserWarning, match="can saturate"):
        runtime.OnnxModule(tmp_path / "old.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runtime.OnnxModule(exports[target.PORTABLE])
        _as_cpu(monkeypatch, ("avx2", "avx512_vnni"))
        runtime.OnnxModule(exports[target.VNNI])
        _as_cpu(monkeypatch, (), machine="aarch64")
        runtime.OnnxModule(exports[target.VNNI])


def test_the_target_is_recorded_in_the_file(exports):
    assert runtime.file_target(exports[target.PORTABLE]) == target.PORTABLE
    assert runtime.file_target(exports[target.VNNI]) == target.VNNI


def test_a_portable_export_that_could_saturate_is_refused(ref, calib_loader, tmp_path, monkeypatch):
    """If the quantize pass ever let full-range codes through, export refuses the file."""
    qmodel = fxquant.convert(ref.model, calib_loader, "minmax", "w8a8", target=target.VNNI)
    qmodel.config = replace(qmodel.config, target=target.PORTABLE)
    with pytest.raises(fxquant.FxQuantError, match="could saturate on CPUs without VNNI"):
        fxquant.export_onnx(qmodel, tmp_path / "q.onnx", torch.randn(2, 3, 32, 32))
    assert list(tmp_path.iterdir()) == []


def _qdq_matmul(w: np.ndarray) -> onnx.ModelProto:
    """x -> QuantizeLinear (no zero point: uint8) -> DequantizeLinear -> MatMul(DQ(int8 w)), with
    no value_info for the codes: how other tools write QDQ files."""
    nodes = [helper.make_node("QuantizeLinear", ["x", "s"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws"], ["wd"]),
             helper.make_node("MatMul", ["xd", "wd"], ["y"])]
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.array(0.01, np.float32), "ws"), numpy_helper.from_array(w, "w")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, K])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, N])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_files_without_type_information_are_checked(tmp_path):
    rng = np.random.default_rng(2)
    for (lo, hi), expected in (((-128, 127), 1), ((-64, 63), 0)):
        onnx.save(_qdq_matmul(rng.integers(lo, hi + 1, (K, N)).astype(np.int8)), tmp_path / "q.onnx")
        checks = saturation.check(tmp_path / "q.onnx")
        assert len(checks) == 1 and checks[0].activation_max == 255
        assert len(saturation.saturating(tmp_path / "q.onnx")) == expected
