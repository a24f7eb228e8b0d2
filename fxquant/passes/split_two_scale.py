"""V-2SF quantizer -> Linear  ==>  Linear(region S part) + Linear(region L part, no bias).

x̂ = x̂_S + x̂_L exactly (`quantizers/two_scale.py: two_scale_region`), each part one uint8 grid, so
onnxruntime runs each product on its integer MatMul kernels (spec §6, 2× the MACs of that Linear).
Without the split the exported Linear reads V-2SF's int16 codes, and onnxruntime rewrites a float
activation times int8 weights into MatMulNBits, which requantizes the activation to int8 on the
fly: the two-scale levels are lost and the export drifts from the PyTorch numerics.
"""
from __future__ import annotations

import operator

import torch.fx as fx
import torch.nn.functional as F

from fxquant import annotation
from fxquant.config import QuantConfig
from fxquant.passes.contract import graph_pass, quantized
from fxquant.passes.rewrite import RewriteRule, apply
from fxquant.quantizers.two_scale import two_scale_quant, two_scale_region

TWO_SCALE = two_scale_quant.overload
REGION = two_scale_region.overload


def _split_linear(graph: fx.Graph, linear: fx.Node, parts: list[fx.Node]) -> None:
    _, weight, bias = linear.args   # as the quantize pass writes it
    with graph.inserting_before(linear):
        products = [graph.call_function(F.linear, (part, weight, bias if i == 0 else None))
                    for i, part in enumerate(parts)]
        total = graph.call_function(operator.add, tuple(products))
    for product in products:
        annotation.copy(linear, product)
    linear.replace_all_uses_with(total)
    graph.erase_node(linear)


def _pattern(gm: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    return node if node.op == "call_function" and node.target is TWO_SCALE else None


def _linears(quantizer: fx.Node) -> list[fx.Node]:
    return [u for u in quantizer.users
            if u.target is F.linear and u.args[0] is quantizer and annotation.of(u).weighted]


def _check(gm: fx.GraphModule, quantizer: fx.Node) -> str | None:
    return None if _linears(quantizer) else "no quantized Linear reads it (nothing to split)"


def _replace(gm: fx.GraphModule, quantizer: fx.Node) -> None:
    graph = gm.graph
    a = two_scale_quant.arguments(quantizer)
    with graph.inserting_after(quantizer):
        parts = [graph.call_function(REGION, (quantizer, a.fine_scale, a.shift, a.lo_small,
                                              a.hi_small, a.hi_large, large))
                 for large in (False, True)]
    for linear in _linears(quantizer):
        _split_linear(graph, linear, parts)


RULE = RewriteRule("split_two_scale", _pattern, _check, _replace)


@graph_pass(requires=(quantized,))
def split_two_scale(gm: fx.GraphModule, config: QuantConfig | None = None,
                    calib_loader=None) -> fx.GraphModule:
    apply(gm, RULE)
    return gm
