import os
from collections import Counter
from dataclasses import replace

import onnx
import onnx_ir as ir
import pytest
import torch

import fxquant
from fxquant import ExportMismatch, FxQuantError, config
from fxquant.lowering import export
from fxquant.lowering.parity import agreement
from fxquant.lowering.runtime import OnnxModule, session

INTEGER_KERNELS = {"MatMulIntegerToFloat", "QLinearMatMul", "QGemm", "DynamicQuantizeMatMul",
                   "MatMulNBits"}
N_LINEARS = 25            # 4 per block x 6 blocks + head
N_ATTENTION_MATMULS = 12  # q k^T and attn v per block


@pytest.fixture(scope="module")
def exports(ref, calib_loader, tmp_path_factory):
    """(bits, quantized model, its ONNX file) for a bit-width, made once in this module."""
    made = {}

    def export_once(bits: str):
        if bits not in made:
            qmodel = fxquant.convert(ref.model, calib_loader, "minmax", bits)
            path = tmp_path_factory.mktemp("onnx") / f"{bits}.onnx"
            fxquant.export_onnx(qmodel, path, torch.randn(1, 3, 32, 32))
            made[bits] = bits, qmodel, path
        return made[bits]
    return export_once


@pytest.fixture(params=["w8a8", "w4a4"])
def exported(request, exports):
    return exports(request.param)


@pytest.fixture
def exported_w8a8(exports):
    """For what one bit-width shows (refusals, file handling)."""
    return exports("w8a8")


def test_onnx_agrees_with_the_quantized_model(exported, test_loader):
    bits, qmodel, path = exported
    onnx_model = OnnxModule(path)
    logits = [(qmodel(x).detach(), onnx_model(x)) for x, _ in test_loader]
    stats = agreement(torch.cat([a for a, _ in logits]), torch.cat([b for _, b in logits]))
    print(f"{bits}: {stats}")
    assert stats["top1_agreement"] >= 0.995


def test_every_quantized_matmul_runs_as_an_integer_kernel(exported, tmp_path):
    bits, _, path = exported
    optimized = tmp_path / "optimized.onnx"
    session(path, optimized_path=optimized)
    ops = Counter(n.op_type for n in onnx.load(optimized).graph.node)
    assert sum(ops[k] for k in INTEGER_KERNELS) == N_LINEARS + N_ATTENTION_MATMULS, ops
    assert ops["MatMul"] == 0 and ops["Gemm"] == 0


@pytest.mark.parametrize("recipe", ["repq-vit", "dopq-vit"])
def test_branched_attention_multiplies_v_on_integer_kernels(recipe, ref, calib_loader, test_loader,
                                                            tmp_path):
    """At 4 bits log√2 (repq-vit) and TanQ (dopq-vit) hold A as two uint8 branches: A·V must run
    as two integer MatMuls, not one float MatMul, and the export still agree."""
    cfg = replace(config.resolve(recipe, "w4a4"), refine=())  # the attention quantizer alone
    qmodel = fxquant.convert(ref.model, calib_loader, cfg)
    path = fxquant.export_onnx(qmodel, tmp_path / "q.onnx", torch.randn(1, 3, 32, 32))
    session(path, optimized_path=tmp_path / "optimized.onnx")
    ops = Counter(n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node)
    assert ops["MatMul"] == 0 and ops["Gemm"] == 0, ops
    assert sum(ops[k] for k in INTEGER_KERNELS) == N_LINEARS + N_ATTENTION_MATMULS + N_ATTENTION_MATMULS // 2
    onnx_model = OnnxModule(path)
    logits = [(qmodel(x).detach(), onnx_model(x)) for x, _ in test_loader]
    assert agreement(torch.cat([a for a, _ in logits]), torch.cat([b for _, b in logits]))["top1_agreement"] >= 0.995


def test_weights_are_integer_initializers_fed_straight_to_dequantize(exported):
    bits, _, path = exported
    model = onnx.load(path)
    weight_type = onnx.TensorProto.INT8 if bits == "w8a8" else onnx.TensorProto.INT4
    weights = [i for i in model.graph.initializer if i.name.endswith(("_codes", "_t", "_int4"))]
    assert len(weights) == N_LINEARS + 1 and all(w.data_type == weight_type for w in weights)
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in producers:
            assert producers[node.input[1]].op_type == "DequantizeLinear"  # no float Transpose


def test_batch_axis_is_dynamic(exported):
    _, qmodel, path = exported
    x = torch.randn(5, 3, 32, 32)
    assert OnnxModule(path)(x).shape == (5, 10)


def test_4bit_weights_are_stored_as_4_bits(exports, ref):
    _, _, path = exports("w4a4")
    n_params = sum(p.numel() for p in ref.model.parameters())
    assert os.path.getsize(path) < 0.16 * 4 * n_params


def test_uncalibrated_model_is_refused(ref, tmp_path):
    with pytest.raises(FxQuantError, match="calibrated QuantizedModel"):
        fxquant.export_onnx(ref.model, tmp_path / "m.onnx", torch.randn(1, 3, 32, 32))
    assert not (tmp_path / "m.onnx").exists()


