"""F.linear(x, weight, bias) on a model's parameter -> a Linear module call.

Code that passes a Linear's weight to a function (torchvision's Swin hands `qkv.weight` to its
`shifted_window_attention`) computes a Linear that no pass would see, since fxquant quantizes
Linear modules. The Linear made here shares the parameter (no copy); a bias computed in the graph
(Swin V2 zeroes the key bias of a clone) is added after a bias-free Linear.
"""
from __future__ import annotations

import operator

import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from fxquant.value_tracer import attribute


def _parameter(gm: fx.GraphModule, node) -> nn.Parameter | None:
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    value = attribute(gm, node.target)
    return value if isinstance(value, nn.Parameter) else None


def functional_linears_as_modules(gm: fx.GraphModule) -> fx.GraphModule:
    for node in list(gm.graph.find_nodes(op="call_function", target=F.linear)):
        x, weight_node, bias_node = (list(node.args) + [node.kwargs.get("bias")])[:3]
        weight = _parameter(gm, weight_node)
        if weight is None or weight.dim() != 2:
            continue
        bias = _parameter(gm, bias_node)
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
        linear.weight = weight
        if bias is not None:
            linear.bias = bias
        path = f"{weight_node.target}_linear"
        gm.add_submodule(path, linear)
        with gm.graph.inserting_before(node):
            out = gm.graph.call_module(path, (x,))
            if bias is None and bias_node is not None:
                out = gm.graph.call_function(operator.add, (out, bias_node))
        for new in (out, *out.all_input_nodes):
            if new.meta.get("nn_module_stack") is None:
                new.meta["nn_module_stack"] = node.meta.get("nn_module_stack", {})
        node.replace_all_uses_with(out)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    return gm
