"""A new quantizer is one registered class: this file adds one (a power-of-two-scale int8 grid),
names it in a recipe, exports the model and runs it in onnxruntime, touching no package file."""
from dataclasses import dataclass, replace

import pytest
import torch
from onnxscript import ir
from onnxscript import opset21 as op

import fxquant
from fxquant import FxQuantError, RoleSpec, config, roles
from fxquant.lowering.parity import agreement, onnx_output
from fxquant.lowering.runtime import OnnxModule
from fxquant.quantizers import QUANTIZERS, Quantizer, quant_op, register


@quant_op("test_pow2_scale_quant")
def pow2_scale_quant(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """int8 grid whose step is a power of two (QuantizeLinear's rounding and saturation)."""
    return torch.clamp(torch.round(x / scale), -128, 127) * scale


@pow2_scale_quant.onnx
def pow2_scale_quant_onnx(x, scale):
    zero = op.Constant(value=ir.tensor(0, dtype=ir.DataType.INT8))
    return op.DequantizeLinear(op.QuantizeLinear(x, scale, zero), scale, zero)


@register("test_pow2_scale")
@dataclass(frozen=True)
class Pow2ScaleQuantizer(Quantizer):
    scale: torch.Tensor
    op = pow2_scale_quant

    @classmethod
    def fit(cls, observer, spec, bits):
        top = max(observer.max.abs().item(), observer.min.abs().item(), 1e-8)
        return cls(torch.exp2(torch.ceil(torch.log2(torch.tensor(top / 127)))))

    def tensors(self):
        return {"scale": self.scale}


def test_a_registered_quantizer_runs_from_recipe_to_onnxruntime(ref, calib_loader, test_loader,
                                                               tmp_path):
    base = config.RECIPES["minmax"]
    recipe = replace(base, name="minmax-pow2-gelu",
                     roles={**base.roles, roles.POST_GELU: RoleSpec(quantizer="test_pow2_scale")})
    qmodel = fxquant.convert(ref.model, calib_loader, recipe, "w8a8")
    calls = [n for n in qmodel.graph.nodes if n.target is pow2_scale_quant.overload]
    assert len(calls) == 6                      # one post-GELU tensor per block
    scale = qmodel.get_buffer(calls[0].args[1].target)
    assert torch.log2(scale).item().is_integer()
    path = fxquant.export_onnx(qmodel, tmp_path / "ptf.onnx", torch.randn(1, 3, 32, 32))
    x = next(iter(test_loader))[0]
    stats = agreement(qmodel(x).detach(), OnnxModule(path)(x))
    assert stats["top1_agreement"] >= 0.995


class _Pow2(torch.nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.register_buffer("scale", scale)

    def forward(self, x):
        return pow2_scale_quant(x, self.scale)


def test_the_onnx_translation_is_exact_on_ties_and_beyond_the_range():
    scale = torch.tensor(0.25)
    x = torch.cat([(torch.arange(-140, 140) + 0.5) * scale, torch.randn(1000) * 40])
    module = _Pow2(scale)
    assert torch.equal(onnx_output(module, x[:4], x), module(x))


def test_a_name_is_registered_once():
    assert QUANTIZERS["test_pow2_scale"] is Pow2ScaleQuantizer
    with pytest.raises(FxQuantError, match="already registered"):
        register("test_pow2_scale")(Pow2ScaleQuantizer)


def test_an_unknown_quantizer_is_refused_before_any_work(ref):
    base = config.RECIPES["minmax"]
    recipe = replace(base, roles={**base.roles, roles.POST_GELU: RoleSpec(quantizer="nope")})
    with pytest.raises(FxQuantError, match="unknown quantizer 'nope': available are .*uniform"):
        fxquant.convert(ref.model, [], recipe)   # an empty loader would be refused later
