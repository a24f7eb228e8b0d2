import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fxquant import trace
from fxquant.patterns import is_matmul, is_softmax


class _Attention(nn.Module):
    def __init__(self, mask=None, causal=False):
        super().__init__()
        self.mask, self.causal = mask, causal

    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, is_causal=self.causal)


@pytest.mark.parametrize("mask,causal", [
    (None, False),
    (None, True),
    (torch.randn(5, 5), False),
    (torch.rand(5, 5) > 0.3, False),
])
def test_sdpa_becomes_matmul_softmax_matmul_with_the_same_output(mask, causal):
    if mask is not None and mask.dtype == torch.bool:
        mask[:, 0] = True  # every row keeps one position, as SDPA requires for finite output
    model = _Attention(mask, causal)
    q, k, v = (torch.randn(2, 3, 5, 8) for _ in range(3))
    gm = trace(model, input_names=["q", "k", "v"])
    nodes = list(gm.graph.nodes)
    assert sum(is_softmax(gm, n) for n in nodes) == 1
    assert sum(is_matmul(gm, n) for n in nodes) == 2
    torch.testing.assert_close(gm(q, k, v), model(q, k, v), rtol=1e-5, atol=1e-5)
