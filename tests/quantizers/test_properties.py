"""Properties every quantizer's reference numerics keep, for any range, bit-width and input.

Hypothesis draws the ranges, parameters and inputs (a capped number of examples, so the file runs
in well under a minute):
- uniform-step grids (uniform per tensor and per channel, PTF, O-2SF, two-scale): a value inside
  the calibrated range comes back within half a step;
- log2 / log√2 and TanQ: within half a step of their own companding (log2 x, tan x);
- codes stay in range, quantizing twice changes nothing, order is kept;
- integer softmax and LayerNorm: within a stated bound of the float function;
- the ONNX translation computes what the reference computes.
A failing example is a bug in the numerics (fix them in fxquant/quantizers/), not in the property.
"""
import math

import torch
import torch.nn.functional as F
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from torch import nn

from fxquant.lowering.parity import onnx_output
from fxquant.observers import search
from fxquant.quantizers import int_softmax as isx
from fxquant.quantizers import log2, ptf, tanq, two_scale
from fxquant.quantizers.int_layernorm import int_layer_norm
from fxquant.quantizers.uniform import UniformQuantizer, quantize_codes

FAST = settings(max_examples=25, deadline=None)
SLOW = settings(max_examples=4, deadline=None,  # one ONNX export per example, no shrinking
               phases=[Phase.explicit, Phase.reuse, Phase.generate])
seeds = st.integers(0, 2 ** 16)
C = 6


@st.composite
def ranges(draw, channels: int = C):
    """[lo, hi] per channel anywhere in ±1000 (often far from 0), spans 2^-10 … 1000."""
    floats = st.floats(-1000, 1000, width=32)
    lo = torch.tensor(draw(st.lists(floats, min_size=channels, max_size=channels)))
    span = draw(st.lists(st.floats(2 ** -10, 1000, width=32), min_size=channels, max_size=channels))
    return lo, lo + torch.tensor(span)


def inside(lo, hi, seed: int, n: int = 256) -> torch.Tensor:
    """(n + 2, C) values in [lo, hi] (broadcast to C channels), both ends included."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = torch.broadcast_tensors(torch.as_tensor(lo), torch.as_tensor(hi), torch.zeros(C))[:2]
    x = torch.minimum(torch.maximum(lo + torch.rand(n, C, generator=g) * (hi - lo), lo), hi)
    return torch.cat([lo[None], hi[None], x])


def around(x: torch.Tensor) -> torch.Tensor:
    """x with values far outside its range on both sides, zeros and infinities."""
    edges = torch.tensor([0.0, -0.0, 1e30, -1e30, math.inf, -math.inf])[:, None].expand(-1, C)
    return torch.cat([x, 3 * x, -3 * x, 100 * x, edges])


def assert_within(y, x, bound):
    """|y − x| ≤ bound, up to float32 rounding of x's magnitude."""
    assert ((y - x).abs() <= bound * (1 + 1e-5) + 1e-6 * x.abs()).all()


def assert_idempotent_and_monotone(fq, x):
    """fq(fq(x)) = fq(x), and fq keeps the order of every column."""
    y = fq(x)
    assert torch.equal(fq(y), y)
    ordered = fq(x.sort(0).values)
    assert (ordered[1:] >= ordered[:-1]).all()


@FAST
@given(r=ranges(), bits=st.integers(2, 8), symmetric=st.booleans(), per_channel=st.booleans(),
       seed=seeds)
def test_uniform_grid_covers_its_range(r, bits, symmetric, per_channel, seed):
    lo, hi = r if per_channel else (r[0].min(), r[1].max())
    p = UniformQuantizer.from_range(lo, hi, bits, symmetric, axis=1)
    x = inside(lo, hi, seed)
    codes = quantize_codes(around(x), p.scale, p.zero_point, p.qmin, p.qmax, p.axis)
    assert codes.min() >= p.qmin and codes.max() <= p.qmax
    assert torch.equal(p.fake_quantize(x), torch.ops.fxquant.dequantize(
        quantize_codes(x, p.scale, p.zero_point, p.qmin, p.qmax, 1), p.scale, p.zero_point, 1))
    assert_within(p.fake_quantize(x), x, p.scale / 2)
    assert_idempotent_and_monotone(p.fake_quantize, around(x))


