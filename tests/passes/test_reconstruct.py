from dataclasses import replace

import pytest
import torch
from torch import nn

import fxquant
from fxquant import FxQuantError, config
from fxquant.passes.float_reference import float_reference
from fxquant.passes import reconstruct as reconstruct_module
from fxquant.passes.reconstruct import reconstruct


class _Block(nn.Module):
    def __init__(self, d=16):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.act, self.fc2 = nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d)

    def forward(self, x):
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        x = x + self.proj((q @ k.transpose(-2, -1)).softmax(-1) @ v)
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class _Toy(nn.Module):
    def __init__(self, d=16):
        super().__init__()
        self.embed, self.blocks, self.head = nn.Linear(8, d), nn.Sequential(_Block(d), _Block(d)), nn.Linear(d, 4)

    def forward(self, x):
        return self.head(self.blocks(self.embed(x)).mean(1))


def _setup(**options):
    torch.manual_seed(0)
    model, calib = _Toy(), [torch.randn(16, 6, 8) for _ in range(4)]
    cfg = replace(config.resolve("minmax", "w3a4"), options={"recon_iters": 5, **options})
    return model, calib, cfg, fxquant.convert(model, calib, cfg)


def _error(gm, reference, calib):
    with torch.no_grad():
        return sum((gm(x) - reference(x)).pow(2).mean().item() for x in calib)


def _structure(gm):
    return [(n.op, str(n.target)) for n in gm.graph.nodes]


def test_reconstruction_lowers_the_error_and_keeps_the_structure():
    _, calib, cfg, qmodel = _setup(recon_iters=300)
    reference = float_reference(qmodel)
    before, structure = _error(qmodel, reference, calib), _structure(qmodel)
    buffers = {k: v.clone() for k, v in qmodel.named_buffers()}
    reconstruct(qmodel, cfg, calib)
    assert _error(qmodel, reference, calib) < 0.8 * before
    assert _structure(qmodel) == structure
    after = dict(qmodel.named_buffers())
    codes = [k for k in buffers if k.endswith("_weight_codes")]
    assert len(codes) == 10 and any(not torch.equal(buffers[k], after[k]) for k in codes)
    for k, v in after.items():
        assert v.dtype == buffers[k].dtype
        if k.endswith("_weight_codes"):
            assert v.min() >= -4 and v.max() <= 3                 # 3-bit symmetric codes
        if k.endswith("zero_point"):
            assert torch.equal(v, buffers[k])
        if k.endswith("_scale") and not k.endswith("weight_scale"):
            assert (v > 0).all()
    assert len(qmodel.meta["recon"]["blocks"]) == 3               # 2 blocks + the head


@pytest.mark.parametrize("lr", [0.0, 1e-3])
def test_weight_steps_learn_only_when_asked(lr):
    _, calib, cfg, qmodel = _setup(recon_iters=100, recon_weight_step_lr=lr)
    reference = float_reference(qmodel)
    before = {k: v.clone() for k, v in qmodel.named_buffers() if k.endswith("_weight_scale")}
    error = _error(qmodel, reference, calib)
    reconstruct(qmodel, cfg, calib)
    after = dict(qmodel.named_buffers())
    assert len(before) == 10
    assert any(not torch.equal(v, after[k]) for k, v in before.items()) == (lr > 0)
    assert all((after[k] > 0).all() for k in before)
    assert _error(qmodel, reference, calib) < 0.8 * error


def test_recon_chains_on_a_recipe_and_is_deterministic():
    model, calib, cfg, _ = _setup()
    cfg = replace(config.resolve("minmax+recon", "w3a4"), options=cfg.options)
    a, b = (fxquant.convert(model, calib, cfg) for _ in range(2))
    x = torch.randn(3, 6, 8)
    assert torch.equal(a(x), b(x))


def test_time_budget_stops_training():
    _, calib, cfg, qmodel = _setup(recon_max_seconds=0)
    reconstruct(qmodel, cfg, calib)
    assert all(b["iters"] == 0 for b in qmodel.meta["recon"]["blocks"])


def test_unknown_option_is_refused():
    """By the pass called alone (convert refuses it earlier: tests/test_methods.py)."""
    _, calib, cfg, qmodel = _setup()
    with pytest.raises(FxQuantError, match="unknown option 'recon_iterations': did you mean 'recon_iters'"):
        reconstruct(qmodel, replace(cfg, options={**cfg.options, "recon_iterations": 5}), calib)


