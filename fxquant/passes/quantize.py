"""Observer(x) -> fxquant quantizer op(x, params); Linear/Conv -> dequantize(int codes) -> F.linear/conv.

Activation parameters come from each observer's statistics, fitted as the recipe says, unless a
pass before this one (e.g. the LayerNorm fold) already left fitted parameters in the observer
node's annotation. Each quantized Linear/Conv is annotated with the float weight its codes were
rounded from and their code range, for refinements that re-round or re-scale (recon, cpt-v) and
reports; the float weight is never exported nor written: it shares the module's weight (the
user's, or the fold's own copy), so quantizing adds the codes only, not a second float model.
Weights are stored as int8 codes plus per-channel scale and zero point, never as floats; their
bits follow the config's target (`fxquant/target.py`): on the portable target an 8-bit weight
whose GEMM input can reach code 255 gets 7-bit codes, so no CPU's int8 GEMM can saturate.
"""
from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn.functional as F

from fxquant import annotation, patterns, quantizers, roles, target
from fxquant.config import QuantConfig
from fxquant.passes.buffers import buffer_node
from fxquant.passes.contract import calibrated, graph_pass, no_observers, quantized
from fxquant.quantizers.uniform import UniformQuantizer, dequantize, fake_quant, qrange, quantize_codes

def activation_max(node: fx.Node) -> int:
    """The largest unsigned code a GEMM input can carry into onnxruntime's int8 kernel: a uniform
    quantizer's qmax (int8 codes count 128 more); anything else could reach 255."""
    if node.op == "call_function" and node.target is fake_quant.overload:
        args = fake_quant.arguments(node)
        return args.qmax if args.qmin >= 0 else args.qmax + 128
    return target.FULL_RANGE_ACTIVATION_MAX


def fit_weight(weight: torch.Tensor, config: QuantConfig, bits: int) -> UniformQuantizer:
    """Per-output-channel (or per-tensor) `bits`-bit parameters for a Linear/Conv weight."""
    spec = config.roles[roles.WEIGHT]
    rows = weight.detach().reshape(weight.shape[0], -1).T  # (fan_in, out): channels last
    if not spec.per_channel:
        rows = rows.reshape(-1)
    params = UniformQuantizer.from_samples(spec.observer, rows, rows.amin(0), rows.amax(0), bits,
                                           spec.symmetric)
    # An asymmetric (unsigned) grid moves to the signed range, same grid, so codes fit int8/int4.
    shift = params.qmin - qrange(bits, signed=True)[0] if params.qmin >= 0 else 0
    return UniformQuantizer(params.scale, params.zero_point - shift, params.qmin - shift,
                            params.qmax - shift, axis=0)


def _quantize_weighted(gm: fx.GraphModule, node: fx.Node, config: QuantConfig) -> None:
    module = patterns.module_of(gm, node)
    bits = target.weight_bits(config.bits_for(config.roles[roles.WEIGHT]),
                              activation_max(node.args[0]), config.target)
    params = fit_weight(module.weight, config, bits)
    codes = quantize_codes(module.weight.detach(), params.scale, params.zero_point,
                           params.qmin, params.qmax, axis=0).to(torch.int8)
    graph = gm.graph
    with graph.inserting_before(node):
        weight = graph.call_function(dequantize.overload, (
            buffer_node(gm, f"{node.name}_weight_codes", codes),
            buffer_node(gm, f"{node.name}_weight_scale", params.scale),
            buffer_node(gm, f"{node.name}_weight_zero_point", params.zero_point), 0))
        bias = (None if module.bias is None
                else buffer_node(gm, f"{node.name}_bias", module.bias.detach().clone()))
        if isinstance(module, torch.nn.Linear):
            new = graph.call_function(F.linear, (node.args[0], weight, bias))
        else:
            new = graph.call_function(F.conv2d, (node.args[0], weight, bias, module.stride,
                                                 module.padding, module.dilation, module.groups))
    annotation.update(new, weighted=True, float_weight=module.weight.detach(),
                      weight_range=(params.qmin, params.qmax))
    new.meta["nn_module_stack"] = node.meta.get("nn_module_stack", {})  # where the user has it
    node.replace_all_uses_with(new)
    graph.erase_node(node)


def _quantize_activation(gm: fx.GraphModule, node: fx.Node, config: QuantConfig) -> None:
    observer = gm.get_submodule(node.target)
    spec = config.roles[observer.role]
    params = annotation.of(node).fitted
    if params is None:
        params = quantizers.get(spec.quantizer).fit(observer, spec, config.bits_for(spec))
    graph = gm.graph
    with graph.inserting_before(node):
        tensors = [buffer_node(gm, f"{node.name}_{k}", v) for k, v in params.tensors().items()]
        new = graph.call_function(params.op.overload, (node.args[0], *tensors, *params.constants()))
    annotation.update(new, role=observer.role)
    node.replace_all_uses_with(new)
    graph.erase_node(node)
    gm.delete_submodule(node.target)  # its samples (a MB each) go before the weights' codes come


@graph_pass(requires=(calibrated,), ensures=(no_observers, quantized))
def quantize(gm: fx.GraphModule, config: QuantConfig) -> fx.GraphModule:
    for node in annotation.observer_nodes(gm):
        _quantize_activation(gm, node, config)
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and annotation.of(node).weighted:
            _quantize_weighted(gm, node, config)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm
