"""An fx tracer that also computes every traced value on example inputs.

So code that branches on sizes or ranks, unpacks a shape or asks a dtype (mask builders,
`view(*x.shape[:-1], -1)`) traces: sizes stay symbolic in the graph, only the branch the example
takes is fixed. Branches on tensor data still fail, as in plain fx. Without an example it is
plain fx.
"""
from __future__ import annotations

import functools
import operator
from typing import Any

import torch
import torch.fx as fx

# Sources of values fixed by the example's shapes, not its data: control flow may depend on them.
_STATIC_ATTRS = {"shape", "ndim", "dtype", "device"}
_STATIC_METHODS = {"size", "dim"}


def attribute(root: torch.nn.Module, target: str):
    """What a get_attr or call_module node's dotted `target` names under `root` (a parameter,
    buffer, module or constant)."""
    return functools.reduce(getattr, target.split("."), root)


class _Proxy(fx.Proxy):
    """A proxy whose dtype, rank and (shape-derived) length are known from the example."""

    def __getattr__(self, k: str) -> Any:
        value = self.tracer.values.get(self.node)
        if k in ("dtype", "ndim") and isinstance(value, torch.Tensor):
            return getattr(value, k)
        return super().__getattr__(k)

    def __len__(self) -> int:
        if self.node in self.tracer.static:
            return len(self.tracer.values[self.node])
        return super().__len__()

    def __setitem__(self, index, value) -> None:
        """In-place writes (index tables built from sizes) are recorded like any call."""
        self.tracer.create_proxy("call_function", operator.setitem, (self, index, value), {})

    def _static_number(self, cast):
        """A size computed from shapes, as a Python number (int(), range(), interpolate sizes):
        fixed to the example's value, as a branch on it is."""
        if self.node in self.tracer.static:
            return cast(self.tracer.values[self.node])
        raise fx.proxy.TraceError(f"cannot use {self.node.name}, a traced tensor value, as a Python number")

    def __int__(self) -> int:
        return self._static_number(int)

    def __index__(self) -> int:
        return self._static_number(int)

    def __float__(self) -> float:
        return self._static_number(float)


class ValueTracer(fx.Tracer):
    proxy_buffer_attributes = True  # a buffer sliced by a traced size (position ids) stays in the graph

    def __init__(self, example: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.example = example or {}
        self.values: dict[fx.Node, Any] = {}    # node -> its value on the example inputs
        self.static: set[fx.Node] = set()        # nodes whose value depends on shapes only
        self._evaluating = False

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _Proxy(node, self)

    def create_proxy(self, kind, target, args, kwargs, *rest, **kw):
        proxy = super().create_proxy(kind, target, args, kwargs, *rest, **kw)
        if self.example:
            try:
                self.values[proxy.node] = self._evaluate(kind, target, args, kwargs)
            except Exception:
                return proxy  # no value: control flow on this node fails as in plain fx
            inputs = proxy.node.all_input_nodes
            if (target is getattr and args[1] in _STATIC_ATTRS) or (
                    kind == "call_method" and target in _STATIC_METHODS) or (
                    inputs and all(n in self.static for n in inputs)
                    and not isinstance(self.values[proxy.node], torch.Tensor)):
                self.static.add(proxy.node)
        return proxy

    def _evaluate(self, kind, target, args, kwargs):
        if kind == "placeholder":
            return self.example[target]
        args, kwargs = fx.node.map_aggregate(
            (args, kwargs), lambda a: self.values[a.node] if isinstance(a, fx.Proxy) else a)
        self._evaluating = True
        try:
            if kind == "get_attr":
                return attribute(self.root, target)
            if kind == "call_function":
                return target(*args, **kwargs)
            if kind == "call_method":
                return getattr(args[0], target)(*args[1:], **kwargs)
            return self.submodule(target).forward(*args, **kwargs)
        finally:
            self._evaluating = False

    def submodule(self, target: str) -> torch.nn.Module:
        """The module a call_module node names (subclasses may trace modules root does not hold)."""
        return self.root.get_submodule(target)

    def trace(self, root, concrete_args=None) -> fx.Graph:
        """The graph; the example's values are dropped once it is traced: the proxies and the
        tracer refer to each other, so they would hold every value until a full garbage collection
        (a few hundred MB for a ViT-Base)."""
        try:
            return super().trace(root, concrete_args)
        finally:
            self.values.clear()

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        return attr_val if self._evaluating else super().getattr(attr, attr_val, parameter_proxy_cache)

    def to_bool(self, obj: fx.Proxy) -> bool:
        if obj.node in self.static:
            return bool(self.values[obj.node])
        return super().to_bool(obj)

    def iter(self, obj: fx.Proxy):
        if obj.node in self.static:
            return iter([obj[i] for i in range(len(self.values[obj.node]))])
        return super().iter(obj)
