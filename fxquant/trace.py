"""Timm-aware tracing into the canonical GraphModule every fxquant pass works on.

Canonical means: leaf calls for the layers quantization cares about (Linear, Conv, LayerNorm,
GELU, Softmax), `scaled_dot_product_attention` written out as matmul -> scale -> mask -> softmax
-> matmul, and no Dropout/Identity nodes (inference semantics).
"""
from __future__ import annotations

import inspect
from typing import Sequence

import torch
import torch.fx as fx
from torch import nn

from fxquant.errors import FxQuantError
from fxquant.passes.decompose_sdpa import decompose_sdpa
from fxquant.passes.remove_identities import remove_identities

LEAF_TYPES = (nn.Linear, nn.Conv2d, nn.LayerNorm, nn.GELU, nn.Softmax, nn.Dropout, nn.Identity)


class TraceError(FxQuantError):
    """The model cannot be symbolically traced; the message names the innermost failing module."""


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LEAF_TYPES) or super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        try:
            return super().call_module(m, forward, args, kwargs)
        except TraceError:
            raise
        except Exception as e:
            name = self.path_of_module(m) or "<root>"
            raise TraceError(f"cannot trace module '{name}' ({type(m).__name__}): {e}") from e


def _concrete_args(model: nn.Module, input_names: Sequence[str] | None) -> dict:
    """Every forward parameter that is not an input keeps its default (e.g. attn_mask=None)."""
    params = [p for p in inspect.signature(model.forward).parameters.values()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    names = list(input_names) if input_names else [params[0].name]
    unknown = set(names) - {p.name for p in params}
    if unknown:
        raise TraceError(f"{type(model).__name__}.forward has no parameter(s) {sorted(unknown)}")
    return {p.name: p.default for p in params
            if p.name not in names and p.default is not inspect.Parameter.empty}


def trace(model: nn.Module, input_names: Sequence[str] | None = None) -> fx.GraphModule:
    """Trace `model` (put in eval mode) into fxquant's canonical GraphModule.

    `input_names` are the forward parameters that stay graph inputs (default: the first one);
    the others are fixed to their defaults, so optional masks and flags specialize away.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fxquant.trace expects an nn.Module, got {type(model).__name__}")
    model.eval()
    tracer = _Tracer()
    try:
        graph = tracer.trace(model, concrete_args=_concrete_args(model, input_names))
    except TraceError:
        raise
    except Exception as e:
        raise TraceError(f"cannot trace {type(model).__name__}.forward: {e}") from e
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    gm = decompose_sdpa(gm)
    gm = remove_identities(gm)
    return gm
