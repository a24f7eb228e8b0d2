"""A graph cut at its residual adds into pieces that run alone, for block-wise refinement.

Block i holds the nodes after cut i-1 up to cut i, where the cuts are every k-th residual add
(`patterns.residual_adds`) and the last block ends at the graph output. `block_module` turns a
block into a GraphModule (sharing the parent's buffers) whose inputs are the values the block
reads from before it (graph inputs included) and whose outputs are the values read after it.
Values the graph computes by functions alone from its inputs or from values' metadata (sizes,
padding masks, shapes) do not cross cuts: each block that reads one computes it again, so a block
runs on any subset of samples (reconstruction's random minibatches).
`block_computing` is the part of a graph that computes given values; `run_block` runs a block on
cached calibration tensors, chunk by chunk, and `drop_unneeded` keeps a cache to what the blocks
still to run read.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from typing import Iterable, Iterator

import torch
import torch.fx as fx

from fxquant import annotation, patterns
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
    recomputed = _recomputable(gm)
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    groups = [_with_recomputed(group, recomputed, order) for group in groups]
    later = [set().union(*groups[i + 1:]) for i in range(len(groups))]
    return [_block(group, recomputed, after) for group, after in zip(groups, later)]


def _recomputable(gm: fx.GraphModule) -> set[fx.Node]:
    """The values a block can compute again from what it holds: made by functions alone (no
    module, no quantizer) from graph inputs, constants or the metadata of any value (an input's
    size, a padding mask, an activation's shape holding the batch size)."""
    found: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if (node.op in ("call_function", "call_method") and annotation.of(node).role is None
                and (patterns.reads_only_metadata(node)
                     or all(a.op in ("placeholder", "get_attr") or a in found
                            for a in node.all_input_nodes))):
            found.add(node)
    return found


def _with_recomputed(group: list[fx.Node], recomputed: set[fx.Node],
                     order: dict[fx.Node, int]) -> list[fx.Node]:
    """`group` with the recomputed values it reads from earlier blocks (and theirs) put first."""
    members = set(group)
    needed: set[fx.Node] = set()
    stack = [a for n in group for a in n.all_input_nodes if a in recomputed and a not in members]
    while stack:
        value = stack.pop()
        if value not in needed:
            needed.add(value)
            stack += [a for a in value.all_input_nodes if a in recomputed and a not in members]
    return sorted(needed, key=order.__getitem__) + group


def _block(nodes: list[fx.Node], recomputed: set[fx.Node] = frozenset(),
           later: set[fx.Node] = frozenset()) -> Block:
    """`nodes` as a block: its outputs are the values read after it (by a later block, its
    recomputed values included, or the graph output) that later blocks do not compute again."""
    members = set(nodes)
    inputs = {a: None for n in nodes for a in n.all_input_nodes
              if a not in members and a.op != "get_attr"}
    outputs = [n for n in nodes if any(u.op == "output" for u in n.users) or (
        n not in recomputed and any(u not in members or u in later for u in n.users))]
    return Block(tuple(nodes), tuple(sorted(inputs, key=_has_default)), tuple(outputs))


def block_computing(gm: fx.GraphModule, values: Iterable[fx.Node]) -> Block:
    """The part of `gm` that computes `values` from the graph inputs, as a block returning them."""
    values = tuple(values)
    needed, stack = set(values), list(values)
    while stack:
        for arg in stack.pop().all_input_nodes:
            if arg not in needed:
                needed.add(arg)
                stack.append(arg)
    nodes = [n for n in gm.graph.nodes if n in needed and n.op not in ("placeholder", "get_attr")]
    inputs = [n for n in gm.graph.nodes if n in needed and n.op == "placeholder"]
    return replace(_block(nodes), inputs=tuple(sorted(inputs, key=_has_default)), outputs=values)


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


CHUNK = 128  # samples per forward when running a block on cached tensors


class PerChunk(tuple):
    """A block output that is not a batch of samples (a shape holding the batch size, a mask
    shared by the batch), one value per chunk: the next block gets, with each chunk of tensors,
    the value computed from that chunk."""


def _batched(value, samples: int) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim > 0 and len(value) == samples


def _samples(block: Block, cache: dict[str, object]) -> int:
    return next(len(cache[v.name]) for v in block.inputs
                if v.name in cache and isinstance(cache[v.name], torch.Tensor))


@torch.no_grad()
def block_chunks(module: fx.GraphModule, block: Block, cache: dict[str, object],
                 chunk: int = CHUNK) -> Iterator[tuple]:
    """`module` (block's module) on the cached inputs, `chunk` samples at a time: its outputs."""
    names = [v.name for v in block.inputs if v.name in cache]
    missing = [v.name for v in block.inputs if v.name not in cache and v.op != "placeholder"]
    if missing:
        raise FxQuantError(f"block inputs {missing} are not cached: cannot run the block alone")
    for k, i in enumerate(range(0, _samples(block, cache), chunk)):
        yield module(**{n: cache[n][k] if isinstance(cache[n], PerChunk)
                        else cache[n][i:i + chunk] if isinstance(cache[n], torch.Tensor)
                        else cache[n] for n in names})


def run_block(module: fx.GraphModule, block: Block, cache: dict[str, object],
              chunk: int = CHUNK) -> dict[str, object]:
    """The block's outputs for every cached sample, by node name: batches of samples as whole
    tensors, other values `PerChunk`."""
    total = _samples(block, cache)
    sizes = [min(chunk, total - i) for i in range(0, total, chunk)]
    outs = list(block_chunks(module, block, cache, chunk))
    values = {}
    for k, o in enumerate(block.outputs):
        parts = [out[k] for out in outs]
        batched = all(_batched(part, n) for part, n in zip(parts, sizes))
        values[o.name] = torch.cat(parts) if batched else PerChunk(parts)
    return values


def drop_unneeded(cache: dict[str, torch.Tensor], later: list[Block]) -> None:
    """Free the cached values no block in `later` reads."""
    needed = {v.name for block in later for v in block.inputs}
    for name in set(cache) - needed:
        del cache[name]