@FAST
@given(r=ranges(), bits=st.integers(2, 8), symmetric=st.booleans(), seed=seeds)
def test_percentile_search_keeps_a_grid_no_worse_than_any_candidate(r, bits, symmetric, seed):
    samples = inside(*r, seed)
    best = UniformQuantizer.from_samples("mse", samples, samples.amin(0), samples.amax(0), bits,
                                         symmetric)
    assert ((best.zero_point >= best.qmin) & (best.zero_point <= best.qmax)).all()
    def mse(p):
        return (p.fake_quantize(samples) - samples).pow(2).mean(0)
    for q in search.PERCENTILES:
        candidate = UniformQuantizer.from_range(*search.percentile_ranges(samples, (q,))[0], bits,
                                                symmetric)
        assert (mse(best) <= mse(candidate) * (1 + 1e-6)).all()


@FAST
@given(r=ranges(), bits=st.integers(2, 8), seed=seeds)
def test_ptf_layer_grid_covers_the_range_and_each_channel_grid_its_values(r, bits, seed):
    samples = inside(*r, seed)
    p = ptf.PTFQuantizer.from_samples(samples, samples.min(), samples.max(), bits)
    steps = ptf.channel_scales(p.scale, p.shift)
    codes = quantize_codes(around(samples), steps, p.zero_point, p.qmin, p.qmax, -1)
    assert codes.min() >= p.qmin and codes.max() <= p.qmax and p.shift.max() <= ptf.K
    widest = p.scale * 2 ** ptf.K
    assert_within(ptf.fake_quantize(samples, widest, p.zero_point, p.qmin, p.qmax), samples,
                  widest / 2)
    x = inside((p.qmin - p.zero_point) * steps, (p.qmax - p.zero_point) * steps, seed)
    assert_within(p.fake_quantize(x), x, steps / 2)
    assert_idempotent_and_monotone(p.fake_quantize, around(samples))


@FAST
@given(r=ranges(channels=C), outliers=st.lists(st.floats(4.5, 100), min_size=C, max_size=C),
       mask=st.lists(st.booleans(), min_size=C, max_size=C), bits=st.integers(2, 8), seed=seeds)
def test_o2sf_covers_every_channel(r, outliers, mask, bits, seed):
    lo, hi = r
    hi = lo + (hi - lo).clamp(0.5, 2) * torch.where(torch.tensor(mask), torch.tensor(outliers), 1.0)
    p = two_scale.OutlierTwoScaleQuantizer.from_ranges(lo, hi, bits)
    steps = ptf.channel_scales(p.scale, p.shift)
    x = inside(lo, hi, seed)
    codes = quantize_codes(around(x), steps, p.zero_point, p.qmin, p.qmax, -1)
    assert codes.min() >= p.qmin and codes.max() <= p.qmax
    assert_within(p.fake_quantize(x), x, steps / 2)
    assert_idempotent_and_monotone(p.fake_quantize, around(x))


@st.composite
def two_scale_settings(draw):
    """(bits, shift, signed) of a valid V-2SF grid."""
    bits, signed = draw(st.integers(two_scale.MIN_BITS, two_scale.MAX_BITS)), draw(st.booleans())
    return bits, draw(st.sampled_from(two_scale.shift_range(bits, signed))), signed


@FAST
@given(settings_=two_scale_settings(), coarse=st.floats(1e-4, 10), seed=seeds)
def test_two_scale_is_within_half_the_step_of_its_region(settings_, coarse, seed):
    bits, shift, signed = settings_
    p = two_scale.TwoScaleQuantizer.make(bits, coarse, shift, signed)
    fine, coarse = p.fine_scale, p.fine_scale * 2 ** p.shift
    x = inside(p.lo_small * fine, p.hi_large * coarse, seed, n=1000)
    codes = p.fake_quantize(around(x)) / fine
    assert ((codes - codes.round()).abs() <= 1e-3).all()                # on the fine grid
    assert p.lo_small <= codes.round().min() and codes.round().max() <= p.hi_large * 2 ** p.shift
    small = torch.round(x / fine) <= p.hi_small
    assert_within(p.fake_quantize(x), x, torch.where(small, fine, coarse) / 2)
    assert_idempotent_and_monotone(p.fake_quantize, around(x))


@FAST
@given(bits=st.integers(log2.MIN_BITS, log2.MAX_BITS), root=st.sampled_from([1, 2]),
       delta=st.floats(1e-3, 100), seed=seeds)
