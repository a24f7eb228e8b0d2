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

from fxquant import annotation
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


_PRODUCT_FUNCTIONS = {F.linear, F.bilinear, torch.addmm, torch.baddbmm, torch.mm, torch.einsum,
                      F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
                      F.conv_transpose3d} | _MATMUL_FUNCTIONS
_PRODUCT_METHODS = {"matmul", "mm", "bmm", "addmm", "baddbmm"}
_LOOKUP_MODULES = (nn.Embedding, nn.EmbeddingBag)


def product_kind(gm, node) -> str | None:
    """What kind of product `node` computes (a Linear, a matmul, an einsum, a Conv1d...), the
    operations a quantizer makes integer; None for everything else (lookups, norms, adds)."""
    module = module_of(gm, node)
    if module is not None:
        weight = getattr(module, "weight", None)
        is_product = isinstance(weight, torch.Tensor) and weight.dim() >= 2 and not isinstance(
            module, _LOOKUP_MODULES)
        return type(module).__name__ if is_product else None
    if node.op == "call_function" and node.target in _PRODUCT_FUNCTIONS:
        return "matmul" if node.target in _MATMUL_FUNCTIONS else node.target.__name__
    if node.op == "call_method" and node.target in _PRODUCT_METHODS:
        return "matmul" if node.target == "matmul" else node.target
    return None


def scope(node: fx.Node) -> tuple[tuple[str, type], ...]:
    """The modules whose forward computed `node`, outermost first, as (path, class): the path as
    the user's model.named_modules() gives it (a call_module node's own module is the last)."""
    return tuple(node.meta.get("nn_module_stack", {}).values())


def scope_paths(node: fx.Node) -> list[str]:
    """The module paths of `scope(node)`, outermost first."""
    return [path for path, _ in scope(node)]


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


@dataclass(frozen=True)
class LayerNormReach:
    """Where a LayerNorm's output goes through layout ops: its observers, the Linears it feeds,
    the pads on the way, and the other readers of the float value or of an observer's output."""
    observers: tuple[fx.Node, ...]
    linears: tuple[fx.Node, ...]
    pads: tuple[fx.Node, ...]
    float_readers: tuple[fx.Node, ...]
    quantized_readers: tuple[fx.Node, ...]


def layernorm_reach(gm: fx.GraphModule, ln: fx.Node) -> LayerNormReach:
    """LayerNorm -> [layout ops | observer]* -> Linear(s), and every other reader on the way:
    what a fold of the LayerNorm's affine into its Linears (or a rotation) must account for."""
    found = {kind: [] for kind in ("observers", "linears", "pads", "float_readers",
                                   "quantized_readers")}
    seen: set[fx.Node] = set()
    stack = [(user, False) for user in ln.users]
    while stack:
        node, quantized = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if annotation.of(node).observes is not None:
            found["observers"].append(node)
            stack.extend((user, True) for user in node.users)
        elif is_linear(gm, node):
            found["linears"].append(node)
        elif is_layout(node):
            if node.target is F.pad:
                found["pads"].append(node)
            stack.extend((user, quantized) for user in node.users)
        elif not reads_only_metadata(node):
            found["quantized_readers" if quantized else "float_readers"].append(node)
    return LayerNormReach(**{kind: tuple(nodes) for kind, nodes in found.items()})


_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}


def _is_add(node: fx.Node) -> bool:
    return ((node.op == "call_function" and node.target in _ADD_FUNCTIONS)
            or (node.op == "call_method" and node.target in ("add", "add_")))


def residual_adds(gm: fx.GraphModule) -> list[fx.Node]:
    """`skip + branch(skip)` where the branch holds a Linear/Conv: the ends of residual branches.

    Adds inside a branch (a decomposed GELU's `x + c*x^3`, bias adds) do not count: their second
    operand is not computed from the first through a weighted layer. Attention padding mask adds
    do not count either, though where the layers share one mask the second layer's scores are
    computed from it through the first layer's Linears.
    """
    found = []
    for node in gm.graph.nodes:
        operands = [a for a in node.args[:2] if isinstance(a, fx.Node)] \
            if _is_add(node) and attention_mask_add(gm, node) is None else []
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
    return any(annotation.of(n).weighted or is_weighted(gm, n) for n in between)


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
                and not any(is_matmul(gm, n) or is_weighted(gm, n) or annotation.of(n).weighted
                            for n in mask_sources)):
            return scores, mask
    return None
