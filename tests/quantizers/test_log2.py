import math

import pytest
import torch
from torch import nn

from fxquant import FxQuantError, RoleSpec, roles
from fxquant.lowering.export import to_onnx_ir
from fxquant.lowering.parity import onnx_output
from fxquant.observers.observer import Observer
from fxquant import quantizers
from fxquant.observers import search
from fxquant.quantizers.log2 import LogQuantizer
from fxquant.quantizers.uniform import UniformQuantizer


def test_worked_example_of_the_spec():
    p = LogQuantizer.make(bits=4, delta=0.8, root=2)
    x = torch.tensor([0.62, 0.21, 0.05, 0.004, 0.0008])
    torch.testing.assert_close(p.fake_quantize(x),
                               torch.tensor([0.8 * 2 ** -0.5, 0.2, 0.05, 0.8 * 2 ** -7.5, 0.0]))
    m = torch.bucketize(x, p.thresholds, right=True)
    assert p.codes[:, m].tolist() == [[0, 32, 8, 0, 0], [128, 0, 0, 1, 0]]   # E and O of the spec
    torch.testing.assert_close(p.scales, torch.tensor([0.8 / 128, 0.8 * math.sqrt(2) / 256]))


@pytest.mark.parametrize("bits", [3, 4, 6, 8])
@pytest.mark.parametrize("root", [1, 2])
def test_codes_follow_the_rounded_log_and_mask_below_the_last_level(bits, root):
    delta = 0.7
    p = LogQuantizer.make(bits, delta, root)
    x = torch.cat([torch.rand(5000).pow(8) * 1.2, torch.tensor([0.0, 5.0, -1.0])])
    q = torch.round(-root * torch.log2(x.double() / delta)).clamp_min(0)
    expected = torch.where(q >= 2 ** bits, 0.0, delta * torch.exp2(-q / root))
    ok = (-root * torch.log2(x.double() / delta) % 1 - 0.5).abs() > 1e-4   # away from ties
    torch.testing.assert_close(p.fake_quantize(x)[ok].double(), expected[ok], rtol=1e-6, atol=1e-30)


def test_bad_settings_are_refused():
    with pytest.raises(FxQuantError, match="bits"):
        LogQuantizer.make(9, 1.0, 2)
    with pytest.raises(FxQuantError, match="Δ"):
        LogQuantizer.make(4, 0.0, 2)


def test_the_search_picks_the_least_mse_delta():
    x = torch.softmax(torch.randn(64, 65) * 3, -1).flatten()
    deltas = [x.max().item(), x.max().item() / 8]
    best = search.least_error((LogQuantizer.make(4, d, 2) for d in deltas), x)
    errors = [(LogQuantizer.make(4, d, 2).fake_quantize(x) - x).pow(2).mean() for d in deltas]
    assert best.delta == deltas[int(torch.stack(errors).argmin())]


class _Log(nn.Module):
    def __init__(self, p: LogQuantizer):
        super().__init__()
        for name, value in p.tensors().items():
            self.register_buffer(name, value)
        self.root = p.root

    def forward(self, x):
        return torch.ops.fxquant.log_quant(x, self.thresholds, self.codes, self.scales, self.root)


@pytest.mark.parametrize("bits,root", [(3, 1), (4, 1), (4, 2), (6, 2), (8, 1)])
def test_onnx_matches_the_reference_bit_for_bit(bits, root):
    p = LogQuantizer.make(bits, 0.83, root)
    module = _Log(p).eval()
    x = torch.cat([torch.rand(4000).pow(6), p.thresholds,
                   torch.nextafter(p.thresholds, torch.tensor(-1.0)),
                   torch.tensor([0.0, 0.83, 1.0, 2.0, -1.0, 1e-40])])
    assert torch.equal(onnx_output(module, x[:8], x), module(x))


@pytest.mark.parametrize("bits,root,dequantize_nodes", [(4, 2, 2), (4, 1, 2), (3, 1, 1), (6, 2, 0)])
def test_up_to_two_branches_lower_to_uint8_dequantize_else_a_level_gather(bits, root, dequantize_nodes):
    model = to_onnx_ir(_Log(LogQuantizer.make(bits, 0.5, root)).eval(), torch.rand(1, 8))
    types = [n.op_type for n in model.graph.all_nodes()]
    assert types.count("DequantizeLinear") == dequantize_nodes


@pytest.mark.parametrize("bits,kind", [(4, LogQuantizer), (8, UniformQuantizer)])
def test_the_recipe_keeps_log_sqrt2_where_its_mse_is_lower(bits, kind):
    observer = Observer(roles.POST_SOFTMAX)
    observer(torch.softmax(torch.randn(8, 3, 65, 65, generator=torch.Generator().manual_seed(0)) * 2, -1))
    spec = RoleSpec(quantizer="logsqrt2_or_uniform", observer="mse", bits="attn")
    assert isinstance(quantizers.get(spec.quantizer).fit(observer, spec, bits), kind)