def test_log_quantizers_are_within_half_a_step_of_log2(bits, root, delta, seed):
    p = log2.LogQuantizer.make(bits, delta, root)
    g = torch.Generator().manual_seed(seed)
    depth = (2 ** bits + 2) / root                                # octaves below Δ, and beyond
    x = (delta * torch.exp2(-torch.rand(1000, C, generator=g) * depth)).float()
    y = p.fake_quantize(x)
    table = log2.levels(p.codes, p.scales)
    assert torch.isin(p.fake_quantize(around(x)), table).all()
    assert (y[x < p.thresholds[0]] == 0).all()
    kept = (x >= p.thresholds[0]) & (x <= delta)
    assert (root * torch.log2(y[kept].double() / x[kept].double())).abs().max() <= 0.5 + 1e-5
    assert (y[x > delta] == table.max()).all() and table.max() == torch.tensor(delta).float()
    assert_idempotent_and_monotone(p.fake_quantize, around(x))


@st.composite
def tan_params(draw):
    """(TanQ params, bits) with a valid (θ, c) of the search grid."""
    theta, c = draw(st.sampled_from([(t, c) for t in tanq.THETAS for c in tanq.CROSSOVERS
                                     if t * max(c, 1 - c) < math.pi / 2]))
    bits = draw(st.integers(tanq.MIN_BITS, tanq.MAX_BITS))
    return tanq.TanQuantizer.make(bits, draw(st.floats(1e-3, 100)), theta, c), bits


@FAST
@given(tq=tan_params(), seed=seeds)
def test_tanq_is_within_half_a_step_of_its_tangent(tq, seed):
    p, bits = tq
    n = 2 ** bits - 1
    table = p.fake_quantize(torch.cat([torch.zeros(1), p.thresholds]))   # the level of each code
    assert (table[1:] > table[:-1]).all() and table.numel() == n + 1
    x = inside(0.0, p.delta, seed, n=1000)
    y = p.fake_quantize(x)
    assert torch.isin(p.fake_quantize(around(x)), table).all()
    q = torch.searchsorted(table, y)
    u0, u1 = math.tan(-p.theta * p.crossover), math.tan(p.theta * (1 - p.crossover))
    t = n * (torch.tan(p.theta * (x.double() / p.delta - p.crossover)) - u0) / (u1 - u0)
    assert (q - t).abs().max() <= 0.5 + 1e-3
    levels, _ = tanq.level_table(bits, p.theta, p.crossover)
    assert_within(y.double(), p.delta * levels[q], p.delta / tanq.FINE_STEPS / 2 + 1e-6 * p.delta)
    assert_idempotent_and_monotone(p.fake_quantize, around(x))


I_EXP_ERROR = 0.005   # I-BERT's quadratic on (−ln 2, 0] and the integer constants, relative
HALVING_ERROR = 0.003  # each factor 2 of the range reduction, relative


