"""Structural finders over the canonical graph: what a node computes, never what it is named.

A pattern here is a predicate on a node (`is_layernorm`, `is_softmax`, ...) or a walk through
layout-only ops (reshape/permute/pad/roll/getitem, ...) that keep every value and move it around.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from fxquant import roles
from fxquant.attention_mask import apply_attention_mask

_LAYOUT_METHODS = {"view", "reshape", "permute", "transpose", "contiguous", "flatten", "unflatten",
                   "roll", "unbind", "chunk", "split", "squeeze", "unsqueeze", "expand"}
_LAYOUT_FUNCTIONS = {torch.reshape, torch.permute, torch.transpose, torch.flatten, torch.roll,
                     torch.unbind, torch.chunk, torch.split, torch.squeeze, torch.unsqueeze,
                     F.pad, torch.narrow, operator.getitem}
_MATMUL_FUNCTIONS = {operator.matmul, torch.matmul, torch.bmm}
_METADATA_ATTRS = {"shape", "dtype", "device", "ndim"}


def module_of(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def _is_module(gm, node, types) -> bool:
    return isinstance(module_of(gm, node), types)


def is_linear(gm, node) -> bool:
    return _is_module(gm, node, nn.Linear)


def is_conv(gm, node) -> bool:
    return _is_module(gm, node, nn.Conv2d)


def is_weighted(gm, node) -> bool:
    """Layers whose weight fxquant stores as integer codes."""
    return _is_module(gm, node, (nn.Linear, nn.Conv2d))


def is_layernorm(gm, node) -> bool:
    return _is_module(gm, node, nn.LayerNorm) or (
        node.op == "call_function" and node.target is F.layer_norm)


def is_softmax(gm, node) -> bool:
    return (_is_module(gm, node, nn.Softmax)
            or (node.op == "call_function" and node.target in (torch.softmax, F.softmax))
            or (node.op == "call_method" and node.target == "softmax"))


def is_gelu(gm, node) -> bool:
    return (_is_module(gm, node, nn.GELU)
            or (node.op == "call_function" and node.target is F.gelu))


def is_matmul(gm, node) -> bool:
    """An activation-by-activation product (both operands computed in the graph)."""
    is_mm = ((node.op == "call_function" and node.target in _MATMUL_FUNCTIONS)
             or (node.op == "call_method" and node.target == "matmul"))
    return is_mm and all(isinstance(a, fx.Node) and a.op != "get_attr" for a in node.args[:2])


def is_layout(node: fx.Node) -> bool:
    """Ops that only move values: the path LN -> Linear may pass through any number of them."""
    if node.op == "call_method":
        return node.target in _LAYOUT_METHODS
    if node.op == "call_function" and node.target in _LAYOUT_FUNCTIONS:
        return isinstance(node.args[0], fx.Node)
    return False


def reads_only_metadata(node: fx.Node) -> bool:
    """x.shape, x.size(), x.device ...: reads no values of x (HF code sizes its masks this way)."""
    return ((node.op == "call_function" and node.target is getattr and node.args[1] in _METADATA_ATTRS)
            or (node.op == "call_method" and node.target in ("size", "dim")))


@dataclass(frozen=True)
class LayoutPath:
    """`source` reaches `end` through layout-only ops (`ops`, source side first)."""
    source: fx.Node
    ops: tuple[fx.Node, ...]
    end: fx.Node


def trace_back(node: fx.Node) -> LayoutPath:
    """Walk from `node` up through layout ops to the node that computed the values."""
    ops = []
    cur = node
    while is_layout(cur):
        ops.append(cur)
        cur = cur.args[0]
    return LayoutPath(source=cur, ops=tuple(reversed(ops)), end=node)


def layernorm_to_linears(gm: fx.GraphModule) -> dict[fx.Node, list[tuple[LayoutPath, fx.Node]]]:
    """LayerNorm -> [layout ops]* -> Linear(s): for each LN, every Linear its output feeds."""
    found: dict[fx.Node, list[tuple[LayoutPath, fx.Node]]] = {}
    for node in gm.graph.nodes:
        if is_linear(gm, node):
            path = trace_back(node.args[0])
            if is_layernorm(gm, path.source):
                found.setdefault(path.source, []).append((path, node))
    return found


def layernorm_fanout_is_only_linears(gm: fx.GraphModule, ln: fx.Node) -> bool:
    """True when every value the LN produces reaches a Linear (nothing else reads it)."""
    stack = list(ln.users)
    while stack:
        user = stack.pop()
        if is_layout(user):
            stack.extend(user.users)
        elif not is_linear(gm, user):
            return False
    return True


_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}


def _is_add(node: fx.Node) -> bool:
    return ((node.op == "call_function" and node.target in _ADD_FUNCTIONS)
            or (node.op == "call_method" and node.target in ("add", "add_")))


def residual_adds(gm: fx.GraphModule) -> list[fx.Node]:
    """`skip + branch(skip)` where the branch holds a Linear/Conv: the ends of residual branches.

    Adds inside a branch (a decomposed GELU's `x + c*x^3`, bias or mask adds) do not count: their
    second operand is not computed from the first through a weighted layer.
    """
    found = []
    for node in gm.graph.nodes:
        operands = [a for a in node.args[:2] if isinstance(a, fx.Node)] if _is_add(node) else []
        if len(operands) == 2 and any(_through_weighted(gm, skip, branch)
                                      for skip, branch in (operands, operands[::-1])):
            found.append(node)
    return found


def _through_weighted(gm: fx.GraphModule, source: fx.Node, end: fx.Node) -> bool:
    """True when some path source -> ... -> end passes a Linear/Conv (quantized or not)."""
    downstream, stack = set(), [source]
    while stack:
        for user in stack.pop().users:
            if user not in downstream:
                downstream.add(user)
                stack.append(user)
    if end not in downstream:
        return False
    between, stack = set(), [end]
    while stack:
        for arg in stack.pop().all_input_nodes:
            if arg in downstream and arg not in between:
                between.add(arg)
                stack.append(arg)
    return any(n.meta.get(roles.WEIGHT_KEY) or is_weighted(gm, n) for n in between)


def value_sources(node: fx.Node) -> set[fx.Node]:
    """Every node whose values `node` is computed from (reading only a shape or device is not)."""
    found, stack = set(), [node]
    while stack:
        for arg in stack.pop().all_input_nodes:
            if arg not in found and not reads_only_metadata(arg):
                found.add(arg)
                stack.append(arg)
    return found


def attention_mask_add(gm: fx.GraphModule, node: fx.Node) -> tuple[fx.Node, fx.Node] | None:
    """(scores, mask) when `node` = scores + mask feeds only Softmaxes and the mask is computed
    from the model's inputs apart from the scores (a padding mask: no matmul or Linear made it).

    A constant bias (Swin's relative positions) does not count: it is part of the logits.
    """
    if not isinstance(node, fx.Node):
        return None
    is_mask_op = _is_add(node) or (node.op == "call_function" and node.target is apply_attention_mask)
    operands = [a for a in node.args[:2] if isinstance(a, fx.Node)]
    if not is_mask_op or len(operands) != 2 or not all(is_softmax(gm, u) for u in node.users):
        return None
    pairs = [tuple(operands)] if node.target is apply_attention_mask else [operands, operands[::-1]]
    for scores, mask in pairs:
        mask_sources = value_sources(mask) | {mask}
        if (any(is_matmul(gm, n) for n in value_sources(scores) | {scores})
                and any(n.op == "placeholder" for n in mask_sources)
                and not any(is_matmul(gm, n) or is_weighted(gm, n) or n.meta.get(roles.WEIGHT_KEY)
                            for n in mask_sources)):
            return scores, mask
    return None
