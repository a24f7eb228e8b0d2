import pytest
import torch
from torch import nn

from fxquant.lowering.parity import onnx_output
from fxquant.quantizers import int_softmax as isx
from fxquant.quantizers.uniform import UniformQuantizer

S = torch.tensor(0.1)


def test_worked_example_of_the_spec():
    """Logits [2, 1, 0, -3] on the grid 0.1, shifted onto 0.1 / 64 (ln2 spans 444 codes): i-exp
    gives e^-1, e^-2, e^-5 within 0.7 %; LIS codes [1, 2, 3, 8]."""
    x = torch.tensor([[2.0, 1.0, 0.0, -3.0]])
    c = isx.ExpConstants.make(0.1)
    assert c.constants() == (-444, 1732, 1143650, 24, 64)
    e, total = isx.exp_int(x, S, *c.constants())
    assert e.tolist() == [[1143650 << 24, 842594 << 23, 618370 << 22, 992770 << 17]]
    p = isx.LISQuantizer.for_bits(4)
    a = isx.lis_attention(x, torch.eye(4), S, torch.tensor(0), p.codes, p.scales, 0, *c.constants())
    assert a.tolist() == [[0.5, 0.25, 0.125, 2 ** -8]]


def test_linear_midpoint_rounding_and_masking():
    ratios = torch.tensor([1, 2, 3, 5, 6, 11, 12, 49151, 49152])
    index = isx.lis_index(torch.ones_like(ratios), ratios, 16)  # Σe/e = ratio exactly
    assert (16 - index).tolist() == [0, 1, 2, 2, 3, 3, 4, 15, 16]  # 16: masked to 0


def _logits(seed=0, std=3.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 17, 17, generator=g) * std
    p = UniformQuantizer.from_range(x.min(), x.max(), 8, symmetric=False)
    return p, p.fake_quantize(x)


def test_integer_softmax_is_close_to_softmax_on_a_fine_grid():
    """x0 = floor(-ln2 / s) makes i-exp's base 2^(1 / (x0 s)): exact as s -> 0, so the codes are
    shifted onto a grid where ln2 spans at least 256 of them (a coarser one sharpens the softmax)."""
    for std, tolerance in ((0.5, 2e-3), (3.0, 2e-3)):
        p, x = _logits(std=std)
        c = isx.ExpConstants.make(p.scale.item())
        y = isx.int_softmax(x, p.scale, p.zero_point, p.qmin, *c.constants())
        assert (y - torch.softmax(x, -1)).abs().max() < tolerance


class _Op(nn.Module):
    def __init__(self, fn, *tensors, constants):
        super().__init__()
        self.fn, self.constants = fn, constants
        for i, t in enumerate(tensors):
            self.register_buffer(f"t{i}", t)

    def forward(self, x, *rest):
        return self.fn(x, *rest, *(getattr(self, f"t{i}") for i in range(len(self._buffers))),
                       *self.constants)


def test_a_coarse_4_bit_grid_is_shifted_onto_a_finer_one_and_stays_bit_exact_in_onnx():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 9, 9, generator=g) * 8
    p = UniformQuantizer.from_range(x.min(), x.max(), 4, symmetric=False)  # scale > ln 2
    x = p.fake_quantize(x)
    c = isx.ExpConstants.make(p.scale.item())
    assert c.up > 1 and c.x0 <= -isx.LN2_CODES
    y = isx.int_softmax(x, p.scale, p.zero_point, p.qmin, *c.constants())
    assert (y - torch.softmax(x, -1)).abs().max() < 2e-3
    module = _Op(isx.int_softmax, p.scale, p.zero_point, constants=(p.qmin, *c.constants()))
    assert torch.equal(onnx_output(module, x[:1], x), module(x))


def test_onnx_parity_of_int_softmax_bit_exact():
    p, x = _logits(1)
    c = isx.ExpConstants.make(p.scale.item()).constants()
    module = _Op(isx.int_softmax, p.scale, p.zero_point, constants=(p.qmin, *c))
    assert torch.equal(onnx_output(module, x[:1], x), module(x))


class _LIS(nn.Module):
    def __init__(self, p, levels, c):
        super().__init__()
        self.constants = (p.qmin, *c)
        for k, v in dict(s=p.scale, z=p.zero_point, codes=levels.codes, scales=levels.scales).items():
            self.register_buffer(k, v)

    def forward(self, x):
        eye = torch.eye(x.shape[-1], dtype=x.dtype)  # A·I = A: the codes must match exactly
        return isx.lis_attention(x, eye, self.s, self.z, self.codes, self.scales, *self.constants)


def test_onnx_parity_of_log_int_softmax_codes_bit_exact():
    p, x = _logits(2)
    c = isx.ExpConstants.make(p.scale.item()).constants()
    module = _LIS(p, isx.LISQuantizer.for_bits(4), c)
    assert torch.equal(onnx_output(module, x[:1], x), module(x))


def _padding_masks(x):
    keep = torch.ones(x.shape[0], 1, 1, x.shape[-1], dtype=torch.bool)
    keep[0, ..., 11:] = False
    return keep, torch.where(keep, 0.0, torch.finfo(torch.float32).min)


def test_padded_positions_weigh_nothing_and_the_rest_is_the_unpadded_softmax():
    p, x = _logits(3)
    c = isx.ExpConstants.make(p.scale.item()).constants()
    keep, additive = _padding_masks(x)
    for mask in (keep, additive):
        y = isx.int_softmax(x, p.scale, p.zero_point, p.qmin, *c, mask)
        assert y[0, ..., 11:].max() <= 2.0 ** -c[3]                 # 2^-n of the largest
        torch.testing.assert_close(y[0, ..., :11], isx.int_softmax(x[0, ..., :11], p.scale, p.zero_point,
                                                                   p.qmin, *c), rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(y[1:], isx.int_softmax(x[1:], p.scale, p.zero_point, p.qmin, *c))
    lis = isx.LISQuantizer.for_bits(4)
    a = isx.lis_attention(x, torch.eye(17), p.scale, p.zero_point, lis.codes, lis.scales, p.qmin, *c,
                          additive)
    assert (a[0, ..., 11:] == 0).all()


class _MaskedSoftmax(nn.Module):
    def __init__(self, p, c, mask):
        super().__init__()
        self.constants = (p.qmin, *c)
        for k, v in dict(s=p.scale, z=p.zero_point, mask=mask).items():
            self.register_buffer(k, v)

    def forward(self, x):
        return isx.int_softmax(x, self.s, self.z, *self.constants, self.mask)


@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_onnx_parity_of_masked_int_softmax_bit_exact(kind):
    p, x = _logits(4)
    keep, additive = _padding_masks(x)
    mask = (keep if kind == "bool" else additive)[:1]  # a buffer: the same mask for every item
    module = _MaskedSoftmax(p, isx.ExpConstants.make(p.scale.item()).constants(), mask)
    assert torch.equal(onnx_output(module, x[:1], x), module(x))
