"""Quantized graph -> the float graph it approximates: quantizer ops bypassed, float weights back.

It is the model after reparameterization (folds are exact in float) with the weights the integer
codes were rounded from (their annotation's `float_weight`), so refinements (recon, cpt-v) measure the
quantized graph against it. The quantized graph is left untouched; node names are kept.
"""
from __future__ import annotations

import copy

import torch.fx as fx

from fxquant import annotation
from fxquant.errors import FxQuantError
from fxquant.quantizers.custom_op import is_quant_op, quantized_value
from fxquant.value_tracer import attribute


def _is_fxquant_op(node: fx.Node) -> bool:
    return node.op == "call_function" and is_quant_op(node.target)


def is_activation_quantizer(node: fx.Node) -> bool:
    """An fxquant op the quantize pass emitted for an activation (its role is on the node)."""
    return _is_fxquant_op(node) and annotation.of(node).role is not None


def float_reference(gm: fx.GraphModule) -> fx.GraphModule:
    graph = copy.deepcopy(gm.graph)
    weights = {}
    for node in list(graph.nodes):
        if is_activation_quantizer(node):
            node.replace_all_uses_with(quantized_value(node))
            graph.erase_node(node)
        elif annotation.of(node).weighted and node.op == "call_function":
            if annotation.of(node).float_weight is None:
                raise FxQuantError(f"{node.name} carries no float weight: quantize the model with "
                                   "this version of fxquant before refining it")
            weights[f"{node.name}_float_weight"] = annotation.of(node).float_weight
            with graph.inserting_before(node):
                node.update_arg(1, graph.get_attr(f"{node.name}_float_weight"))
    graph.eliminate_dead_code(lambda n: not (n.op == "get_attr" or _is_fxquant_op(n)))
    root = {n.target: weights[n.target] if n.target in weights else attribute(gm, n.target)
            for n in graph.nodes if n.op in ("get_attr", "call_module")}
    return fx.GraphModule(root, graph, "FloatReference")
