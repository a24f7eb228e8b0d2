import copy
from dataclasses import replace

import pytest
import timm
import torch
from torch import nn

import fxquant
from fxquant import FxQuantError, config, zoo
from fxquant.evaluate import top1


def test_w8a8_minmax_keeps_the_reference_accuracy(ref, calib_loader, test_loader):
    qmodel = fxquant.convert(ref.model, calib_loader, "minmax", "w8a8")
    fp32, quant = top1(ref.model, test_loader), top1(qmodel, test_loader)
    assert abs(fp32 - quant) <= 0.02
    assert isinstance(qmodel, fxquant.QuantizedModel) and qmodel.config.bits_label == "w8a8"


def test_weights_are_stored_as_integer_codes(ref, calib_loader):
    qmodel = fxquant.convert(ref.model, calib_loader, "minmax", "w4a4")
    codes = {k: v for k, v in qmodel.named_buffers() if k.endswith("_weight_codes")}
    assert len(codes) == 26  # patch embedding, 4 Linears x 6 blocks, head
    for value in codes.values():
        assert value.dtype == torch.int8 and value.min() >= -8 and value.max() <= 7
    assert not any(isinstance(m, nn.Linear) for m in qmodel.modules())


def test_convert_is_deterministic(ref, calib_loader):
    x = torch.randn(2, 3, 32, 32)
    a = fxquant.convert(ref.model, calib_loader, "minmax", "w4a4")(x)
    b = fxquant.convert(ref.model, calib_loader, "minmax", "w4a4")(x)
    assert torch.equal(a, b)


def test_empty_calibration_loader_is_refused(ref):
    with pytest.raises(FxQuantError, match="empty"):
        fxquant.convert(ref.model, [], "minmax")


def test_nan_calibration_data_is_refused(ref):
    x = torch.randn(2, 3, 32, 32)
    x[1, 0, 0, 0] = float("nan")
    with pytest.raises(FxQuantError, match="NaN"):
        fxquant.convert(ref.model, [x], "minmax")


@pytest.mark.parametrize("bits", ["w9a8", "w8a1", "8bit"])
def test_unsupported_bits_are_refused(ref, bits):
    with pytest.raises(FxQuantError, match="bit"):
        fxquant.convert(ref.model, [torch.randn(1, 3, 32, 32)], "minmax", bits)


def test_unknown_recipe_is_refused(ref):
    with pytest.raises(FxQuantError, match="unknown recipe 'nope'"):
        fxquant.convert(ref.model, [torch.randn(1, 3, 32, 32)], "nope")


def test_unknown_passes_are_refused_before_any_work(ref):
    with pytest.raises(FxQuantError, match=r"unknown refinement 'nope': available are \['cpt-v', 'gptq', 'recon'\]"):
        fxquant.convert(ref.model, [], "minmax+nope")  # an empty loader would be refused later
    cfg = replace(config.resolve("minmax"), passes=("nope",))
    with pytest.raises(FxQuantError, match="unknown pass 'nope'"):
        fxquant.convert(ref.model, [], cfg)


def test_model_without_linear_is_refused():
    with pytest.raises(FxQuantError, match="no Linear"):
        fxquant.convert(nn.Sequential(nn.ReLU()), [torch.randn(1, 4)], "minmax")


def test_wrong_input_shape_is_named(ref):
    with pytest.raises(FxQuantError, match=r"shape.*\(1, 3, 64, 64\)"):
        fxquant.convert(ref.model, [torch.randn(1, 3, 64, 64)], "minmax")


def test_unreadable_checkpoint_is_refused(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(FxQuantError, match="cannot read checkpoint"):
        zoo.load_model(str(path))
    with pytest.raises(FxQuantError, match="does not exist"):
        zoo.load_model(str(tmp_path / "missing.pth"))


def test_timm_name_without_weights_says_how_to_pass_a_checkpoint():
    with pytest.raises(FxQuantError, match="cannot be downloaded.*--random-weights"):
        zoo.load_model("deit_tiny_patch16_224")


def test_calibration_accepts_tensors_tuples_and_dicts():
    model = nn.Sequential(nn.Linear(4, 4))
    x = torch.randn(8, 4)
    outs = [fxquant.convert(model, loader, "minmax")(x)
            for loader in ([x], [(x, torch.zeros(8))], [{"input": x}])]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


@pytest.mark.parametrize("lo,hi", [(100.0, 101.0), (0.05, 0.06), (-3.0, -1.0)])
def test_inputs_away_from_zero_keep_w8a8_within_two_percent(lo, hi):
    """Calibrated ranges that exclude 0 are widened to contain it, never clipped."""
    model = nn.Sequential(nn.Linear(16, 8))
    x = torch.rand(64, 16) * (hi - lo) + lo
    qmodel = fxquant.convert(model, [x], "minmax", bits="w8a8")
    with torch.no_grad():
        expected = model(x)
    assert (qmodel(x) - expected).abs().max() <= 0.02 * expected.abs().max()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_a_non_float32_model_is_quantized_as_a_float32_copy(dtype):
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                              depth=2, num_classes=10).eval().to(dtype)
    reference = copy.deepcopy(model).float()
    g = torch.Generator().manual_seed(0)
    calib = torch.randn(16, 3, 32, 32, generator=g).to(dtype)
    qmodel = fxquant.convert(model, [(calib, torch.zeros(16))], "minmax", bits="w8a8")
    assert {p.dtype for p in model.parameters()} == {dtype}        # the user's model is untouched
    as_float32 = fxquant.convert(reference, [(calib.float(), torch.zeros(16))], "minmax", "w8a8")
    x = torch.randn(8, 3, 32, 32, generator=g)
    with torch.no_grad():
        expected, out = reference(x), qmodel(x)                    # float32 in, float32 out
        assert torch.equal(out, as_float32(x))
    assert (out - expected).norm() / expected.norm() < 0.1
