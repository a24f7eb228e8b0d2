"""PTF quantizer -> LayerNorm -> output quantizer  ==>  one integer LayerNorm, codes in, codes out.

A LayerNorm over the last axis qualifies when its input comes from an unsigned PTF quantizer (or a
uniform one per tensor: all shifts 0) and its only reader is a uniform quantizer per tensor or per
last-axis channel. The LayerNorm becomes `fxquant::int_layer_norm` (quantizers/int_layernorm.py),
which reads γ, β and both quantizers' buffers and outputs on the output quantizer's grid. That
quantizer goes, unless layout ops sit between (per tensor only): then it stays, an exact
re-quantization that keeps Q -> DQ next to the consumer for onnxruntime's integer kernels. The
input quantizer stays (the residual stream reads it too). Other LayerNorms stay float, with the
reason in the rewrite report (`passes/rewrite.py`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F

from fxquant import patterns
from fxquant.config import QuantConfig
from fxquant.passes.buffers import buffer_node
from fxquant.passes.contract import graph_pass, quantized
from fxquant.passes.rewrite import RewriteRule, apply
from fxquant.quantizers.int_layernorm import int_layer_norm
from fxquant.quantizers.ptf import ptf_quant
from fxquant.quantizers.uniform import fake_quant

FAKE_QUANT = fake_quant.overload
PTF_QUANT = ptf_quant.overload


def _buffer(gm: fx.GraphModule, node: fx.Node) -> torch.Tensor:
    return gm.get_buffer(node.target)


def _last_axis_channels(gm: fx.GraphModule, ln: fx.Node) -> int | None:
    """C of a LayerNorm over the last axis only, else None."""
    module = patterns.module_of(gm, ln)
    if module is not None:
        return module.normalized_shape[0] if len(module.normalized_shape) == 1 else None
    shape = _layer_norm_args(ln)["normalized_shape"]
    if ln.target is not F.layer_norm or not isinstance(shape, (list, tuple)) or len(shape) != 1:
        return None
    return shape[0]


def _layer_norm_args(ln: fx.Node) -> dict:
    return dict(zip(("input", "normalized_shape", "weight", "bias"), ln.args)) | dict(ln.kwargs)


def _affine(gm: fx.GraphModule, ln: fx.Node, c: int) -> tuple[fx.Node, fx.Node]:
    """γ and β nodes of the LayerNorm (its own copies for a module; 1 and 0 when absent)."""
    module = patterns.module_of(gm, ln)
    if module is not None:
        weight, bias = module.weight, module.bias
        return tuple(buffer_node(gm, f"{ln.name}_{name}", (default if t is None else t.detach().clone()))
                     for name, t, default in (("weight", weight, torch.ones(c)),
                                              ("bias", bias, torch.zeros(c))))
    args = _layer_norm_args(ln)
    weight, bias = args.get("weight"), args.get("bias")
    return (buffer_node(gm, f"{ln.name}_weight", torch.ones(c)) if weight is None else weight,
            buffer_node(gm, f"{ln.name}_bias", torch.zeros(c)) if bias is None else bias)


def _input_grid(gm: fx.GraphModule, node: fx.Node) -> tuple | None:
    """(scale, zero point, shift) nodes of an unsigned PTF / per-tensor uniform input quantizer."""
    if node.op != "call_function":
        return None
    if node.target is PTF_QUANT:
        a = ptf_quant.arguments(node)
        return (a.scale, a.zero_point, a.shift) if a.qmin >= 0 else None
    if node.target is FAKE_QUANT:
        a = fake_quant.arguments(node)
        return (a.scale, a.zero_point, None) if a.qmin >= 0 and _buffer(gm, a.scale).numel() == 1 else None
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
    a = fake_quant.arguments(node)
    per_tensor = _buffer(gm, a.scale).numel() == 1
    return node if per_tensor or (a.axis == -1 and not moved) else None


@dataclass(frozen=True)
class _Candidate:
    ln: fx.Node
    grid: tuple | None            # (scale, zero point, shift) of the input quantizer
    out_q: fx.Node | None         # the output quantizer
    channels: int | None


def _pattern(gm: fx.GraphModule, node: fx.Node) -> _Candidate | None:
    if not patterns.is_layernorm(gm, node):
        return None
    return _Candidate(node, _input_grid(gm, node.args[0]), _output_quantizer(gm, node),
                      _last_axis_channels(gm, node))


def _check(gm: fx.GraphModule, match: _Candidate) -> str | None:
    if match.grid is None:
        return "its input is not an unsigned PTF or per-tensor uniform quantizer"
    if match.out_q is None:
        return ("its output is not read by one uniform quantizer (per tensor, or per last-axis "
                "channel without layout ops in between)")
    if match.channels is None:
        return "it normalizes over more than the last axis"
    return None


def _replace(gm: fx.GraphModule, match: _Candidate) -> None:
    graph, ln = gm.graph, match.ln
    scale, zero_point, shift = match.grid
    out = fake_quant.arguments(match.out_q)
    with graph.inserting_before(ln):
        weight, bias = _affine(gm, ln, match.channels)
        if shift is None:
            shift = buffer_node(gm, f"{ln.name}_shift", torch.zeros(match.channels, dtype=torch.int32))
        new = graph.call_function(int_layer_norm.overload, (
            ln.args[0], scale, zero_point, shift, weight, bias, graph.get_attr(out.scale.target),
            graph.get_attr(out.zero_point.target), out.qmin, out.qmax))
    if out.x is ln:
        match.out_q.replace_all_uses_with(ln)
        graph.erase_node(match.out_q)
    ln.replace_all_uses_with(new)
    graph.erase_node(ln)


RULE = RewriteRule("integer_layernorm", _pattern, _check, _replace)


@graph_pass(requires=(quantized,))
def integer_layernorm(gm: fx.GraphModule, config: QuantConfig | None = None,
                      calib_loader=None) -> fx.GraphModule:
    apply(gm, RULE)
    gm.delete_all_unused_submodules()
    return gm
