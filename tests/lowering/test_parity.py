"""Each quantizer op: onnxruntime output equals the PyTorch reference kernel, bit for bit."""
import pytest
import torch
from torch import nn

from fxquant.lowering.parity import onnx_output, tie_and_edge_values
from fxquant.quantizers.uniform import UniformQuantizer, qrange


class _FakeQuant(nn.Module):
    def __init__(self, params):
        super().__init__()
        self.register_buffer("scale", params.scale)
        self.register_buffer("zero_point", params.zero_point)
        self.qmin, self.qmax, self.axis = params.qmin, params.qmax, params.axis

    def forward(self, x):
        return torch.ops.fxquant.fake_quant(x, self.scale, self.zero_point, self.qmin, self.qmax,
                                            self.axis)


class _Dequantize(nn.Module):
    def __init__(self, codes, scale, zero_point):
        super().__init__()
        self.register_buffer("codes", codes)
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", zero_point)

    def forward(self, x):
        # Element-wise: a float MatMul would let onnxruntime quantize x dynamically.
        return x * torch.ops.fxquant.dequantize(self.codes, self.scale, self.zero_point, 0)


@pytest.mark.parametrize("bits", [8, 6, 4, 3, 2])
@pytest.mark.parametrize("symmetric", [False, True])
def test_uniform_per_tensor_parity_on_ties_edges_and_random_values(bits, symmetric):
    g = torch.Generator().manual_seed(bits)
    calib = torch.randn(1000, generator=g) * 3 + 0.7
    p = UniformQuantizer.from_range(calib.min(), calib.max(), bits, symmetric)
    adversarial = torch.from_numpy(tie_and_edge_values(p.scale.item(), p.zero_point.item(),
                                                       p.qmin, p.qmax))
    x = torch.cat([adversarial, torch.randn(4000, generator=g) * 5])
    module = _FakeQuant(p)
    assert torch.equal(onnx_output(module, x[:8], x), module(x))


@pytest.mark.parametrize("bits", [8, 4])
def test_uniform_per_channel_parity(bits):
    g = torch.Generator().manual_seed(0)
    calib = torch.randn(64, 6, generator=g) * torch.linspace(0.1, 10, 6)
    p = UniformQuantizer.from_range(calib.amin(0), calib.amax(0), bits, symmetric=False, axis=-1)
    x = torch.randn(3, 50, 6, generator=g) * 12
    module = _FakeQuant(p)
    assert torch.equal(onnx_output(module, x[:1], x), module(x))


@pytest.mark.parametrize("bits", [8, 4])
def test_integer_weight_parity(bits):
    lo, hi = qrange(bits, signed=True)
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(lo, hi + 1, (16, 32), generator=g, dtype=torch.int8)
    scale = torch.rand(16, generator=g) / 10
    module = _Dequantize(codes, scale, torch.zeros(16, dtype=torch.int32))
    x = torch.randn(5, 1, 32, generator=g)
    assert torch.equal(onnx_output(module, x[:1], x), module(x))
