import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fxquant import FxQuantError
from fxquant.quantizers.uniform import (UniformQuantizer, qrange,
                                        quantize_codes)


@pytest.mark.parametrize("bits,signed,narrow,expected", [
    (8, False, False, (0, 255)), (8, True, False, (-128, 127)), (8, True, True, (-127, 127)),
    (4, True, False, (-8, 7)), (2, False, False, (0, 3)),
])
def test_qrange(bits, signed, narrow, expected):
    assert qrange(bits, signed, narrow) == expected


@pytest.mark.parametrize("bits", [1, 9, 16])
def test_unsupported_bits_are_refused(bits):
    with pytest.raises(FxQuantError, match="2 to 8"):
        qrange(bits, signed=False)


@settings(max_examples=50, deadline=None)
@given(bits=st.integers(2, 8), symmetric=st.booleans(), per_channel=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_fake_quant_lands_on_the_grid_and_matches_dequantized_codes(bits, symmetric, per_channel, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 6, generator=g) * torch.rand(6, generator=g) * 5
    lo, hi = (x.amin(0), x.amax(0)) if per_channel else (x.min(), x.max())
    p = UniformQuantizer.from_range(lo, hi, bits, symmetric, axis=1)
    y = torch.ops.fxquant.fake_quant(x, p.scale, p.zero_point, p.qmin, p.qmax, p.axis)
    codes = quantize_codes(x, p.scale, p.zero_point, p.qmin, p.qmax, p.axis)
    assert codes.min() >= p.qmin and codes.max() <= p.qmax
    torch.testing.assert_close(y, torch.ops.fxquant.dequantize(codes, p.scale, p.zero_point, 1))
    step = p.scale if p.scale.numel() == 1 else p.scale.view(1, -1)
    assert ((x - y).abs() <= step / 2 + 1e-6).all()  # min-max range: no clipping, half-step error


def test_ties_round_half_to_even_and_values_clip_at_the_edges():
    p = UniformQuantizer(torch.tensor(1.0), torch.tensor(0, dtype=torch.int32), 0, 15)
    x = torch.tensor([0.5, 1.5, 2.5, -3.0, 20.0])
    assert p.fake_quantize(x).tolist() == [0.0, 2.0, 2.0, 0.0, 15.0]
