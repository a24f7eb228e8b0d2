"""A graph cut at its residual adds into pieces that run alone, for block-wise refinement.

Block i holds the nodes after cut i-1 up to cut i, where the cuts are every k-th residual add
(`patterns.residual_adds`) and the last block ends at the graph output. `block_module` turns a
block into a GraphModule (sharing the parent's buffers) whose inputs are the values the block
reads from before it (graph inputs included) and whose outputs are the values read after it.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch.fx as fx

from fxquant import patterns
from fxquant.errors import FxQuantError


@dataclass(frozen=True)
class Block:
    nodes: tuple[fx.Node, ...]    # in graph order, placeholders and get_attrs excluded
    inputs: tuple[fx.Node, ...]   # values from before the block it reads; defaulted ones last
    outputs: tuple[fx.Node, ...]  # its values read after it (or returned by the graph)


def split_blocks(gm: fx.GraphModule, adds_per_block: int = 1) -> list[Block]:
    """The graph cut after every `adds_per_block`-th residual add."""
    if adds_per_block < 1:
        raise FxQuantError(f"adds_per_block must be at least 1, got {adds_per_block}")
    cuts = set(patterns.residual_adds(gm)[adds_per_block - 1::adds_per_block])
    groups, current = [], []
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "get_attr", "output"):
            continue
        current.append(node)
        if node in cuts:
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return [_block(group) for group in groups]


def _block(nodes: list[fx.Node]) -> Block:
    members = set(nodes)
    inputs = {a: None for n in nodes for a in n.all_input_nodes
              if a not in members and a.op != "get_attr"}
    outputs = [n for n in nodes if any(u not in members for u in n.users)]
    return Block(tuple(nodes), tuple(sorted(inputs, key=_has_default)), tuple(outputs))


def _has_default(value: fx.Node) -> bool:
    return value.op == "placeholder" and bool(value.args)


def block_module(gm: fx.GraphModule, block: Block) -> fx.GraphModule:
    """`block` as a GraphModule: forward(*inputs) -> outputs (a tuple), on gm's own tensors.

    Inputs that are graph inputs keep their names and defaults, so callers pass them by name.
    """
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for value in block.inputs:
        env[value] = graph.placeholder(value.name, default_value=value.args[0]
                                       if _has_default(value) else inspect.Signature.empty)
    for node in block.nodes:
        for arg in node.all_input_nodes:
            if arg.op == "get_attr" and arg not in env:
                env[arg] = graph.node_copy(arg)
        env[node] = graph.node_copy(node, lambda a: env[a])
    graph.output(tuple(env[n] for n in block.outputs))
    return fx.GraphModule(gm, graph, "Block")
