"""Timm-aware tracing into the canonical GraphModule every fxquant pass works on.

Canonical means: leaf calls for the layers quantization cares about (Linear, Conv, LayerNorm,
GELU, Softmax), `scaled_dot_product_attention` written out as matmul -> scale -> mask -> softmax
-> matmul, and no Dropout/Identity nodes (inference semantics).

Models whose forward takes `**kwargs` or is decorated (Hugging Face) are traced through a thin
entry module that calls them with the named inputs only; example inputs let code that branches on
sizes trace (`value_tracer`).
"""
from __future__ import annotations

import contextlib
import inspect
import types
from typing import Sequence

import torch
import torch.fx as fx
from torch import nn

from fxquant.calibrate import model_device
from fxquant.data import batch_inputs
from fxquant.errors import FxQuantError
from fxquant.multihead_attention import SplitMultiheadAttention
from fxquant.passes.decompose_sdpa import decompose_sdpa
from fxquant.passes.functional_linear import functional_linears_as_modules
from fxquant.passes.remove_identities import remove_identities
from fxquant.value_tracer import ValueTracer, attribute

LEAF_TYPES = (nn.Linear, nn.Conv2d, nn.LayerNorm, nn.GELU, nn.Softmax, nn.Dropout, nn.Identity)


class TraceError(FxQuantError):
    """The model cannot be symbolically traced; the message names the innermost failing module."""


class _Tracer(ValueTracer):
    """Leaves are the LEAF_TYPES and torch.nn modules without children; an nn.MultiheadAttention
    is traced as its written-out equivalent (SplitMultiheadAttention), whose Linears live beside
    the model, not in it; a library function fed a weight matrix is traced into."""

    def __init__(self, example, root: nn.Module):
        super().__init__(example)
        self.splits = {m: SplitMultiheadAttention(m) for m in root.modules()
                       if isinstance(m, nn.MultiheadAttention)}  # built before parameters are proxied
        paths = {m: path for path, m in root.named_modules()}
        self.substitute_paths: dict[nn.Module, str] = {   # modules the model does not hold
            module: f"{paths[mha]}.{name}".rstrip(".")
            for mha, split in self.splits.items() for name, module in split.named_modules()}
        self.substitutes = {path: module for module, path in self.substitute_paths.items()}

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        """torch.nn modules that hold other modules (TransformerEncoderLayer, MultiheadAttention)
        are traced into, so the Linears inside them are seen; other torch.nn modules are leaves."""
        if isinstance(m, LEAF_TYPES):
            return True
        return super().is_leaf_module(m, qualname) and next(m.children(), None) is None

    def path_of_module(self, mod: nn.Module) -> str:
        return self.substitute_paths.get(mod) or super().path_of_module(mod)

    def submodule(self, target: str) -> nn.Module:
        return self.substitutes.get(target) or super().submodule(target)

    def create_proxy(self, kind, target, args, kwargs, *rest, **kw):
        if kind == "call_function" and self._hides_a_weight(target, args, kwargs):
            return target(*args, **kwargs)  # a library function fx.wrap keeps whole: trace into it
        return super().create_proxy(kind, target, args, kwargs, *rest, **kw)

    def _hides_a_weight(self, target, args, kwargs) -> bool:
        """A Python function from outside torch given a weight matrix (torchvision's Swin
        attention); known from the example's values, so only when tracing with an example."""
        if not isinstance(target, types.FunctionType) or target.__module__.split(".")[0] in ("torch", "fxquant"):
            return False
        weights = []
        fx.node.map_aggregate((args, kwargs), lambda a: weights.append(a) if isinstance(a, fx.Proxy)
                              and a.node.op == "get_attr" else None)
        return any(getattr(self.values.get(w.node), "ndim", 0) >= 2 for w in weights)

    def call_module(self, m, forward, args, kwargs):
        if m in self.splits:
            m = self.splits[m]
            forward = m.forward
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


def _drop_entry_scope(graph: fx.Graph, names: list[str]) -> None:
    """Inputs and module scopes as the user's model names them, not as the entry module does."""
    for node, name in zip(graph.find_nodes(op="placeholder"), names):
        node.target = name
    for node in graph.nodes:
        stack = node.meta.get("nn_module_stack", {})
        node.meta["nn_module_stack"] = {
            key.removeprefix("model."): (path.removeprefix("model."), kind)
            for key, (path, kind) in stack.items() if path != "model"}


def _attributes(tracer: _Tracer, graph: fx.Graph) -> dict[str, object]:
    """What the graph's call_module and get_attr nodes name, substitutes included."""
    return {n.target: tracer.submodule(n.target) if n.op == "call_module"
            else attribute(tracer.root, n.target)
            for n in graph.nodes if n.op in ("call_module", "get_attr")}


@contextlib.contextmanager
def _attributes_kept(root: nn.Module):
    """Leave the user's modules as they were: tracing runs their forward, and code that caches
    a size on its module (Hugging Face Swin's window size) would keep a traced value there."""
    saved = [(m, dict(m.__dict__)) for m in root.modules()]
    try:
        yield
    finally:
        for module, attributes in saved:
            module.__dict__.clear()
            module.__dict__.update(attributes)


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
    tracer = _Tracer(example, root)
    with _attributes_kept(root):
        try:
            with torch.no_grad():
                graph = tracer.trace(root, concrete_args=concrete_args)
        except TraceError:
            raise
        except Exception as e:
            raise TraceError(f"cannot trace {type(model).__name__}.forward: {e}") from e
        if entry:
            _drop_entry_scope(graph, names)
        gm = fx.GraphModule(_attributes(tracer, graph), graph, type(model).__name__)
    gm = decompose_sdpa(gm)
    gm = functional_linears_as_modules(gm)
    gm = remove_identities(gm)
    return gm
