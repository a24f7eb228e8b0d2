"""x -> Observer(x) -> quantized consumers, for every activation the roles pass marked (each
consumer's annotated `quantized_inputs`, with the role annotated on the value).

One observer per tensor, shared by all its quantized consumers (q, k, v Linears fed by one LN
share one). Consumers that are not quantized keep reading the original value, except for a
LayerNorm input (fully quantized): that is the residual stream, quantized for every reader.
"""
from __future__ import annotations

import torch.fx as fx

from fxquant import annotation, roles
from fxquant.config import QuantConfig
from fxquant.errors import FxQuantError
from fxquant.observers.observer import Observer
from fxquant.passes.contract import graph_pass, observed, roles_annotated


@graph_pass(requires=(roles_annotated,), ensures=(observed,))
def insert_observers(gm: fx.GraphModule, config: QuantConfig) -> fx.GraphModule:
    graph = gm.graph
    consumers: dict[fx.Node, list[fx.Node]] = {}
    for node in graph.nodes:
        for value in annotation.of(node).quantized_inputs:
            consumers.setdefault(value, []).append(node)
    for value, users in consumers.items():
        role = annotation.of(value).role
        if role not in config.roles:
            raise FxQuantError(f"recipe {config.name!r} does not say how to quantize role {role!r}")
        spec = config.roles[role]
        if role == roles.PRE_LAYERNORM:
            users = list(value.users)
        name = f"observer_{value.name}"
        gm.add_submodule(name, Observer(role, per_channel=spec.per_channel))
        with graph.inserting_after(value):
            obs = graph.call_module(name, (value,))
        annotation.update(obs, role=role, observes=value)
        for user in users:
            user.replace_input_with(value, obs)
    graph.lint()
    gm.recompile()
    return gm

