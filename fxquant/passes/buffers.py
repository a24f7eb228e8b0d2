"""Tensors a pass adds to the graph: a buffer of the GraphModule read by a get_attr node, so that
it moves with the module and export keeps it as an initializer."""
from __future__ import annotations

import torch
import torch.fx as fx


def buffer_node(gm: fx.GraphModule, name: str, value: torch.Tensor) -> fx.Node:
    """Register `value` as buffer `name` of gm and return a get_attr node reading it (inserted
    where the graph's insertion point is)."""
    gm.register_buffer(name, value)
    return gm.graph.get_attr(name)
