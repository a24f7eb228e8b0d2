"""Softmax over quantized logits  ==>  integer softmax (quantizers/int_softmax.py).

A Softmax over the last axis qualifies when its input comes from a uniform quantizer per tensor
and its only reader is the post-Softmax quantizer:
- the recipe's "lis" quantizer (log2 levels, ≤ 4 bits), every reader of it an A·V matmul: the
  Softmax, the quantizer and each A·V become one `lis_attention` (Log-Int-Softmax fused with A·V);
- a uniform quantizer: the Softmax becomes `int_softmax` (i-exp), the quantizer stays.
Other Softmaxes (log√2 or TanQ attention, A read elsewhere) stay float (the ONNX audit lists them).
Behind a padding mask (patterns.attention_mask_add) the quantized logits are the scores before
the mask add, and the mask becomes the integer op's `mask` input (quantizers/int_softmax.py).
"""
from __future__ import annotations

import torch.fx as fx

from fxquant import patterns, roles
from fxquant.config import QuantConfig
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
        return node if gm.get_buffer(node.args[1].target).numel() == 1 else None
    return None


def _av_products(gm: fx.GraphModule, attention: fx.Node) -> list[fx.Node] | None:
    products = list(attention.users)
    ok = all(patterns.is_matmul(gm, p) and p.args[0] is attention and p.args[1] is not attention
             for p in products)
    return products if ok else None


def integer_softmax(gm: fx.GraphModule, config: QuantConfig, calib_loader=None) -> fx.GraphModule:
    graph = gm.graph
    post_spec = config.roles.get(roles.POST_SOFTMAX)
    lis = post_spec is not None and post_spec.quantizer == "lis"
    for softmax in [n for n in graph.nodes if patterns.is_softmax(gm, n)]:
        logits_in = softmax.args[0]
        masked = patterns.attention_mask_add(gm, logits_in)
        scores, *mask = masked if masked is not None else (logits_in,)
        logits = _logit_quantizer(gm, scores)
        users = list(softmax.users)
        if logits is None or len(users) != 1 or not _over_last_axis(gm, softmax):
            continue
        _, scale, zero_point, qmin, _, _ = logits.args
        constants = ExpConstants.make(gm.get_buffer(scale.target).item()).constants()
        post = users[0]
        products = _av_products(gm, post) if lis and post.target is LOG_QUANT else None
        if products is not None:
            _, _, codes, scales, _ = post.args
            for product in products:
                with graph.inserting_before(product):
                    fused = graph.call_function(lis_attention.overload, (
                        logits, product.args[1], scale, zero_point, codes, scales, qmin, *constants,
                        *mask))
                product.replace_all_uses_with(fused)
                graph.erase_node(product)
            graph.erase_node(post)
            graph.erase_node(softmax)
        elif post.target is FAKE_QUANT:
            with graph.inserting_before(softmax):
                new = graph.call_function(int_softmax.overload,
                                          (logits, scale, zero_point, qmin, *constants, *mask))
            softmax.replace_all_uses_with(new)
            graph.erase_node(softmax)
        if masked is not None and not logits_in.users:
            graph.erase_node(logits_in)
    graph.lint()
    gm.recompile()
    return gm
