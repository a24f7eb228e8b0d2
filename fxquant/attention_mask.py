"""The masking steps of decomposed attention (passes.decompose_sdpa), as graph leaf functions.

Below the passes so that patterns can tell a padding mask from the scores by the function that
applies it; `fx.wrap` makes a symbolic trace record each as one call, not trace into it.
"""
from __future__ import annotations

import torch
import torch.fx as fx


@fx.wrap
def apply_attention_mask(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Boolean masks keep True positions; float masks are added (SDPA's convention)."""
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask, float("-inf"))
    return scores + mask


@fx.wrap
def causal_mask(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
