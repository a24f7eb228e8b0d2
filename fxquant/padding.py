"""Which tokens of each sample are padding, read from the graph's own attention padding masks.

A padded text batch computes every position, but what the padding positions hold says nothing
about the text, and no real token reads them (the masks drop them as keys). Ranges fitted over
them, or Hessians summed over them, describe the padding: at 64 tokens the padding is most of a
typical STS-B batch. Calibration (`calibrate.calibrate`), GPTQ and reconstruction leave those
tokens out; the export's self-check compares only real tokens.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.fx as fx

from fxquant import patterns
from fxquant.blocks import block_computing, block_module, run_block

TokenMask = Callable[[dict[str, torch.Tensor]], "torch.Tensor | None"]


def token_mask(gm: fx.GraphModule) -> TokenMask | None:
    """A function from graph inputs (by placeholder name) to a (samples, tokens) boolean tensor,
    True where a token is a key every attention padding mask keeps (a float mask adds 0 there, a
    boolean one is True); None when the graph has no padding mask."""
    masks = list(dict.fromkeys(found[1] for n in gm.graph.nodes
                               if (found := patterns.attention_mask_add(gm, n)) is not None))
    if not masks:
        return None
    part = block_computing(gm, masks)
    module = block_module(gm, part)

    def kept(inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        samples = len(next(iter(inputs.values())))
        result = None
        for value in run_block(module, part, inputs).values():
            keep = value if value.dtype == torch.bool else value == 0
            if keep.ndim < 2 or len(keep) != samples:
                continue   # one mask for every sample (causal): no padding to tell
            keep = keep.reshape(len(keep), -1, keep.shape[-1]).any(1)
            result = keep if result is None else result & keep
        return result
    return kept


def kept_tokens(gm: fx.GraphModule, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """`token_mask` run once on whole graph inputs (by placeholder name): (samples, tokens), True
    at real tokens; None when the graph has no padding mask."""
    kept = token_mask(gm)
    return kept(inputs) if kept else None