def test_missing_directory_is_refused(exported_w8a8, tmp_path):
    with pytest.raises(FxQuantError, match="does not exist"):
        fxquant.export_onnx(exported_w8a8[1], tmp_path / "no" / "m.onnx", torch.randn(1, 3, 32, 32))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_directory_is_refused(exported_w8a8, tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(FxQuantError, match="not writable"):
            fxquant.export_onnx(exported_w8a8[1], tmp_path / "m.onnx", torch.randn(1, 3, 32, 32))
    finally:
        tmp_path.chmod(0o700)


def test_wrong_example_shape_or_nan_leaves_nothing(exported_w8a8, tmp_path):
    qmodel = exported_w8a8[1]
    with pytest.raises(FxQuantError, match="shape"):
        fxquant.export_onnx(qmodel, tmp_path / "m.onnx", torch.randn(1, 3, 64, 64))
    nan = torch.full((1, 3, 32, 32), float("nan"))
    with pytest.raises(FxQuantError, match="NaN"):
        fxquant.export_onnx(qmodel, tmp_path / "m.onnx", nan)
    assert list(tmp_path.iterdir()) == []


def _corrupt_one_weight_scale(model):
    """An export bug on purpose: one weight's scale doubled in the file only."""
    scale = next(v for v in model.graph.initializers.values() if v.name.endswith("weight_scale"))
    scale.const_value = ir.tensor(scale.const_value.numpy() * 2)
    return model


def test_a_file_that_disagrees_with_pytorch_is_refused(exported_w8a8, tmp_path, monkeypatch):
    optimize = export.optimize_for_onnxruntime
    monkeypatch.setattr(export, "optimize_for_onnxruntime",
                        lambda m: _corrupt_one_weight_scale(optimize(m)))
    x = torch.randn(4, 3, 32, 32)
    with pytest.raises(ExportMismatch, match=r"disagrees with fxquant's PyTorch numerics .* relative "
                                             r"error .* 4 of 4 samples are off \(worst"):
        fxquant.export_onnx(exported_w8a8[1], tmp_path / "m.onnx", x)
    assert list(tmp_path.iterdir()) == []
    fxquant.export_onnx(exported_w8a8[1], tmp_path / "m.onnx", x, verify=False)  # the caller opts out
    assert (tmp_path / "m.onnx").exists()


def test_a_refusal_says_how_many_samples_are_off():
    """A few samples far off and the rest exact (low-bit code flips amplified) reads differently
    from every sample off (a wrong graph)."""
    reference = {"logits": torch.ones(4, 3), "tokens": torch.ones(4, 2, 5)}
    produced = [torch.ones(4, 3), torch.ones(4, 2, 5)]
    produced[0][2] = 3.0
    assert export.sample_errors(reference, produced).tolist() == pytest.approx([0, 0, 2 * 3 ** .5 / 13 ** .5, 0])
    with pytest.raises(ExportMismatch, match=r"1 of 4 samples are off \(worst 0.961\); the other 3 agree to 0.0e\+00") as refused:
        export._check_numerics(lambda x: produced, torch.zeros(4, 1), reference, 0.05)
    assert refused.value.error == pytest.approx(float(torch.tensor(12 / 52).sqrt()))


def test_padding_positions_are_left_out_of_the_comparison():
    """A tie at the padding token's codes moves every padding position of a sample alike; those
    positions are not compared, a real token still is."""
    reference = {"last_hidden_state": torch.ones(2, 4, 3), "pooled": torch.ones(2, 3)}
    keep = torch.tensor([[True, True, False, False], [True, True, True, True]])
    produced = [torch.ones(2, 4, 3), torch.ones(2, 3)]
    produced[0][0, 2:] = 5.0                                  # sample 0's padding
    export._check_numerics(lambda x: produced, torch.zeros(2, 1), reference, 0.05, keep)
    produced[0][1, 3] = 5.0                                   # a real token of sample 1
    with pytest.raises(ExportMismatch, match=r"1 of 2 samples are off"):
        export._check_numerics(lambda x: produced, torch.zeros(2, 1), reference, 0.05, keep)
    with pytest.raises(ExportMismatch, match=r"2 of 2 samples are off"):  # without the mask
        export._check_numerics(lambda x: produced, torch.zeros(2, 1), reference, 0.05)


def test_the_export_agrees_within_its_tolerance_on_other_inputs(exported):
    bits, qmodel, path = exported
    x = torch.randn(8, 3, 32, 32)
    error = export.relative_error(qmodel(x), OnnxModule(path)(x))
    assert error <= qmodel.config.export_tolerance


def test_a_one_image_example_leaves_the_batch_axis_free(exported_w8a8, tmp_path):
    _, qmodel, _ = exported_w8a8
    path = fxquant.export_onnx(qmodel, tmp_path / "one.onnx", torch.randn(1, 3, 32, 32))
    x = torch.randn(3, 3, 32, 32)
    assert OnnxModule(path)(x).shape == (3, 10)


def test_initializers_past_the_protobuf_limit_go_to_a_data_file_that_loads(exported_w8a8, tmp_path,
                                                                            monkeypatch):
    """A model over 2 GiB keeps its initializers in <file>.data (shown with the limit at 0 bytes):
    the self-check passes on it, both files land in place together, and onnxruntime reads them."""
    bits, qmodel, single = exported_w8a8
    monkeypatch.setattr(export, "EXTERNAL_DATA_BYTES", 0)
    x = torch.randn(4, 3, 32, 32)
    path = fxquant.export_onnx(qmodel, tmp_path / "big.onnx", x)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    assert path.stat().st_size < single.stat().st_size / 10   # the weights are in the data file
    assert torch.equal(OnnxModule(path)(x), OnnxModule(single)(x))
