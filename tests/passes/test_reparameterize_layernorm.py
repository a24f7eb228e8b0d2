import dataclasses
import operator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxquant
from fxquant import FxQuantError, annotation, config, roles, trace
from fxquant.calibrate import calibrate
from fxquant.passes.annotate_roles import annotate_roles
from fxquant.passes.insert_observers import insert_observers
from fxquant.passes.reparameterize_layernorm import fold_factors, reparameterize_layernorm
from fxquant.quantizers.uniform import UniformQuantizer, fake_quantize

CFG = config.resolve("repq-vit", "w4a4")


def _outlier_ln(d: int) -> nn.LayerNorm:
    ln = nn.LayerNorm(d)
    with torch.no_grad():
        ln.weight.copy_(torch.logspace(-1, 1, d)[torch.randperm(d)])
        ln.bias.copy_(torch.randn(d))
    return ln


class _QKV(nn.Module):
    """One LN feeding three separate Linears (HF-style q, k, v)."""

    def __init__(self, d=16):
        super().__init__()
        self.ln = _outlier_ln(d)
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d, bias=False), nn.Linear(d, d)

    def forward(self, x):
        h = self.ln(x)
        return (self.q(h) @ self.k(h).transpose(-2, -1)).softmax(-1) @ self.v(h)


class _SwinWindow(nn.Module):
    """LN -> pad -> view -> permute -> view -> Linear, as Swin's window partition."""

    def __init__(self, d=8, window=4):
        super().__init__()
        self.ln, self.qkv, self.window = _outlier_ln(d), nn.Linear(d, 3 * d), window

    def forward(self, x):                         # x: (B, H, W, C)
        b, h, w, c = x.shape
        y = F.pad(self.ln(x), (0, 0, 0, 2, 0, 2))  # pads H and W by 2: real padded positions
        y = torch.roll(y, (1, 1), (1, 2))
        n = self.window
        y = y.view(b, (h + 2) // n, n, (w + 2) // n, n, c).permute(0, 1, 3, 2, 4, 5)
        return self.qkv(y.reshape(-1, n * n, c))


def _calibrated(model, data):
    gm = annotate_roles(trace(model))
    insert_observers(gm, CFG)
    calibrate(gm, [data])
    return gm


# Models and inputs are drawn inside each test, after conftest seeds it: drawn at collection they
# changed with the collection order (pytest-xdist), and 2 of 150 draws of _QKV exceed the first
# test's tolerance (softmax amplifies float32 rounding of large scores), which made it flaky.
@pytest.mark.parametrize("make,shape", [(_QKV, (4, 10, 16)), (_SwinWindow, (2, 6, 6, 8))])
def test_fold_keeps_the_float_function_and_leaves_an_integer_per_tensor_grid(make, shape):
    model, x = make(), torch.randn(shape)
    expected = model(x)
    gm = reparameterize_layernorm(_calibrated(model, x), CFG, [x])
    torch.testing.assert_close(gm(x), expected, rtol=1e-4, atol=1e-5)
    fitted = {id(annotation.of(o).fitted)
              for o in annotation.observer_nodes(gm) if annotation.of(o).role == roles.POST_LAYERNORM}
    assert len(fitted) == 1                              # q, k, v share one quantizer
    params = next(annotation.of(o).fitted for o in annotation.observer_nodes(gm)
                  if annotation.of(o).role == roles.POST_LAYERNORM)
    assert params.scale.numel() == 1 and params.zero_point.dtype == torch.int32


def test_swin_padding_is_shifted_so_padded_tokens_are_unchanged():
    model, x = _SwinWindow(), torch.randn(2, 6, 6, 8)
    gm = reparameterize_layernorm(_calibrated(model, x), CFG, [x])
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert targets.count(F.pad) == 1 and "fold_shift" in "".join(
        n.target for n in gm.graph.nodes if n.op == "get_attr")


def test_per_tensor_grid_equals_the_channel_wise_grid():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5000, 6, generator=g) * torch.tensor([0.1, 0.5, 2, 8, 0.3, 1]) + torch.arange(6)
    channel = UniformQuantizer(torch.rand(6, generator=g) + 0.05,
                            torch.randint(0, 16, (6,), generator=g, dtype=torch.int32), 0, 15)
    r, t, per_tensor = fold_factors(channel)
    folded = per_tensor.fake_quantize(x / r + t)
    torch.testing.assert_close((folded - t) * r, channel.fake_quantize(x), rtol=0, atol=1e-5)


def test_spec_worked_example():
    r, t, per_tensor = fold_factors(UniformQuantizer(torch.tensor([0.1, 0.5]),
                                                  torch.tensor([8, 4], dtype=torch.int32), 0, 15))
    torch.testing.assert_close(r, torch.tensor([1 / 3, 5 / 3]))
    torch.testing.assert_close(t, torch.tensor([0.6, -0.6]))
    assert per_tensor.zero_point.item() == 6
    assert fake_quantize(torch.tensor([-0.8 * 3 + 0.6]), per_tensor.scale, per_tensor.zero_point,
                         0, 15).item() == pytest.approx(-1.8)


class _ChannelsMoved(nn.Module):
    def __init__(self, d=8):
        super().__init__()
        self.ln, self.fc = _outlier_ln(d), nn.Linear(5, 4)

    def forward(self, x):                         # (B, 5, 8) -> channels moved to dim 1
        return self.fc(self.ln(x).transpose(1, 2))


class _LnFeedsMatmul(nn.Module):
    """The quantized LN output also feeds an activation matmul: no Linear to take the factors."""

    def __init__(self, d=8):
        super().__init__()
        self.ln, self.fc = _outlier_ln(d), nn.Linear(d, d)

    def forward(self, x):
        h = self.ln(x)
        return self.fc(h) + h @ h.transpose(-2, -1) @ h


