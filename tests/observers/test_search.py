import pytest
import torch

from fxquant import FxQuantError
from fxquant.observers import search
from fxquant.observers.observer import Observer
from fxquant.quantizers.uniform import UniformQuantizer


def test_percentile_mse_picks_the_least_error_per_channel():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, 3, generator=g)
    x[0, 0] = 200.0                                          # one outlier in channel 0
    best = UniformQuantizer.from_samples("mse", x, x.amin(0), x.amax(0), 4, False)
    for p in search.PERCENTILES:
        other = UniformQuantizer.from_range(*search.percentile_ranges(x, (p,))[0], 4, False)
        best_err = (best.fake_quantize(x) - x).pow(2).mean(0)
        other_err = (other.fake_quantize(x) - x).pow(2).mean(0)
        assert (best_err <= other_err + 1e-9).all()
    assert best.scale[0] < 200 / 15                         # the outlier was clipped away


def test_observer_is_deterministic_and_bounded():
    def run():
        obs = Observer("post_layernorm", per_channel=True, max_samples=4096)
        for i in range(3):
            obs(torch.randn(8, 50, 16, generator=torch.Generator().manual_seed(i)))
        return obs
    a, b = run(), run()
    assert a.samples().shape == (4096 // 16, 16)
    torch.testing.assert_close(a.samples(), b.samples())
    torch.testing.assert_close(a.max, b.max)


def test_observer_rejects_non_finite_values():
    with pytest.raises(FxQuantError, match="NaN"):
        Observer("post_gelu")(torch.tensor([1.0, float("nan")]))
