import torch
import torch.nn.functional as F
from torch import nn

from fxquant.lowering.parity import onnx_output
from fxquant.quantizers import ptf
from fxquant.quantizers.int_layernorm import int_layer_norm
from fxquant.quantizers.uniform import UniformQuantizer


def _setup(seed=0, c=32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 20, c, generator=g) * torch.linspace(0.1, 6, c) + torch.linspace(-2, 3, c)
    p = ptf.PTFQuantizer.from_samples(x.reshape(-1, c), x.min(), x.max(), 8)
    xq = p.fake_quantize(x)
    weight, bias = torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g) * 0.2
    ref = F.layer_norm(xq, (c,), weight, bias, eps=0)
    out = UniformQuantizer.from_range(ref.min(), ref.max(), 8, symmetric=False)
    return p, xq, weight, bias, out, ref


def _int_ln(p, xq, weight, bias, out):
    return int_layer_norm(xq, p.scale, p.zero_point, p.shift, weight, bias, out.scale,
                          out.zero_point, out.qmin, out.qmax)


def test_integer_layernorm_is_within_a_few_output_steps_of_the_float_one():
    p, xq, weight, bias, out, ref = _setup()
    y = _int_ln(p, xq, weight, bias, out)
    steps = ((y - out.fake_quantize(ref)) / out.scale).round().abs()
    assert steps.max() <= 3 and steps.float().mean() < 0.5
    assert torch.equal(out.fake_quantize(y), y)                     # output codes on the grid


def test_a_token_with_equal_channels_gives_beta_not_nan():
    p, xq, weight, bias, out, _ = _setup()
    xq[0, 0] = xq[0, 0, 0]
    y = _int_ln(p, xq, weight, bias, out)
    assert torch.isfinite(y).all()
    assert torch.equal(y[0, 0], out.fake_quantize(bias))


class _IntLN(nn.Module):
    def __init__(self, p, weight, bias, out):
        super().__init__()
        self.qmin, self.qmax = out.qmin, out.qmax
        for k, v in dict(s=p.scale, z=p.zero_point, a=p.shift, w=weight, b=bias, so=out.scale,
                         zo=out.zero_point).items():
            self.register_buffer(k, v)

    def forward(self, x):
        return int_layer_norm(x, self.s, self.z, self.a, self.w, self.b, self.so, self.zo,
                              self.qmin, self.qmax)


def test_onnx_parity_bit_exact():
    p, xq, weight, bias, out, _ = _setup(seed=1)
    xq[1, 3] = xq[1, 3, 5]                                            # a V = 0 token too
    module = _IntLN(p, weight, bias, out)
    assert torch.equal(onnx_output(module, xq[:1], xq), module(xq))