@pytest.mark.parametrize("model,match", [(_ChannelsMoved(), "channel"),
                                         (_LnFeedsMatmul(), "not a Linear")])
def test_unfoldable_layouts_are_refused(model, match):
    x = torch.randn(3, 5, 8)
    with pytest.raises(FxQuantError, match=match):
        reparameterize_layernorm(_calibrated(model, x), CFG, [x])


def test_unknown_fold_target_is_refused():
    with pytest.raises(FxQuantError, match="fold_target"):
        fold_factors(UniformQuantizer(torch.ones(2), torch.zeros(2, dtype=torch.int32), 0, 15), "nope")


class _PatchNorm(nn.Module):
    """Swin's patch-embed LN feeds a residual and another LN, not a Linear: it is left alone."""

    def __init__(self, d=8):
        super().__init__()
        self.norm0, self.norm1, self.fc = _outlier_ln(d), _outlier_ln(d), nn.Linear(d, d)

    def forward(self, x):
        h = self.norm0(x)
        return h + self.fc(self.norm1(h))


def test_layernorms_that_feed_no_linear_are_left_alone_and_the_users_model_is_not_touched():
    model, x = _PatchNorm(), torch.randn(3, 5, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    qmodel = fxquant.convert(model, [x], "repq-vit", "w8a8")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(qmodel.norm0.weight, before["norm0.weight"])
    assert not torch.equal(qmodel.norm1.weight, before["norm1.weight"])
    assert (qmodel(x) - model(x)).abs().max() < 0.05 * model(x).abs().max()


def test_repq_vit_recipe_quantizes_the_folded_qkv_input_per_tensor():
    model, x = _QKV(), torch.randn(4, 10, 16)
    qmodel = fxquant.convert(model, [x], "repq-vit", "w4a4")
    ln_quant = next(n for n in qmodel.graph.nodes if n.target is torch.ops.fxquant.fake_quant.default
                    and annotation.of(n).role == roles.POST_LAYERNORM)
    assert qmodel.get_buffer(ln_quant.args[1].target).numel() == 1       # one scale, per tensor


class _PostLN(nn.Module):
    """BERT's post-LN block: each LN output feeds q, k, v (or the MLP) and the residual add."""

    def __init__(self, d=16):
        super().__init__()
        self.ln1, self.ln2 = _outlier_ln(d), _outlier_ln(d)
        self.q, self.k, self.v, self.fc = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        h = self.ln1(x)
        h = self.ln2(h + (self.q(h) @ self.k(h).transpose(-2, -1)).softmax(-1) @ self.v(h))
        return h + self.fc(h)


def test_post_ln_keeps_the_layernorm_and_scales_only_the_branch_to_the_linears():
    model, x = _PostLN(), torch.randn(4, 10, 16)
    expected = model(x)
    gm = reparameterize_layernorm(_calibrated(model, x), CFG, [x])
    torch.testing.assert_close(gm(x), expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(gm.ln1.weight, model.ln1.weight) and torch.equal(gm.ln2.bias, model.ln2.bias)
    for ln in [n for n in gm.graph.nodes if n.op == "call_module" and n.target.startswith("ln")]:
        smooth = [u for u in ln.users if u.target is operator.mul]
        assert len(smooth) == 1 and [u.target for u in smooth[0].users] == [operator.add]
        quantizer = next(iter(smooth[0].users)).users
        assert [gm.get_submodule(o.target).role for o in quantizer] == [roles.POST_LAYERNORM]
        assert annotation.of(next(iter(quantizer))).fitted.scale.numel() == 1
        residual = [u for u in ln.users if u.target is operator.add]
        assert len(residual) == 1                        # reads the LayerNorm output itself


ROTATE = dataclasses.replace(CFG, options={"fold_rotate": True})


def _column_spread(linear: nn.Linear) -> float:
    """Largest over median column range of a weight: what one grid per output row must hold."""
    columns = linear.weight.detach().abs().amax(0)
    return float(columns.max() / columns.median())


@pytest.mark.parametrize("make,shape", [(_PostLN, (4, 10, 16)), (_QKV, (4, 10, 16)),
                                        (_SwinWindow, (2, 6, 6, 8))])
def test_fold_rotate_keeps_the_float_function_and_rotates_every_post_ln_quantizer_input(make, shape):
    model, x = make(), torch.randn(shape)
    expected = model(x)
    gm = reparameterize_layernorm(_calibrated(model, x), ROTATE, [x])
    # float32 rounding of the rotated sums (~1e-7 relative); a misread layout is off by order 1
    assert ((gm(x) - expected).norm() / expected.norm()).item() < 1e-5
    quantizers = [o for o in annotation.observer_nodes(gm)
                  if annotation.of(o).role == roles.POST_LAYERNORM]
    assert quantizers and all(o.args[0].target is torch.matmul for o in quantizers)
    assert {o.args[0].args[1].target for o in quantizers} == {f"fold_rotation_{x.shape[-1]}"}
    assert all(annotation.of(o).fitted.scale.numel() == 1 for o in quantizers)


def test_fold_rotate_spreads_the_folded_channel_ranges_over_the_weight_columns():
    model, x = _PostLN(), torch.randn(4, 10, 16)
    folded = reparameterize_layernorm(_calibrated(model, x), CFG, [x])
    rotated = reparameterize_layernorm(_calibrated(model, x), ROTATE, [x])
    for name in ("q", "fc"):
        assert _column_spread(getattr(rotated, name)) < 0.5 * _column_spread(getattr(folded, name))
