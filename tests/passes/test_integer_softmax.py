from collections import Counter

import pytest
import torch
from torch import nn

import fxquant
from fxquant import patterns
from fxquant.passes.rewrite import REPORTS_KEY
from fxquant.quantizers.int_softmax import LISQuantizer
from fxquant.quantizers.log2 import log_quant

LOG_QUANT = torch.ops.fxquant.log_quant.default


class _Attention(nn.Module):
    """`mixed`: a Linear reads the attention too, so LIS cannot be fused into A·V."""

    def __init__(self, d=16, tokens=12, mixed=False):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.mix = nn.Linear(tokens, d) if mixed else None

    def forward(self, x):
        a = (self.q(x) @ self.k(x).transpose(-2, -1) * 0.25).softmax(-1)
        out = self.o(a @ self.v(x))
        return out if self.mix is None else out + self.mix(a)


def _convert(model, bits):
    g = torch.Generator().manual_seed(0)
    calib = [torch.randn(4, 12, 16, generator=g) for _ in range(2)]
    qmodel = fxquant.convert(model, calib, "fq-vit", bits)
    ops = Counter(n.target for n in qmodel.graph.nodes if n.op == "call_function")
    ops["softmax"] = sum(patterns.is_softmax(qmodel, n) for n in qmodel.graph.nodes)
    return qmodel, ops, torch.randn(4, 12, 16, generator=g)


@pytest.mark.parametrize("bits, fused", [("w8a8attn4", torch.ops.fxquant.lis_attention.default),
                                         ("w8a8attn8", torch.ops.fxquant.int_softmax.default)])
def test_softmax_on_quantized_logits_becomes_integer(bits, fused):
    model = _Attention().eval()
    qmodel, ops, x = _convert(model, bits)
    assert ops[fused] == 1 and ops["softmax"] == 0 and ops[LOG_QUANT] == 0
    ref = model(x)
    assert (qmodel(x) - ref).norm() / ref.norm() < (0.15 if "attn4" in bits else 0.05)


def test_lis_read_outside_a_product_keeps_float_softmax_with_lis_levels():
    qmodel, ops, _ = _convert(_Attention(mixed=True).eval(), "w8a8attn4")
    assert ops["softmax"] == 1 and ops[LOG_QUANT] == 1
    node = next(n for n in qmodel.graph.nodes if n.target is LOG_QUANT)
    thresholds = log_quant.arguments(node).thresholds
    assert torch.equal(qmodel.get_buffer(thresholds.target), LISQuantizer.for_bits(4).thresholds)
    [reason] = qmodel.meta[REPORTS_KEY]["integer_softmax"].rejected.values()
    assert reason == "its LIS output is read by something other than A·V products"


class _PaddedAttention(_Attention):
    """Scores + a padding mask from an input (float32 min where padded), as Hugging Face BERT."""

    def forward(self, x, keep):
        mask = (1.0 - keep[:, None, None, :]) * torch.finfo(torch.float32).min
        q, k, v = (f(x).unflatten(-1, (2, -1)).transpose(1, 2) for f in (self.q, self.k, self.v))
        a = (q @ k.transpose(-2, -1) * 0.25 + mask).softmax(-1)
        return self.o((a @ v).transpose(1, 2).flatten(2))


@pytest.mark.parametrize("bits, fused", [("w8a8attn4", torch.ops.fxquant.lis_attention.default),
                                         ("w8a8attn8", torch.ops.fxquant.int_softmax.default)])
def test_padding_mask_is_left_out_of_the_logit_grid_and_padded_keys_weigh_nothing(bits, fused):
    g = torch.Generator().manual_seed(0)
    keep = torch.ones(4, 12)
    keep[:, 8:] = 0
    calib = [{"x": torch.randn(4, 12, 16, generator=g), "keep": keep} for _ in range(2)]
    model = _PaddedAttention().eval()
    qmodel = fxquant.convert(model, calib, "fq-vit", bits, input_names=["x", "keep"])
    ops = Counter(n.target for n in qmodel.graph.nodes if n.op == "call_function")
    assert ops[fused] >= 1 and not any(patterns.is_softmax(qmodel, n) for n in qmodel.graph.nodes)
    x = torch.randn(4, 12, 16, generator=g)
    moved = x.clone()
    moved[:, 8:] += 100 * torch.randn(4, 4, 16, generator=g)  # padded tokens: any values
    out = qmodel(x, keep)
    assert torch.equal(out[:, :8], qmodel(moved, keep)[:, :8])
    ref = model(x, keep)[:, :8]
    assert (out[:, :8] - ref).norm() / ref.norm() < (0.15 if "attn4" in bits else 0.05)
