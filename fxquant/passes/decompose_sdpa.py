"""scaled_dot_product_attention(q, k, v, mask) -> softmax((q * scale) @ k^T + mask) @ v.

Written out so the attention probabilities become a tensor the passes can quantize, whatever
`timm.layers.set_fused_attn` says. Dropout inside attention is dropped (inference semantics).
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn.functional as F

from fxquant.attention_mask import apply_attention_mask, causal_mask

_SDPA_TARGETS = (F.scaled_dot_product_attention, torch._C._nn.scaled_dot_product_attention)


def _sdpa_args(node: fx.Node) -> dict:
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")
    args = dict(zip(names, node.args))
    args.update(node.kwargs)
    return args


def decompose_sdpa(gm: fx.GraphModule) -> fx.GraphModule:
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in _SDPA_TARGETS:
            continue
        a = _sdpa_args(node)
        if a.get("enable_gqa"):
            raise NotImplementedError("scaled_dot_product_attention with enable_gqa=True")
        q, k, v = a["query"], a["key"], a["value"]
        existing = set(graph.nodes)
        with graph.inserting_before(node):
            scale = a.get("scale")
            if scale is None:
                head_dim = graph.call_method("size", (q, -1))
                scale = graph.call_function(operator.pow, (head_dim, -0.5))
            q_scaled = graph.call_function(operator.mul, (q, scale))
            k_t = graph.call_method("transpose", (k, -2, -1))
            scores = graph.call_function(operator.matmul, (q_scaled, k_t))
            if a.get("is_causal"):
                scores = graph.call_function(
                    apply_attention_mask, (scores, graph.call_function(causal_mask, (q, k))))
            if a.get("attn_mask") is not None:
                scores = graph.call_function(apply_attention_mask, (scores, a["attn_mask"]))
            probs = graph.call_function(torch.softmax, (scores, -1))
            out = graph.call_function(operator.matmul, (probs, v))
        for new in set(graph.nodes) - existing:
            new.meta["nn_module_stack"] = node.meta.get("nn_module_stack", {})  # the module it is in
        node.replace_all_uses_with(out)
        graph.erase_node(node)
    graph.lint()
    gm.recompile()
    return gm
