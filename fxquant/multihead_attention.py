"""nn.MultiheadAttention written out as fxquant sees every other attention.

torch's module packs q, k and v into one `in_proj_weight` and runs one opaque
`F.multi_head_attention_forward`: traced as it is, nothing in it could be quantized. The tracer
(fxquant/tracing.py) runs this equivalent instead: three Linears on views of the packed weight,
matmul -> scale -> mask -> softmax -> matmul, and the module's own out_proj.
"""
from __future__ import annotations

import torch
from torch import nn

from fxquant.attention_mask import apply_attention_mask
from fxquant.errors import FxQuantError


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """A Linear on a view of the packed weight (no copy)."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    linear.weight = nn.Parameter(weight.detach(), requires_grad=False)
    if bias is not None:
        linear.bias = nn.Parameter(bias.detach(), requires_grad=False)
    return linear


def _additive(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """torch's MultiheadAttention masks: True (or a float -inf) where attention is not allowed."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=like.dtype, device=like.device).masked_fill(mask, float("-inf"))
    return mask.to(like.dtype)


class SplitMultiheadAttention(nn.Module):
    """Computes what `mha` computes in eval mode, with q/k/v as separate Linears."""

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        if mha.bias_k is not None or mha.add_zero_attn:
            raise FxQuantError("nn.MultiheadAttention with add_bias_kv or add_zero_attn is not supported")
        if mha.in_proj_weight is not None:
            weights = mha.in_proj_weight.chunk(3)
        else:
            weights = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
        biases = mha.in_proj_bias.chunk(3) if mha.in_proj_bias is not None else (None,) * 3
        self.q_proj, self.k_proj, self.v_proj = (_linear(w, b) for w, b in zip(weights, biases))
        self.out_proj = mha.out_proj
        self.num_heads = mha.num_heads
        self.scale = mha.head_dim ** -0.5
        self.batch_first = mha.batch_first

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, E) -> (N, heads, L, E / heads)."""
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if is_causal and attn_mask is None:
            raise FxQuantError("nn.MultiheadAttention(is_causal=True) needs its attn_mask to be traced")
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(key)), self._heads(self.v_proj(value))
        scores = (q @ k.transpose(-2, -1)) * self.scale
        if attn_mask is not None:  # (L, S) or (N * heads, L, S)
            mask = _additive(attn_mask, scores)
            scores = apply_attention_mask(scores, mask.view(-1, self.num_heads, *mask.shape[-2:])
                                          if mask.dim() == 3 else mask)
        if key_padding_mask is not None:  # (N, S)
            scores = apply_attention_mask(scores, _additive(key_padding_mask, scores)[:, None, None, :])
        attn = scores.softmax(dim=-1)
        out = self.out_proj((attn @ v).transpose(1, 2).flatten(2))
        if not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, attn.mean(dim=1) if average_attn_weights else attn
