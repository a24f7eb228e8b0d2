"""Mark every tensor fxquant will quantize with its role, found by graph structure.

Activations: each input of a Linear/Conv and both operands of an activation matmul; the role
comes from what computed the values (LayerNorm, Softmax, GELU) looking back through layout ops.
With `fully_quantized`, the inputs of LayerNorm, Softmax and GELU are marked too (pre_* roles,
which win over any other role of the same tensor). Weights: every Linear/Conv node is marked too.
Everything lands in the node's annotation (`fxquant/annotation.py`): `role` (of the tensor the
node outputs), `weighted` (the node's weight) and `quantized_inputs` (on each consumer).
"""
from __future__ import annotations

import torch.fx as fx

from fxquant import annotation, patterns, roles
from fxquant.errors import FxQuantError
from fxquant.passes.contract import graph_pass, roles_annotated


_PRE_ROLES = ((patterns.is_layernorm, roles.PRE_LAYERNORM), (patterns.is_softmax, roles.PRE_SOFTMAX),
              (patterns.is_gelu, roles.PRE_GELU))


def _pre_input(gm, node: fx.Node) -> tuple[fx.Node, str] | None:
    """(input, role) of a float-only op (LayerNorm, Softmax, GELU). Behind a padding mask the
    Softmax's logits are the scores before the mask add (patterns.attention_mask_add), read by the
    add: the mask (-3.4e38 where padded) would otherwise set the pre-Softmax grid."""
    masked = patterns.attention_mask_add(gm, node)
    if masked is not None:
        return masked[0], roles.PRE_SOFTMAX
    role = next((role for is_op, role in _PRE_ROLES if is_op(gm, node)), None)
    if role is None or (role == roles.PRE_SOFTMAX and patterns.attention_mask_add(gm, node.args[0])):
        return None
    return node.args[0], role


def _activation_role(gm, value: fx.Node, consumer: fx.Node) -> str:
    pre = _pre_input(gm, consumer)
    if pre is not None:
        return pre[1]
    source = patterns.trace_back(value).source
    if source.op == "placeholder":
        return roles.MODEL_INPUT
    if patterns.is_layernorm(gm, source):
        return roles.POST_LAYERNORM
    if patterns.is_softmax(gm, source):
        return roles.POST_SOFTMAX
    if patterns.is_gelu(gm, source):
        return roles.POST_GELU
    return roles.LINEAR_INPUT if patterns.is_weighted(gm, consumer) else roles.MATMUL_INPUT


def quantized_inputs(gm: fx.GraphModule, node: fx.Node, fully_quantized: bool = False) -> list[fx.Node]:
    """The activation inputs of `node` that get quantized."""
    if patterns.is_weighted(gm, node):
        return [node.args[0]]
    if patterns.is_matmul(gm, node):
        return list(node.args[:2])
    pre = _pre_input(gm, node) if fully_quantized else None
    return [pre[0]] if pre is not None else []


@graph_pass(ensures=(roles_annotated,))
def annotate_roles(gm: fx.GraphModule, fully_quantized: bool = False) -> fx.GraphModule:
    for node in gm.graph.nodes:
        annotation.clear(node)
    n_weighted = 0
    for node in gm.graph.nodes:
        if patterns.is_weighted(gm, node):
            annotation.update(node, weighted=True)
            n_weighted += 1
        inputs = quantized_inputs(gm, node, fully_quantized)
        if inputs:
            annotation.update(node, quantized_inputs=tuple(inputs))
        for value in inputs:
            role = _activation_role(gm, value, node)
            if role in roles.FULLY_QUANTIZED_ROLES or annotation.of(value).role is None:
                annotation.update(value, role=role)
    if n_weighted == 0:
        raise FxQuantError(f"{type(gm).__name__} has no Linear or Conv2d layer: nothing to quantize")
    return gm


def role_table(gm: fx.GraphModule) -> list[tuple[str, str]]:
    """(tensor name, role) in graph order, for inspection and tests; weights as `<node>.weight`."""
    table = []
    for n in gm.graph.nodes:
        if annotation.of(n).weighted:
            table.append((f"{n.name}.weight", roles.WEIGHT))
        if annotation.of(n).role is not None:
            table.append((n.name, annotation.of(n).role))
    return table
