"""Dropout(x) -> x, Identity(x) -> x: inference graphs carry no no-op nodes."""
from __future__ import annotations

import torch.fx as fx
import torch.nn.functional as F
from torch import nn

_NOOP_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_NOOP_FUNCTIONS = (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d)


def _is_noop(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), _NOOP_MODULES)
    return node.op == "call_function" and node.target in _NOOP_FUNCTIONS


def remove_identities(gm: fx.GraphModule) -> fx.GraphModule:
    for node in list(gm.graph.nodes):
        if _is_noop(gm, node):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm
