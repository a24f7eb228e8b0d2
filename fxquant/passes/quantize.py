"""Observer(x) -> fxquant quantizer op(x, params); Linear/Conv -> dequantize(int codes) -> F.linear/conv.

Activation parameters come from each observer's statistics, fitted as the recipe says, unless a
pass before this one (e.g. the LayerNorm fold) already left fitted parameters on the observer.
Weights are stored as int8 codes plus per-channel scale and zero point, never as floats.
"""
from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn.functional as F

from fxquant import patterns, roles
from fxquant.config import QuantConfig
from fxquant.observers import search
from fxquant.passes.insert_observers import observer_nodes
from fxquant.quantizers import activation_fitter
from fxquant.quantizers.uniform import UniformParams, qrange, quantize_codes

FITTED_ATTR = "fitted"  # an observer attribute a pass may set to override fitting
# Meta on each quantized F.linear/conv node: the float weight its codes were rounded from, for
# refinements that re-round or re-scale (recon, cpt-v). Kept out of the buffers: never exported.
FLOAT_WEIGHT_KEY = "fxquant_float_weight"


def _get_attr(gm: fx.GraphModule, name: str, value: torch.Tensor) -> fx.Node:
    gm.register_buffer(name, value)
    return gm.graph.get_attr(name)


def fit_weight(weight: torch.Tensor, config: QuantConfig) -> UniformParams:
    """Per-output-channel (or per-tensor) parameters for a Linear/Conv weight."""
    spec = config.roles[roles.WEIGHT]
    rows = weight.detach().reshape(weight.shape[0], -1).T  # (fan_in, out): channels last
    if not spec.per_channel:
        rows = rows.reshape(-1)
    params = search.fit(spec.observer, rows, rows.amin(0), rows.amax(0),
                        config.bits_for(spec), spec.symmetric)
    # An asymmetric (unsigned) grid moves to the signed range, same grid, so codes fit int8/int4.
    shift = params.qmin - qrange(config.bits_for(spec), signed=True)[0] if params.qmin >= 0 else 0
    return UniformParams(params.scale, params.zero_point - shift, params.qmin - shift,
                         params.qmax - shift, axis=0)


def _quantize_weighted(gm: fx.GraphModule, node: fx.Node, config: QuantConfig) -> None:
    module = patterns.module_of(gm, node)
    params = fit_weight(module.weight, config)
    codes = quantize_codes(module.weight.detach(), params.scale, params.zero_point,
                           params.qmin, params.qmax, axis=0).to(torch.int8)
    graph = gm.graph
    with graph.inserting_before(node):
        weight = graph.call_function(torch.ops.fxquant.dequantize.default, (
            _get_attr(gm, f"{node.name}_weight_codes", codes),
            _get_attr(gm, f"{node.name}_weight_scale", params.scale),
            _get_attr(gm, f"{node.name}_weight_zero_point", params.zero_point), 0))
        bias = (None if module.bias is None
                else _get_attr(gm, f"{node.name}_bias", module.bias.detach().clone()))
        if isinstance(module, torch.nn.Linear):
            new = graph.call_function(F.linear, (node.args[0], weight, bias))
        else:
            new = graph.call_function(F.conv2d, (node.args[0], weight, bias, module.stride,
                                                 module.padding, module.dilation, module.groups))
    new.meta[roles.WEIGHT_KEY] = True
    new.meta[FLOAT_WEIGHT_KEY] = module.weight.detach()
    node.replace_all_uses_with(new)
    graph.erase_node(node)


def _quantize_activation(gm: fx.GraphModule, node: fx.Node, config: QuantConfig) -> None:
    observer = gm.get_submodule(node.target)
    spec = config.roles[observer.role]
    params = getattr(observer, FITTED_ATTR, None)
    if params is None:
        params = activation_fitter(spec.quantizer)(observer, spec, config.bits_for(spec))
    graph = gm.graph
    with graph.inserting_before(node):
        tensors = [_get_attr(gm, f"{node.name}_{k}", v) for k, v in params.tensors().items()]
        new = graph.call_function(params.op(), (node.args[0], *tensors, *params.constants()))
    new.meta[roles.META_KEY] = observer.role
    node.replace_all_uses_with(new)
    graph.erase_node(node)


def quantize(gm: fx.GraphModule, config: QuantConfig) -> fx.GraphModule:
    for node in observer_nodes(gm):
        _quantize_activation(gm, node, config)
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and node.meta.get(roles.WEIGHT_KEY):
            _quantize_weighted(gm, node, config)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm
