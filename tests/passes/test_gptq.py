from collections import Counter
from dataclasses import replace

import onnx
import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

import fxquant
from fxquant import FxQuantError, annotation, config
from fxquant.passes.gptq import gptq, gptq_codes
from fxquant.quantizers.uniform import dequantize, quantize_codes


class _Toy(nn.Module):
    """Conv patches, one pre-norm block (attention, MLP), mean-pooled head."""

    def __init__(self, d=16):
        super().__init__()
        self.patch, self.ln1, self.ln2 = nn.Conv2d(3, d, 4, 4), nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2, self.head = nn.Linear(d, 4 * d), nn.Linear(4 * d, d), nn.Linear(d, 4)

    def forward(self, images):
        x = self.patch(images).flatten(2).transpose(1, 2)
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        x = x + self.proj((q @ k.transpose(-2, -1) * 0.25).softmax(-1) @ v)
        x = x + self.fc2(F.gelu(self.fc1(self.ln2(x))))
        return self.head(x.mean(1))


def _setup(recipe="minmax", bits="w3a8", **options):
    torch.manual_seed(0)
    model, calib = _Toy(), [torch.randn(16, 3, 8, 8) for _ in range(4)]
    cfg = replace(config.resolve(recipe, bits), options=options)
    return model, calib, cfg, fxquant.convert(model, calib, cfg)


class _LayerInputs(fx.Interpreter):
    """Records the input each quantized Linear / Conv sees."""

    def __init__(self, gm):
        super().__init__(gm)
        self.seen = {}

    def run_node(self, n):
        if annotation.of(n).float_weight is not None:
            self.seen[n] = self.env[n.args[0]]
        return super().run_node(n)


def _weights(gm, node):
    """(float weight, the graph's dequantized weight, the nearest-rounded one on the same grid)."""
    w = dequantize.arguments(node.args[1])
    codes, scale, zero_point = (gm.get_buffer(a.target) for a in (w.codes, w.scale, w.zero_point))
    qmin, qmax = annotation.of(node).weight_range
    float_weight = annotation.of(node).float_weight
    nearest = quantize_codes(float_weight, scale, zero_point, qmin, qmax, axis=0)
    return (float_weight, dequantize(codes, scale, zero_point, 0),
            dequantize(nearest.to(torch.int8), scale, zero_point, 0))


def _output_error(node, x, weight, float_weight):
    """||layer(x; weight) - layer(x; float_weight)||², bias left out (it cancels)."""
    def layer(w):
        return F.conv2d(x, w, None, *node.args[3:]) if node.target is F.conv2d else F.linear(x, w)
    return (layer(weight) - layer(float_weight)).pow(2).sum().item()


def test_gptq_lowers_every_layers_output_error_on_the_inputs_it_sees():
    _, calib, cfg, qmodel = _setup()
    gptq(qmodel, cfg, calib)
    inputs = _LayerInputs(qmodel)
    layers = {}
    with torch.no_grad():
        for x in calib:
            inputs.run(x)
            for node, value in inputs.seen.items():
                float_weight, rounded, nearest = _weights(qmodel, node)
                errors = layers.setdefault(node.name, [0.0, 0.0])
                errors[0] += _output_error(node, value, rounded, float_weight)
                errors[1] += _output_error(node, value, nearest, float_weight)
    assert len(layers) == 6                                          # conv + 5 Linears
    worse = {name: e for name, e in layers.items() if not e[0] < 0.95 * e[1]}   # 0.17 to 0.88 here
    assert not worse, worse


def test_gptq_codes_on_correlated_inputs_beat_nearest_rounding():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 32, generator=g) @ torch.randn(32, 32, generator=g)   # correlated inputs
    w = torch.randn(24, 32, generator=g)
    scale, zero_point = w.abs().amax(1) / 3, torch.zeros(24, dtype=torch.int32)
    nearest = quantize_codes(w, scale, zero_point, -4, 3, axis=0)
    for act_order in (False, True):
        codes = gptq_codes(w, x.T @ x / len(x), scale, zero_point, -4, 3, block_size=8,
                           act_order=act_order)
        assert codes.min() >= -4 and codes.max() <= 3
        errors = [(x @ (w - dequantize(c, scale, zero_point, 0)).T).pow(2).sum() for c in (codes, nearest)]
        assert errors[0] < 0.7 * errors[1]


