"""x -> Observer(x) -> quantized consumers, for every activation the roles pass marked.

One observer per tensor, shared by all its quantized consumers (q, k, v Linears fed by one LN
share one). Consumers that are not quantized keep reading the original value, except for a
LayerNorm input (fully quantized): that is the residual stream, quantized for every reader.
"""
from __future__ import annotations

import torch.fx as fx

from fxquant import roles
from fxquant.config import FULLY_QUANTIZED, QuantConfig
from fxquant.errors import FxQuantError
from fxquant.observers.observer import Observer
from fxquant.passes.annotate_roles import quantized_inputs

OBSERVED_KEY = "fxquant_observed"  # meta on an observer node: the node it observes


def insert_observers(gm: fx.GraphModule, config: QuantConfig) -> fx.GraphModule:
    graph = gm.graph
    consumers: dict[fx.Node, list[fx.Node]] = {}
    fully_quantized = bool(config.options.get(FULLY_QUANTIZED))
    for node in graph.nodes:
        for value in quantized_inputs(gm, node, fully_quantized):
            consumers.setdefault(value, []).append(node)
    for value, users in consumers.items():
        role = value.meta[roles.META_KEY]
        if role not in config.roles:
            raise FxQuantError(f"recipe {config.name!r} does not say how to quantize role {role!r}")
        spec = config.roles[role]
        if role == roles.PRE_LAYERNORM:
            users = list(value.users)
        name = f"observer_{value.name}"
        gm.add_submodule(name, Observer(role, per_channel=spec.per_channel))
        with graph.inserting_after(value):
            obs = graph.call_module(name, (value,))
        obs.meta[OBSERVED_KEY] = value
        obs.meta[roles.META_KEY] = role
        for user in users:
            user.replace_input_with(value, obs)
    graph.lint()
    gm.recompile()
    return gm


def observer_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    return [n for n in gm.graph.nodes if OBSERVED_KEY in n.meta]