@FAST
@given(scale=st.floats(1e-3, 4), bits=st.integers(3, 8), length=st.integers(1, 64), seed=seeds)
def test_integer_softmax_is_within_its_stated_bound_of_softmax(scale, bits, length, seed):
    """Per row, e_j = exp(x_j − max)·(1 ± ε_j), ε_j = I_EXP_ERROR + (1 + HALVING_ERROR)^k_j − 1 with
    k_j = (max − x_j) / ln 2 halvings, so |p̂ − p| ≤ p·(ε + ε̄) / (1 − ε̄), ε̄ = Σ p_j ε_j; below
    the cut-off 2^−n, up to 2^(1−n). LIS levels are then within [0.75, 1.5]·p̂ (nearest power of
    two with linear midpoints) where p ≥ 2^−(levels − 2)."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(-2 ** (bits - 1), 2 ** (bits - 1), (8, length), generator=g)
    s, zp = torch.tensor(scale), torch.tensor(0, dtype=torch.int32)
    x = codes.float() * s
    c = isx.ExpConstants.make(scale)
    y = isx.int_softmax(x, s, zp, -128, *c.constants()).double()
    p = torch.softmax(x.double(), -1)
    halvings = (x.amax(-1, keepdim=True) - x).double() / math.log(2)
    eps = I_EXP_ERROR + torch.expm1(halvings.clamp(max=c.n) * math.log1p(HALVING_ERROR))
    mean_eps = (p * eps).sum(-1, keepdim=True)
    assert ((y - p).abs() <= p * (eps + mean_eps) / (1 - mean_eps) + 2.0 ** (1 - c.n)).all()
    lis = isx.LISQuantizer.for_bits(4)
    a = isx.lis_attention(x, torch.eye(length), s, zp, lis.codes, lis.scales, -128, *c.constants())
    levels = lis.codes.shape[1] - 1
    seen = p >= 2.0 ** -(levels - 2)
    ratio = a.double()[seen] / y[seen]
    assert (ratio >= 0.75 * (1 - 1e-6)).all() and (ratio <= 1.5 * (1 + 1e-6)).all()


@FAST
@given(channels=st.integers(4, 64), offset=st.floats(-50, 50), spread=st.floats(0.1, 10),
       seed=seeds)
def test_integer_layernorm_is_within_a_step_and_its_multiplier_of_layernorm(channels, offset,
                                                                             spread, seed):
    """With A = M / 2^N (8-bit M): |ŷ − LN(x)| ≤ s_out·(1 + |LN(x) − β| / (128·s_out)) on the
    output grid (ε → 0, LN(x) clipped to the grid), for tokens whose σ spans at least 4 input codes
    (so that |A| < 2^8 and M keeps 8 bits)."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(32, channels, generator=g) * spread * torch.rand(channels, generator=g)
         + offset + torch.randn(channels, generator=g) * spread)
    p = ptf.PTFQuantizer.from_samples(x, x.min(), x.max(), 8)
    xq = p.fake_quantize(x)
    weight, bias = torch.rand(channels, generator=g) + 0.5, torch.randn(channels, generator=g)
    ref = F.layer_norm(xq.double(), (channels,), weight.double(), bias.double(), eps=1e-12)
    out = UniformQuantizer.from_range(ref.min(), ref.max(), 8, symmetric=False)
    y = int_layer_norm(xq, p.scale, p.zero_point, p.shift, weight, bias, out.scale,
                       out.zero_point, out.qmin, out.qmax)
    assert torch.equal(out.fake_quantize(y), y)
    varied = (xq / p.scale).round().std(-1) >= 4                    # σ of at least 4 input codes
    top, bottom = (out.qmax - out.zero_point) * out.scale, (out.qmin - out.zero_point) * out.scale
    expected = ref.clamp(bottom.item(), top.item())
    bound = out.scale * (1 + (ref - bias.double()).abs() / (128 * out.scale))
    assert ((y.double() - expected).abs() <= bound * (1 + 1e-4))[varied].all()


class _Quantizers(nn.Module):
    """x -> [params_i's graph call (as `quantize` writes it) on x[:, i]]: one input each, since
    onnxscript 0.7.2 names the bounds of every Min/Max it fuses into a Clip after the input
    (`x_min`), and a second such Clip on the same input refers to a bound it never stores."""

    def __init__(self, params):
        super().__init__()
        self.params = params
        for i, p in enumerate(params):
            for name, value in p.tensors().items():
                self.register_buffer(f"p{i}_{name}", value)

    def forward(self, x):
        return torch.stack([p.op(x[:, i], *(getattr(self, f"p{i}_{k}") for k in p.tensors()),
                                   *p.constants()) for i, p in enumerate(self.params)], 1)


@SLOW
@given(r=ranges(), bits=st.integers(2, 8), two=two_scale_settings(), root=st.sampled_from([1, 2]),
       tq=tan_params(), seed=seeds)
def test_onnx_computes_what_the_reference_computes(r, bits, two, root, tq, seed):
    lo, hi = r
    two_bits, shift, signed = two
    x = inside(lo - (hi - lo), hi + (hi - lo), seed)
    scale = (hi - lo).max().item() / 4
    params = [UniformQuantizer.from_range(lo.min(), hi.max(), bits, False),
              UniformQuantizer.from_range(lo, hi, bits, True, axis=-1),
              ptf.PTFQuantizer.from_samples(x, lo.min(), hi.max(), 8),
              two_scale.TwoScaleQuantizer.make(two_bits, scale / 2 ** shift, shift, signed),
              log2.LogQuantizer.make(min(bits + 2, log2.MAX_BITS), scale, root),
              tanq.TanQuantizer.make(tq[1], scale, tq[0].theta, tq[0].crossover)]
    module = _Quantizers(params).eval()
    x = x[:, None].expand(-1, len(params), -1)
    assert torch.equal(onnx_output(module, x[:2], x), module(x))
