"""Rotate the residual stream of a pre-LN transformer: x -> x Q, folded into the weights
(QuaRot / SpinQuant / GLF-Q): spread activation outliers over all channels before quantization.

Writers of the stream (patch embedding, cls token, position embeddings, the Linears ending each
residual branch) write x Q: W <- Qᵀ W, b <- b Q, a parameter p <- p Q. Readers are LayerNorms
only: each one's affine goes into the Linears it feeds (found by patterns.layernorm_reach) and
those Linears read the rotated normalised stream: W <- W diag(γ) Q, b <- b + W β. Q fixes the
all-ones direction (passes/orthogonal.py), so LayerNorm(x Q) = LayerNorm(x) Q with no affine:
the LayerNorm stays a LayerNorm (eps and all) and the stream needs no centring. A LayerNorm
output read by something else than a Linear (a model output) gets (y Qᵀ) γ + β back explicitly.
With `rotate_values` (default), each attention head's values are rotated too, V_h -> V_h R, folded
into the value Linear's rows and the output projection's columns of that head (attention mixes
tokens, not channels); which rows and columns form a head is read by a probe run of the graph.
With `rotate_online`, a GELU -> Linear pair becomes GELU -> (x R) -> Linear(W R): a constant
MatMul (float in onnxruntime) before the MLP's second Linear, whose input then has no outliers.

Exact in float: the pass compares the rotated graph with the original on one calibration sample.
Refused: post-LN encoders (the LayerNorm's output is the stream, its γ does not commute with Q),
a stream written or read by anything else, and fully quantized recipes (integer LayerNorm).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.fx as fx
from torch import nn

from fxquant import patterns
from fxquant.calibrate import run_batch
from fxquant.config import PipelineOptions, QuantConfig
from fxquant.data import first_sample, output_tensors
from fxquant.errors import FxQuantError
from fxquant.options import BOOL, COUNT, Options, option
from fxquant.passes.buffers import buffer_node, own_copy
from fxquant.passes.contract import graph_pass, no_observers
from fxquant.passes.head_rotation import rotate_values
from fxquant.passes.online_rotation import rotate_inputs
from fxquant.passes.orthogonal import ones_fixing_rotation

# Largest relative error of the rotated float graph against the original (float32 rounding is
# ~1e-6 on a 12-block ViT; a layout the pass misread gives errors of order 1).
EXACTNESS = 1e-4


@dataclass(frozen=True)
class RotateOptions(Options):
    """rotate_seed: seed of the random signs (and of the random orthogonal matrix where no Hadamard
    matrix of the width is known); rotate_values: rotate each attention head's values (folded into
    the value Linear and the output projection, no cost at run time); rotate_online: also rotate the input of every Linear fed by a
    GELU with a constant MatMul (QuaRot's online Hadamard before the MLP's second Linear)."""
    PREFIX = "rotate_"
    rotate_seed: int = option(0, COUNT)
    rotate_values: bool = option(True, BOOL)
    rotate_online: bool = option(False, BOOL)


@dataclass
class _Stream:
    """The residual stream: the nodes carrying it and what writes and reads it."""
    nodes: set
    linear_writers: list
    param_writers: list
    readers: list


def _is_add_or_cat(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target in (operator.add, torch.add, torch.cat)


def _describe(gm: fx.GraphModule, node: fx.Node) -> str:
    module = patterns.module_of(gm, node)
    return f"{node.name} ({type(module).__name__ if module is not None else node.target})"


def _walk_stream(gm: fx.GraphModule) -> _Stream:
    """Back from each residual add through adds, concatenations and layout ops to the nodes that
    write the stream, then forward to everything that reads it."""
    adds = patterns.residual_adds(gm)
    if not adds:
        raise FxQuantError("rotate: the model has no residual add (skip + branch through a Linear): "
                           "there is no residual stream to rotate")
    stream = _Stream(set(), [], [], [])
    stack = list(adds)
    while stack:
        node = stack.pop()
        if node in stream.nodes:
            continue
        if patterns.is_layernorm(gm, node):
            raise FxQuantError(f"rotate: LayerNorm {node.name} writes the residual stream (a post-LN "
                               "encoder, BERT-style): its per-channel gain does not commute with a "
                               "rotation; rotate supports pre-LN transformers only")
        if patterns.is_weighted(gm, node):
            stream.linear_writers.append(node)
        elif node.op == "get_attr":
            stream.param_writers.append(node)
        elif _is_add_or_cat(node) or patterns.is_layout(node):
            stream.nodes.add(node)
            operands = node.args[0] if node.target is torch.cat else node.args[:1] if patterns.is_layout(
                node) else node.args[:2]
            stack.extend(a for a in operands if isinstance(a, fx.Node))
        else:
            raise FxQuantError(f"rotate: the residual stream is written by {_describe(gm, node)}, "
                               "which cannot absorb a rotation (only Linear/Conv, parameters, adds, "
                               "concatenations and layout ops can)")
    for node in [n for n in gm.graph.nodes if n in stream.nodes]:
        for user in node.users:
            if user in stream.nodes or patterns.reads_only_metadata(user):
                continue
            if not patterns.is_layernorm(gm, user):
                raise FxQuantError(f"rotate: the residual stream ({node.name}) is read by "
                                   f"{_describe(gm, user)}, not through a LayerNorm: the rotation "
                                   "cannot be folded there")
            if user not in stream.readers:
                stream.readers.append(user)
    return stream


def _width(gm: fx.GraphModule, stream: _Stream) -> int:
    """The stream's channel count, the same for every LayerNorm reading it."""
    widths = set()
    for ln in stream.readers:
        module = patterns.module_of(gm, ln)
        if not isinstance(module, nn.LayerNorm) or len(module.normalized_shape) != 1:
            raise FxQuantError(f"rotate: {_describe(gm, ln)} must be an nn.LayerNorm over the last "
                               "axis")
        widths.add(module.normalized_shape[0])
    if len(widths) != 1:
        raise FxQuantError(f"rotate: the LayerNorms on the residual stream normalise different "
                           f"widths {sorted(widths)}: one rotation cannot serve them")
    return widths.pop()


@torch.no_grad()
def _rotate_writer(module: nn.Module, q: torch.Tensor, width: int, name: str) -> None:
    """Output channels x -> x Q: W <- Qᵀ W (over the output axis), b <- b Q."""
    weight = module.weight
    if weight.shape[0] != width:
        raise FxQuantError(f"rotate: {name} writes {weight.shape[0]} channels into a residual "
                           f"stream of width {width}")
    rotated = torch.tensordot(q.T, weight.double(), dims=1)
    module.weight = nn.Parameter(rotated.to(weight.dtype))
    if module.bias is not None:
        module.bias = nn.Parameter((module.bias.double() @ q).to(module.bias.dtype))


@torch.no_grad()
def _rotate_param(gm: fx.GraphModule, node: fx.Node, q: torch.Tensor, width: int) -> None:
    """A parameter added into the stream (cls token, position embeddings) as its rotated copy."""
    *path, field = node.target.split(".")
    value = getattr(gm.get_submodule(".".join(path)), field)
    if value.shape[-1] != width:
        raise FxQuantError(f"rotate: {node.target} of shape {tuple(value.shape)} is added into a "
                           f"residual stream of width {width}")
    name = f"{node.name}_rotated"
    gm.register_buffer(name, (value.double() @ q).to(value.dtype))
    node.target = name


@torch.no_grad()
def _fold_layernorm(gm: fx.GraphModule, ln: fx.Node, q: torch.Tensor) -> None:
    """LN(x) γ + β -> Linears read LN(x Q) = LN(x) Q without affine: W <- W diag(γ) Q, b <- b + W β."""
    module = patterns.module_of(gm, ln)
    width = module.normalized_shape[0]
    ones = torch.ones(width, dtype=torch.float64, device=q.device)
    gamma = module.weight.double() if module.weight is not None else ones
    beta = module.bias.double() if module.bias is not None else torch.zeros_like(ones)
    reach = patterns.layernorm_reach(gm, ln)
    if reach.pads:
        raise FxQuantError(f"rotate: LayerNorm {ln.name} reaches its Linears through a pad: the "
                           "padded zeros would not stay zero once its affine is folded")
    for linear in (own_copy(gm, n, "Linear") for n in reach.linears):
        weight = linear.weight.double()
        if linear.bias is not None or beta.any():
            bias = linear.bias.double() if linear.bias is not None else weight.new_zeros(weight.shape[0])
            linear.bias = nn.Parameter((bias + weight @ beta).to(linear.weight.dtype))
        linear.weight = nn.Parameter(((weight * gamma) @ q).to(linear.weight.dtype))
    direct = [r for r in reach.float_readers if ln in r.all_input_nodes]
    if len(direct) != len(reach.float_readers):
        raise FxQuantError(f"rotate: LayerNorm {ln.name} is read through layout ops by something "
                           "other than a Linear: its rotation cannot be undone there")
    if direct:
        _restore(gm, ln, direct, q, gamma, beta)
    plain = nn.LayerNorm(width, eps=module.eps, elementwise_affine=False)
    gm.set_submodule(ln.target, plain.to(q.device))


def _restore(gm: fx.GraphModule, ln: fx.Node, readers: list[fx.Node], q: torch.Tensor,
             gamma: torch.Tensor, beta: torch.Tensor) -> None:
    """Non-Linear readers of a rotated LayerNorm output get the original value: (y Qᵀ) γ + β."""
    graph = gm.graph
    with graph.inserting_after(ln):
        back = buffer_node(gm, f"{ln.name}_unrotate", (q.T * gamma).float())
    with graph.inserting_after(back):
        shift = buffer_node(gm, f"{ln.name}_unrotate_shift", beta.float())
    with graph.inserting_after(shift):
        product = graph.call_function(torch.matmul, (ln, back))
    with graph.inserting_after(product):
        restored = graph.call_function(operator.add, (product, shift))
    for reader in readers:
        reader.replace_input_with(ln, restored)


def _rotate_online(gm: fx.GraphModule, seed: int) -> int:
    """GELU -> Linear becomes GELU -> x R -> Linear(W R) (R orthogonal): how many were rotated.
    Linears of one width share one R, stored once."""
    count = 0
    for node in list(gm.graph.nodes):
        if not (patterns.is_linear(gm, node) and patterns.is_gelu(gm, node.args[0])
                and len(node.args[0].users) == 1):
            continue
        linear = own_copy(gm, node, "Linear")
        r, _ = ones_fixing_rotation(linear.in_features, seed + 1)
        rotate_inputs(gm, [node], [linear], r, f"online_rotation_{linear.in_features}")
        count += 1
    return count


def _relative_error(reference, rotated) -> float:
    pairs = list(zip(output_tensors(reference), output_tensors(rotated)))
    return max(float((b - a).norm() / a.norm().clamp_min(1e-30)) for a, b in pairs)


@graph_pass(requires=(no_observers,))
def rotate(gm: fx.GraphModule, config: QuantConfig, calib_loader: Iterable) -> fx.GraphModule:
    """The float graph with its residual stream rotated (before roles, observers, calibration)."""
    if PipelineOptions.from_options(config.options).fully_quantized:
        raise FxQuantError("rotate does not compose with fully quantized recipes: their integer "
                           "LayerNorm would have to compute the rotated normalisation from codes")
    options = RotateOptions.from_options(config.options)
    sample = first_sample(next(iter(calib_loader)))
    with torch.no_grad():
        reference = run_batch(gm, sample, 0, "rotation check")
    stream = _walk_stream(gm)
    width = _width(gm, stream)
    q, kind = ones_fixing_rotation(width, options.rotate_seed)
    q = q.to(next(gm.parameters()).device)
    for node in stream.linear_writers:
        _rotate_writer(own_copy(gm, node, "Linear/Conv"), q, width, node.name)
    for node in stream.param_writers:
        _rotate_param(gm, node, q, width)
    for ln in stream.readers:
        _fold_layernorm(gm, ln, q)
    heads = rotate_values(gm, sample, options.rotate_seed) if options.rotate_values else 0
    online = _rotate_online(gm, options.rotate_seed) if options.rotate_online else 0
    gm.graph.lint()
    gm.recompile()
    with torch.no_grad():
        error = _relative_error(reference, run_batch(gm, sample, 0, "rotation check"))
    if not error <= EXACTNESS:
        raise FxQuantError(f"rotate: the rotated model differs from the original by {error:.2e} "
                           "(relative) on a calibration sample: a layout on the residual stream "
                           "the pass does not understand")
    gm.meta["rotation"] = {"kind": kind, "width": width, "seed": options.rotate_seed,
                           "values": heads, "online": online, "relative_error": error}
    return gm
