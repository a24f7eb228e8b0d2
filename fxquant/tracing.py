"""Timm-aware tracing into the canonical GraphModule every fxquant pass works on.

Canonical means: leaf calls for the layers quantization cares about (Linear, Conv, LayerNorm,
GELU, Softmax), `scaled_dot_product_attention` written out as matmul -> scale -> mask -> softmax
-> matmul, and no Dropout/Identity nodes (inference semantics).

Models whose forward takes `**kwargs` or is decorated (Hugging Face) are traced through a thin
entry module that calls them with the named inputs only; example inputs let code that branches on
sizes trace (`value_tracer`).
"""
from __future__ import annotations

import inspect
from typing import Sequence

import torch
import torch.fx as fx
from torch import nn

from fxquant.calibrate import model_device
from fxquant.data import batch_inputs
from fxquant.errors import FxQuantError
from fxquant.passes.decompose_sdpa import decompose_sdpa
from fxquant.passes.remove_identities import remove_identities
from fxquant.value_tracer import ValueTracer

LEAF_TYPES = (nn.Linear, nn.Conv2d, nn.LayerNorm, nn.GELU, nn.Softmax, nn.Dropout, nn.Identity)


class TraceError(FxQuantError):
    """The model cannot be symbolically traced; the message names the innermost failing module."""


class _Tracer(ValueTracer):
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


def _forward_params(model: nn.Module) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(model.forward).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _input_names(model: nn.Module, input_names: Sequence[str] | None, example) -> list[str]:
    """The given names, else the example's (the first forward parameters for its positional
    inputs, then its keywords), else the first forward parameter."""
    params = _forward_params(model)
    if input_names:
        names = list(input_names)
    elif example is not None:
        args, kwargs = batch_inputs(example)
        names = [p.name for p in params[:len(args)]] + list(kwargs)
    else:
        names = [params[0].name]
    unknown = set(names) - {p.name for p in params}
    if unknown:
        raise TraceError(f"{type(model).__name__}.forward has no parameter(s) {sorted(unknown)}")
    return names


def _concrete_args(model: nn.Module, names: list[str]) -> dict:
    """Every forward parameter that is not an input keeps its default (e.g. attn_mask=None)."""
    return {p.name: p.default for p in _forward_params(model)
            if p.name not in names and p.default is not inspect.Parameter.empty}


class _Entry(nn.Module):
    """forward(*inputs) -> model(**{name: input}): a signature fx can bind, whatever the model's."""

    def __init__(self, model: nn.Module, input_names: Sequence[str]):
        super().__init__()
        self.model = model
        self.input_names = tuple(input_names)

    def forward(self, *inputs):
        return self.model(**dict(zip(self.input_names, inputs)))


def _needs_entry(model: nn.Module) -> bool:
    forward = type(model).forward
    kinds = {p.kind for p in inspect.signature(forward).parameters.values()}
    return hasattr(forward, "__wrapped__") or bool(
        kinds & {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD})


def _example_by_name(model: nn.Module, example, names: list[str]) -> dict[str, torch.Tensor]:
    if example is None:
        return {}
    args, kwargs = batch_inputs(example)
    given = {**dict(zip(names, args)), **kwargs}
    missing = [n for n in names if n not in given]
    if missing:
        raise TraceError(f"the example inputs lack {missing}")
    device = model_device(model)  # two items decide size branches; values of all would fill memory
    return {n: given[n][:2].to(device) for n in names}


def trace(model: nn.Module, input_names: Sequence[str] | None = None,
          example_inputs=None) -> fx.GraphModule:
    """Trace `model` (put in eval mode) into fxquant's canonical GraphModule.

    `input_names` are the forward parameters that stay graph inputs (default: the keys of a dict
    example, else the first one); the others are fixed to their defaults, so optional masks and
    flags specialize away. `example_inputs` (a batch as a loader yields it) decides branches on
    sizes and ranks.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fxquant.trace expects an nn.Module, got {type(model).__name__}")
    model.eval()
    names = _input_names(model, input_names, example_inputs)
    example = _example_by_name(model, example_inputs, names)
    root, concrete_args, entry = model, _concrete_args(model, names), _needs_entry(model)
    if entry:
        root, concrete_args = _Entry(model, names), tuple(fx.PH for _ in names)
        example = {f"input_{i}": example[n] for i, n in enumerate(names) if n in example}
    tracer = _Tracer(example)
    try:
        with torch.no_grad():
            graph = tracer.trace(root, concrete_args=concrete_args)
    except TraceError:
        raise
    except Exception as e:
        raise TraceError(f"cannot trace {type(model).__name__}.forward: {e}") from e
    for node, name in zip(graph.find_nodes(op="placeholder") if entry else (), names):
        node.target = name  # the entry module's inputs take the model's parameter names
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    gm = decompose_sdpa(gm)
    gm = remove_identities(gm)
    return gm
