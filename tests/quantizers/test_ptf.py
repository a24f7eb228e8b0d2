import torch
from torch import nn

from fxquant.lowering.parity import onnx_output
from fxquant.quantizers import ptf


def test_worked_example_of_the_spec():
    """Range [-8, 24], 8 bits, K = 3: s = 32/255/8, zp = 64; a narrow channel keeps the fine grid."""
    samples = torch.stack([torch.linspace(-0.3, 0.9, 500), torch.linspace(-8, 24, 500)], 1)
    p = ptf.PTFQuantizer.from_samples(samples, samples.min(), samples.max(), 8)
    assert torch.isclose(p.scale, torch.tensor(32 / 255 / 8)) and p.zero_point.item() == 64
    assert p.shift.tolist() == [0, 3]


def test_each_channel_gets_the_factor_with_least_error():
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(2000, 8, generator=g) * torch.tensor([0.05, 0.2, 0.5, 1, 2, 4, 8, 16])
    p = ptf.PTFQuantizer.from_samples(samples, samples.min(), samples.max(), 8)
    errors = torch.stack([(ptf.fake_quantize(samples, p.scale * 2 ** a, p.zero_point, 0, 255)
                           - samples).pow(2).sum(0) for a in range(ptf.K + 1)])
    assert torch.equal(errors.argmin(0).int(), p.shift)
    assert p.shift[-1] == ptf.K and p.shift[0] < ptf.K          # widest channel: layer grid


class _PTF(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.p = p
        for k, v in p.tensors().items():
            self.register_buffer(k, v)

    def forward(self, x):
        return self.p.op(x, self.scale, self.zero_point, self.shift, *self.p.constants())


def test_onnx_parity_bit_exact_on_ties_and_clipped_values():
    g = torch.Generator().manual_seed(1)
    samples = torch.randn(500, 6, generator=g) * torch.tensor([0.1, 0.3, 1, 3, 10, 30])
    p = ptf.PTFQuantizer.from_samples(samples, samples.min(), samples.max(), 8)
    scales = ptf.channel_scales(p.scale, p.shift)
    ties = (torch.arange(-70, 200).float()[:, None] + 0.5) * scales      # .5 ties, beyond the range
    x = torch.cat([ties, torch.randn(2000, 6, generator=g) * 40])
    module = _PTF(p)
    assert torch.equal(onnx_output(module, x[:4], x), module(x))
