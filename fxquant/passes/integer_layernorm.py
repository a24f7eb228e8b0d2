"""PTF quantizer -> LayerNorm -> output quantizer  ==>  one integer LayerNorm, codes in, codes out.

A LayerNorm over the last axis qualifies when its input comes from an unsigned PTF quantizer (or a
uniform one per tensor: all shifts 0) and its only reader is a uniform quantizer per tensor or per
last-axis channel. The LayerNorm becomes `fxquant::int_layer_norm` (quantizers/int_layernorm.py),
which reads γ, β and both quantizers' buffers and outputs on the output quantizer's grid. That
quantizer goes, unless layout ops sit between (per tensor only): then it stays, an exact
re-quantization that keeps Q -> DQ next to the consumer for onnxruntime's integer kernels. The
input quantizer stays (the residual stream reads it too). Other LayerNorms stay float.
"""
from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn.functional as F

from fxquant import patterns
from fxquant.config import QuantConfig
from fxquant.passes.buffers import buffer_node
from fxquant.quantizers.int_layernorm import int_layer_norm
from fxquant.quantizers.pow2 import ptf_quant
from fxquant.quantizers.uniform import fake_quant

FAKE_QUANT = fake_quant.overload
PTF_QUANT = ptf_quant.overload


def _buffer(gm: fx.GraphModule, node: fx.Node) -> torch.Tensor:
    return gm.get_buffer(node.target)


def _affine(gm: fx.GraphModule, ln: fx.Node) -> tuple[int, fx.Node | None, fx.Node | None] | None:
    """(channels, γ, β) of a LayerNorm over the last axis only (γ, β None when absent)."""
    module = patterns.module_of(gm, ln)
    if module is not None:
        if len(module.normalized_shape) != 1:
            return None
        c = module.normalized_shape[0]
        return c, *(None if t is None else buffer_node(gm, f"{ln.name}_{name}", t.detach().clone())
                     for name, t in (("weight", module.weight), ("bias", module.bias)))
    args = dict(zip(("input", "normalized_shape", "weight", "bias"), ln.args)) | dict(ln.kwargs)
    shape = args["normalized_shape"]
    if ln.target is not F.layer_norm or not isinstance(shape, (list, tuple)) or len(shape) != 1:
        return None
    return shape[0], args.get("weight"), args.get("bias")


def _input_grid(gm: fx.GraphModule, node: fx.Node) -> tuple | None:
    """(scale, zero point, shift) nodes of an unsigned PTF / per-tensor uniform input quantizer."""
    if node.op != "call_function":
        return None
    if node.target is PTF_QUANT and node.args[4] >= 0:
        return tuple(node.args[1:4])
    if node.target is FAKE_QUANT and node.args[3] >= 0 and _buffer(gm, node.args[1]).numel() == 1:
        return node.args[1], node.args[2], None
    return None


def _output_quantizer(gm: fx.GraphModule, ln: fx.Node) -> fx.Node | None:
    """The uniform quantizer that reads the LayerNorm output (through layout ops if per tensor)."""
    node, moved = ln, False
    while True:
        users = [u for u in node.users if not patterns.reads_only_metadata(u)]
        if len(users) != 1:
            return None
        node = users[0]
        if node.op == "call_function" and node.target is FAKE_QUANT:
            break
        if not patterns.is_layout(node):
            return None
        moved = True
    per_tensor = _buffer(gm, node.args[1]).numel() == 1
    return node if per_tensor or (node.args[5] == -1 and not moved) else None


def integer_layernorm(gm: fx.GraphModule, config: QuantConfig | None = None,
                      calib_loader=None) -> fx.GraphModule:
    graph = gm.graph
    for ln in [n for n in graph.nodes if patterns.is_layernorm(gm, n)]:
        grid, out_q = _input_grid(gm, ln.args[0]), _output_quantizer(gm, ln)
        if grid is None or out_q is None:
            continue
        with graph.inserting_before(ln):
            affine = _affine(gm, ln)
            if affine is None:
                continue
            c, weight, bias = affine
            scale, zero_point, shift = grid
            if shift is None:
                shift = buffer_node(gm, f"{ln.name}_shift", torch.zeros(c, dtype=torch.int32))
            if weight is None:
                weight = buffer_node(gm, f"{ln.name}_weight", torch.ones(c))
            if bias is None:
                bias = buffer_node(gm, f"{ln.name}_bias", torch.zeros(c))
            _, out_scale, out_zero_point, qmin, qmax, _ = out_q.args
            new = graph.call_function(int_layer_norm.overload, (
                ln.args[0], scale, zero_point, shift, weight, bias, graph.get_attr(out_scale.target),
                graph.get_attr(out_zero_point.target), qmin, qmax))
        if out_q.args[0] is ln:
            out_q.replace_all_uses_with(ln)
            graph.erase_node(out_q)
        ln.replace_all_uses_with(new)
        graph.erase_node(ln)
    graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm
