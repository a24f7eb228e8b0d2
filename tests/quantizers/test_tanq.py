import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

import fxquant
from fxquant import FxQuantError, RoleSpec, config, roles
from fxquant.lowering.parity import onnx_output
from fxquant.observers import search
from fxquant.quantizers.tanq import TanQuantizer, level_table


def test_worked_example_of_the_spec():
    p = TanQuantizer.make(bits=4, delta=1.0, theta=0.9 * math.pi)
    assert p.codebook.tolist() == [0, 549, 1289, 2341, 3943, 6640, 11884, 23533, 42002, 53651,
                                   58895, 61592, 63194, 64246, 64986, 65535]
    y = p.fake_quantize(torch.tensor([0.62, 0.21, 0.05, 0.004, 0.97]))
    torch.testing.assert_close(y, p.codebook[[8, 6, 4, 1, 12]] / 65535.0)


@pytest.mark.parametrize("bits", [3, 4, 6, 8])
@pytest.mark.parametrize("theta,c", [(0.5 * math.pi, 0.5), (0.95 * math.pi, 0.5), (0.6 * math.pi, 0.8)])
def test_codes_round_in_companded_space_and_saturate(bits, theta, c):
    delta = 0.7
    p = TanQuantizer.make(bits, delta, theta, c)
    x = torch.cat([torch.rand(2000) * delta, torch.tensor([-0.1, 0.0, delta, 1.0])])
    n = 2 ** bits - 1
    u0, u1 = math.tan(-theta * c), math.tan(theta * (1 - c))
    u = torch.tan(theta * (x.double().clamp(0, delta) / delta - c))
    q = torch.round((u - u0) / (u1 - u0) * n).clamp(0, n).long()
    levels = p.codebook.double() * delta / 65535
    near_boundary = (u - u0) / (u1 - u0) * n % 1
    ok = (near_boundary - 0.5).abs() > 1e-4          # float32 thresholds vs float64 rounding
    torch.testing.assert_close(p.fake_quantize(x)[ok].double(), levels[q][ok], rtol=0, atol=1e-6)
    assert p.fake_quantize(torch.tensor([5.0])).item() == pytest.approx(delta)


def test_levels_are_dense_at_both_ends():
    levels, _ = level_table(4, 0.9 * math.pi)
    gaps = levels.diff()
    assert gaps[0] < gaps[7] / 10 and gaps[-1] < gaps[7] / 10


@pytest.mark.parametrize("bits,theta,c", [(2, 1.0, 0.5), (9, 1.0, 0.5), (4, 0.9 * math.pi, 0.8)])
def test_bad_settings_are_refused(bits, theta, c):
    with pytest.raises(FxQuantError, match="TanQ"):
        TanQuantizer.make(bits, 1.0, theta, c)


def test_the_search_beats_a_fixed_choice():
    x = torch.softmax(torch.randn(64, 65) * 3, -1).flatten()
    best = search.least_error(TanQuantizer.candidates(4, [x.max().item()]), x)
    fixed = TanQuantizer.make(4, x.max().item(), 0.5 * math.pi)
    assert (best.fake_quantize(x) - x).pow(2).mean() <= (fixed.fake_quantize(x) - x).pow(2).mean()


class _Tan(nn.Module):
    def __init__(self, p: TanQuantizer):
        super().__init__()
        for name, value in p.tensors().items():
            self.register_buffer(name, value)

    def forward(self, x):
        return torch.ops.fxquant.tan_quant(x, self.thresholds, self.codebook, self.fine_scale)


@pytest.mark.parametrize("bits", [3, 6])
def test_onnx_matches_the_reference_bit_for_bit(bits):
    p = TanQuantizer.make(bits, 0.83, 0.7 * math.pi, 0.7)
    module = _Tan(p).eval()
    x = torch.cat([torch.rand(4000).pow(4), p.thresholds,
                   torch.nextafter(p.thresholds, torch.tensor(-1.0)), torch.tensor([0.0, 2.0, -1.0])])
    np.testing.assert_array_equal(onnx_output(module, x[None], x[None]).numpy(),
                                  module(x[None]).numpy())


def test_tan_recipe_quantizes_attention_through_convert():
    cfg = replace(config.RECIPES["minmax"], name="tan-test")
    cfg = replace(cfg, roles={**cfg.roles, roles.POST_SOFTMAX: RoleSpec(quantizer="tan", bits="attn")})

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.v = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x):
            return (self.q(x) @ x.transpose(-2, -1)).softmax(-1) @ self.v(x)

    qmodel = fxquant.convert(Attn(), [torch.randn(4, 10, 8)], replace(cfg, a_bits=4))
    ops = [n.target for n in qmodel.graph.nodes if n.op == "call_function"]
    assert ops.count(torch.ops.fxquant.tan_quant.default) == 1
