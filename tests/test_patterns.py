import torch
import torch.nn.functional as F
from torch import nn

from fxquant import patterns, trace


class _Attention(nn.Module):
    """`mask`: padding from an input (additive, or SDPA's boolean); `bias`: a constant table."""

    def __init__(self, kind, d=8, tokens=6):
        super().__init__()
        self.kind, self.q, self.k = kind, nn.Linear(d, d), nn.Linear(d, d)
        self.bias = nn.Parameter(torch.randn(tokens, tokens))

    def forward(self, x, keep):
        q, k = self.q(x), self.k(x)
        if self.kind == "sdpa":
            return F.scaled_dot_product_attention(q, k, x, attn_mask=keep[:, None, :].bool())
        scores = q @ k.transpose(-2, -1) * 0.5
        if self.kind == "bias":
            return (scores + self.bias).softmax(-1)
        return (scores + (1.0 - keep[:, None, :]) * torch.finfo(torch.float32).min).softmax(-1)


def _mask_adds(kind):
    gm = trace(_Attention(kind), ["x", "keep"])
    softmax = next(n for n in gm.graph.nodes if patterns.is_softmax(gm, n))
    return gm, patterns.attention_mask_add(gm, softmax.args[0])


def test_a_padding_mask_from_an_input_is_told_apart_from_the_scores():
    for kind in ("additive", "sdpa"):
        gm, (scores, mask) = _mask_adds(kind)
        assert any(patterns.is_matmul(gm, n) for n in patterns.value_sources(scores) | {scores})
        assert any(n.op == "placeholder" and n.target == "keep" for n in patterns.value_sources(mask))


def test_a_constant_bias_is_part_of_the_logits():
    assert _mask_adds("bias")[1] is None
