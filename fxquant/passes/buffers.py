"""Tensors and modules a pass owns: a buffer of the GraphModule read by a get_attr node, so that
it moves with the module and export keeps it as an initializer; a copy of a module a pass changes,
so that the user's model stays as it was."""
from __future__ import annotations

import copy

import torch
import torch.fx as fx
from torch import nn

from fxquant import patterns
from fxquant.errors import FxQuantError


def buffer_node(gm: fx.GraphModule, name: str, value: torch.Tensor) -> fx.Node:
    """Register `value` as buffer `name` of gm and return a get_attr node reading it (inserted
    where the graph's insertion point is)."""
    gm.register_buffer(name, value)
    return gm.graph.get_attr(name)


def own_copy(gm: fx.GraphModule, node: fx.Node, what: str) -> nn.Module:
    """The module `node` calls, copied into gm so that folding leaves the user's model as it was."""
    calls = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == node.target]
    if len(calls) != 1:
        raise FxQuantError(f"{what} {node.target} is called {len(calls)} times: folding scales into "
                           "it would change every call")
    module = copy.deepcopy(patterns.module_of(gm, node))
    gm.set_submodule(node.target, module)
    return module