def test_gptq_changes_codes_only_and_keeps_them_on_the_grid():
    _, calib, cfg, qmodel = _setup()
    structure = [(n.op, str(n.target)) for n in qmodel.graph.nodes]
    before = {k: v.clone() for k, v in qmodel.named_buffers()}
    gptq(qmodel, cfg, calib)
    after = dict(qmodel.named_buffers())
    assert [(n.op, str(n.target)) for n in qmodel.graph.nodes] == structure
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all(k.endswith("_weight_codes") for k in changed)
    for node in qmodel.graph.nodes:
        if annotation.of(node).float_weight is not None:
            qmin, qmax = annotation.of(node).weight_range
            codes = qmodel.get_buffer(dequantize.arguments(node.args[1]).codes.target)
            assert qmin >= -4 and qmax <= 3 and codes.min() >= qmin and codes.max() <= qmax
    assert len(qmodel.meta["gptq"]["layers"]) == 6


def test_gptq_export_matches_pytorch_with_the_same_onnx_ops(tmp_path):
    model, calib, cfg, plain = _setup("repq-vit", "w4a4")
    rounded = fxquant.convert(model, calib, replace(config.resolve("repq-vit+gptq", "w4a4"),
                                                    options=cfg.options))
    x = calib[0][:4]
    assert not torch.equal(rounded(x), plain(x))
    ops = [Counter(n.op_type for n in onnx.load(fxquant.export_onnx(m, tmp_path / f"{i}.onnx", x)).graph.node)
           for i, m in enumerate((plain, rounded))]   # export_onnx self-checks against PyTorch
    assert ops[0] == ops[1] and ops[0]["DequantizeLinear"] > 0


@pytest.mark.parametrize("options, message", [
    ({"gptq_damp": -0.1}, "^option gptq_damp=-0.1 is not allowed: it must be a number >= 0$"),
    ({"gptq_block_size": 0}, "gptq_block_size=0 .* an int >= 1"),
    ({"gptq_act_order": 1}, "gptq_act_order=1 .* True or False"),
    ({"gptq_blocksize": 64}, "^unknown option 'gptq_blocksize': did you mean 'gptq_block_size'\\?$"),
])
def test_a_bad_option_fails_before_calibration(options, message):
    cfg = config.resolve("minmax+gptq")
    with pytest.raises(FxQuantError, match=message):
        fxquant.convert(_Toy(), [], replace(cfg, options=options))   # no data: would fail later


def test_a_singular_hessian_without_damping_is_refused():
    w = torch.randn(4, 3)
    h = torch.ones(3, 3)   # rank 1: one input repeated
    with pytest.raises(FxQuantError, match="raise gptq_damp"):
        gptq_codes(w, h, torch.ones(4), torch.zeros(4, dtype=torch.int32), -4, 3, damp=0.0)


def _masked_codes(padded_attention, pad_value: float, skip_padding: bool):
    model, batch = padded_attention(pad_value)
    cfg = replace(config.resolve("minmax+gptq", "w3a8"), options={"gptq_skip_padding": skip_padding})
    qmodel = fxquant.convert(model, [batch], cfg)
    codes = [b.clone() for k, b in qmodel.named_buffers() if k.endswith("_weight_codes")]
    return codes, qmodel.meta["gptq"]["rows_kept"], batch["attention_mask"].float().mean().item()


def test_padding_tokens_do_not_count(padded_attention):
    """Padding rows changed (within the activation ranges real tokens set): the same codes when
    they are skipped, other codes when they count."""
    skipped = [_masked_codes(padded_attention, pad, True) for pad in (0.0, 0.3)]
    counted = [_masked_codes(padded_attention, pad, False) for pad in (0.0, 0.3)]
    assert skipped[0][1] == pytest.approx(skipped[0][2], abs=1e-4) and counted[0][1] is None
    assert all(torch.equal(a, b) for a, b in zip(skipped[0][0], skipped[1][0]))
    assert not all(torch.equal(a, b) for a, b in zip(counted[0][0], counted[1][0]))
