"""nn.MultiheadAttention traced as three Linears and the written-out attention: the same outputs
as torch's module, and every product quantized."""
import pytest
import torch
from torch import nn

import fxquant
from fxquant import annotation, patterns, trace
from fxquant.errors import FxQuantError
from fxquant.multihead_attention import SplitMultiheadAttention

E, HEADS, L, S, N = 16, 4, 5, 7, 3


def _inputs(batch_first: bool, kdim: int = E):
    def shaped(length, dim):
        return torch.randn(N, length, dim) if batch_first else torch.randn(length, N, dim)
    return shaped(L, E), shaped(S, kdim), shaped(S, kdim)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kdim", [E, 12])
@pytest.mark.parametrize("need_weights,average", [(False, True), (True, True), (True, False)])
def test_split_attention_computes_what_torch_computes(batch_first, kdim, need_weights, average):
    mha = nn.MultiheadAttention(E, HEADS, batch_first=batch_first, kdim=kdim, vdim=kdim).eval()
    q, k, v = _inputs(batch_first, kdim)
    padding = torch.zeros(N, S, dtype=torch.bool)
    padding[0, 4:] = True
    causal = torch.ones(L, S, dtype=torch.bool).triu(1)  # True: may not attend
    kwargs = dict(key_padding_mask=padding, attn_mask=causal, need_weights=need_weights,
                  average_attn_weights=average)
    with torch.no_grad():
        expected, expected_weights = mha(q, k, v, **kwargs)
        out, weights = SplitMultiheadAttention(mha)(q, k, v, **kwargs)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    if need_weights:
        torch.testing.assert_close(weights, expected_weights, rtol=1e-5, atol=1e-5)
    else:
        assert weights is None


def test_split_attention_shares_the_packed_weight():
    mha = nn.MultiheadAttention(E, HEADS)
    split = SplitMultiheadAttention(mha)
    assert split.k_proj.weight.data_ptr() == mha.in_proj_weight[E:].data_ptr()


def test_bias_kv_is_refused_in_one_line():
    with pytest.raises(FxQuantError, match="add_bias_kv"):
        SplitMultiheadAttention(nn.MultiheadAttention(E, HEADS, add_bias_kv=True))


class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(E)
        self.attention = nn.MultiheadAttention(E, HEADS, batch_first=True)
        self.head = nn.Linear(E, 4)

    def forward(self, x):
        h = self.norm(x)
        return self.head(x + self.attention(h, h, h, need_weights=False)[0])


def test_a_model_with_multihead_attention_traces_to_linears_and_quantizes_every_product():
    model = _Encoder().eval()
    x = torch.randn(2, L, E)
    gm = trace(model, None, x)
    torch.testing.assert_close(gm(x), model(x))
    assert "attention" in model._modules and isinstance(model.attention, nn.MultiheadAttention)
    qmodel = fxquant.convert(model, [x], "minmax")
    assert qmodel.float_parts == ()
    assert sum(annotation.of(n).weighted for n in qmodel.graph.nodes) == 5  # q, k, v, out, head
    assert sum(patterns.is_matmul(qmodel, n) for n in qmodel.graph.nodes) == 2