class _QuantizedAcross(nn.Module):
    """A GELU output quantized once and read on both sides of a residual cut: the quantizer's
    output crosses it, while in the float reference its input does."""

    def __init__(self, d=16):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x):
        g = nn.functional.gelu(self.a(x))
        y = x + self.b(g)
        return y + self.c(g)


def test_a_quantized_value_read_across_a_cut_is_matched_to_its_float_value():
    torch.manual_seed(0)
    model, calib = _QuantizedAcross(), [torch.randn(16, 6, 16) for _ in range(2)]
    cfg = replace(config.resolve("minmax", "w3a4"), options={"recon_iters": 3, "recon_adds_per_block": 1})
    qmodel = reconstruct(fxquant.convert(model, calib, cfg), cfg, calib)
    assert [b["iters"] for b in qmodel.meta["recon"]["blocks"]] == [3, 3]


def _masked_recon(padded_attention, pad_value: float, skip_padding: bool):
    model, batch = padded_attention(pad_value)
    cfg = replace(config.resolve("minmax+recon", "w3a8"),
                  options={"recon_iters": 20, "recon_skip_padding": skip_padding})
    qmodel = fxquant.convert(model, [batch], cfg)
    return dict(qmodel.named_buffers()), qmodel.meta["recon"]["tokens_kept"]


def test_padding_tokens_do_not_count(padded_attention):
    """Padding tokens' inputs changed: the same learned codes and steps when their outputs are
    left out of the loss, others when they count."""
    skipped = [_masked_recon(padded_attention, pad, True) for pad in (0.0, 0.3)]
    counted = [_masked_recon(padded_attention, pad, False) for pad in (0.0, 0.3)]
    mask = padded_attention(0.0)[1]["attention_mask"]
    assert skipped[0][1] == pytest.approx(mask.float().mean().item(), abs=1e-4)
    assert counted[0][1] is None
    assert all(torch.equal(v, skipped[1][0][k]) for k, v in skipped[0][0].items())
    assert not all(torch.equal(v, counted[1][0][k]) for k, v in counted[0][0].items())


def test_padding_positions_are_cut_without_changing_the_result(padded_attention, monkeypatch):
    """Positions that are padding in a whole minibatch are not computed; training is the same."""
    model, batch = padded_attention(0.3)
    cfg = replace(config.resolve("minmax+recon", "w3a8"),
                  options={"recon_iters": 20, "recon_drop_prob": 1.0})
    cut = fxquant.convert(model, [batch], cfg)
    monkeypatch.setattr(reconstruct_module, "_cutting_is_exact", lambda *args: False)
    whole = fxquant.convert(model, [batch], cfg)
    assert [b["padding_cut"] for b in cut.meta["recon"]["blocks"]] == [True]
    assert [b["padding_cut"] for b in whole.meta["recon"]["blocks"]] == [False]
    for name, value in whole.named_buffers():
        torch.testing.assert_close(dict(cut.named_buffers())[name], value, rtol=1e-4, atol=1e-6)


class _FixedLength(nn.Module):
    """Masked attention with a position table as long as the padded batch: cannot run cut."""

    def __init__(self, masked: nn.Module, tokens: int = 12, d: int = 16):
        super().__init__()
        self.masked, self.position = masked, nn.Parameter(torch.randn(tokens, d))

    def forward(self, x, attention_mask):
        return self.masked(x + self.position, attention_mask)


class _MeanOverPadding(nn.Module):
    """Masked attention averaged over every position, padding included: runs cut, differs."""

    def __init__(self, masked: nn.Module):
        super().__init__()
        self.masked = masked

    def forward(self, x, attention_mask):
        return self.masked(x, attention_mask).mean(1)


@pytest.mark.parametrize("wrap", [_FixedLength, _MeanOverPadding])
def test_a_block_that_needs_its_padding_positions_trains_on_every_position(padded_attention, wrap):
    model, batch = padded_attention(0.3)
    cfg = replace(config.resolve("minmax+recon", "w3a8"), options={"recon_iters": 5})
    qmodel = fxquant.convert(wrap(model), [batch], cfg)
    assert [(b["padding_cut"], b["iters"]) for b in qmodel.meta["recon"]["blocks"]] == [(False, 5)]
