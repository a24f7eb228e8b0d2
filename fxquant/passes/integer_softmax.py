"""Softmax over quantized logits  ==>  integer softmax (quantizers/int_softmax.py).

A Softmax over the last axis qualifies when its input comes from a uniform quantizer per tensor
and its only reader is the post-Softmax quantizer:
- the recipe's "lis" quantizer (log2 levels, ≤ 4 bits), every reader of it an A·V matmul: the
  Softmax, the quantizer and each A·V become one `lis_attention` (Log-Int-Softmax fused with A·V);
- a uniform quantizer: the Softmax becomes `int_softmax` (i-exp), the quantizer stays.
Other Softmaxes (log√2 or TanQ attention, A read elsewhere) stay float, with the reason in the
rewrite report (`passes/rewrite.py`); the ONNX audit lists them too.
Behind a padding mask (patterns.attention_mask_add) the quantized logits are the scores before
the mask add, and the mask becomes the integer op's `mask` input (quantizers/int_softmax.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.fx as fx

from fxquant import patterns, roles
from fxquant.config import QuantConfig
from fxquant.passes.contract import graph_pass, quantized
from fxquant.passes.rewrite import RewriteRule, apply
from fxquant.quantizers.int_softmax import ExpConstants, int_softmax, lis_attention
from fxquant.quantizers.log2 import log_quant
from fxquant.quantizers.uniform import fake_quant

FAKE_QUANT = fake_quant.overload
LOG_QUANT = log_quant.overload


def _over_last_axis(gm: fx.GraphModule, node: fx.Node) -> bool:
    module = patterns.module_of(gm, node)
    dim = module.dim if module is not None else (node.args[1] if len(node.args) > 1
                                                 else node.kwargs.get("dim"))
    return dim == -1


def _logit_quantizer(gm: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    if node.op == "call_function" and node.target is FAKE_QUANT:
        return node if gm.get_buffer(fake_quant.arguments(node).scale.target).numel() == 1 else None
    return None


def _av_products(gm: fx.GraphModule, attention: fx.Node) -> list[fx.Node] | None:
    products = list(attention.users)
    ok = all(patterns.is_matmul(gm, p) and p.args[0] is attention and p.args[1] is not attention
             for p in products)
    return products if ok else None


@dataclass(frozen=True)
class _Candidate:
    softmax: fx.Node
    logits_in: fx.Node           # what the Softmax reads (the mask add behind a padding mask)
    mask: tuple                  # () or (mask,)
    logits: fx.Node | None       # the per-tensor uniform quantizer of the scores


def _pattern(gm: fx.GraphModule, node: fx.Node) -> _Candidate | None:
    if not patterns.is_softmax(gm, node):
        return None
    logits_in = node.args[0]
    masked = patterns.attention_mask_add(gm, logits_in)
    scores, *mask = masked if masked is not None else (logits_in,)
    return _Candidate(node, logits_in, tuple(mask), _logit_quantizer(gm, scores))


def _checker(lis: bool):
    def check(gm: fx.GraphModule, match: _Candidate) -> str | None:
        users = list(match.softmax.users)
        if match.logits is None:
            return "its logits are not quantized by a per-tensor uniform quantizer"
        if not _over_last_axis(gm, match.softmax):
            return "it is not over the last axis"
        if len(users) != 1:
            return "its output has more than one reader"
        post = users[0]
        if post.target is LOG_QUANT:
            if not lis:
                return "its output quantizer is log2 / log√2, which only LIS computes in integers"
            if _av_products(gm, post) is None:
                return "its LIS output is read by something other than A·V products"
        elif post.target is not FAKE_QUANT:
            return "its output quantizer is neither uniform nor LIS"
        return None
    return check


def _replace(gm: fx.GraphModule, match: _Candidate) -> None:
    graph, softmax, logits = gm.graph, match.softmax, match.logits
    grid = fake_quant.arguments(logits)
    scale, zero_point, qmin = grid.scale, grid.zero_point, grid.qmin
    constants = ExpConstants.make(gm.get_buffer(scale.target).item()).constants()
    post = next(iter(softmax.users))
    if post.target is LOG_QUANT:
        levels = log_quant.arguments(post)
        for product in _av_products(gm, post):
            with graph.inserting_before(product):
                fused = graph.call_function(lis_attention.overload, (
                    logits, product.args[1], scale, zero_point, levels.codes, levels.scales, qmin,
                    *constants, *match.mask))
            product.replace_all_uses_with(fused)
            graph.erase_node(product)
        graph.erase_node(post)
        graph.erase_node(softmax)
    else:
        with graph.inserting_before(softmax):
            new = graph.call_function(int_softmax.overload,
                                      (logits, scale, zero_point, qmin, *constants, *match.mask))
        softmax.replace_all_uses_with(new)
        graph.erase_node(softmax)
    if match.mask and not match.logits_in.users:
        graph.erase_node(match.logits_in)


def integer_softmax_rule(lis: bool) -> RewriteRule:
    """The rule; `lis`: the recipe's post-Softmax quantizer is "lis" (fuse LIS with A·V)."""
    return RewriteRule("integer_softmax", _pattern, _checker(lis), _replace)


@graph_pass(requires=(quantized,))
def integer_softmax(gm: fx.GraphModule, config: QuantConfig, calib_loader=None) -> fx.GraphModule:
    post_spec = config.roles.get(roles.POST_SOFTMAX)
    apply(gm, integer_softmax_rule(post_spec is not None and post_spec.quantizer == "lis"))
    return gm
