"""RepQ-ViT: fold per-channel post-LayerNorm grids into the LayerNorm and the Linears it feeds.

For LN -> [layout ops]* -> Linear(s) with channel-wise grids (s_c, z_c) fitted on the LN output:
    s~ = target(s), z~ = round(target(z)), r = s / s~, t = s~ (z - z~)
    LN: gamma' = gamma / r, beta' = beta / r + t        Linear: W' = W diag(r), b' = b - W' t
The float function is unchanged and the per-tensor grid (s~, z~) on the new LN output is the
channel-wise grid in the old units (z~ is an integer); it is left in the observer nodes'
annotation (`fitted`).
Zero padding on a path becomes pad(x - t) + t, so padded positions still mean 0 in old units.
The target (`config.options["fold_target"]`, default "mean", read as FoldOptions) names an entry
of FOLD_TARGETS.

When the LN output is also read unquantized by something else (post-LN BERT: the residual add),
gamma and beta must stay. The same factors then go on the quantized branch only, as a constant
per-channel affine x * (1/r) + t in front of its per-tensor quantizer (SmoothQuant's explicit
form; the Linears still take W' and b'): the residual reads x unchanged, the quantizer's codes are
the channel-wise grid's, and the ONNX holds a float Mul and Add before QuantizeLinear.

With `fold_rotate`, each quantizer's input is then rotated, x' -> x' Q (Q a seeded Hadamard matrix,
W' -> W' Q in its Linears, a float MatMul in the ONNX): the fold moved the LayerNorm's channel
spread into the columns of W', where one 4-bit grid per output row cannot hold it; Q spreads those
columns over all inputs. The per-tensor grid is refitted on the calibration samples taken to
(x / r + t) Q, with the role's method (their range: the samples', not the whole calibration's).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.fx as fx
from torch import nn

from fxquant import annotation, patterns, roles
from fxquant.calibrate import run_batch
from fxquant.config import QuantConfig
from fxquant.data import first_sample
from fxquant.errors import FxQuantError
from fxquant.options import BOOL, Options, one_of, option
from fxquant.passes.buffers import own_copy
from fxquant.passes.contract import calibrated, graph_pass
from fxquant.passes.online_rotation import rotate_inputs
from fxquant.passes.orthogonal import ones_fixing_rotation
from fxquant.quantizers.uniform import UniformQuantizer

# Per-tensor target of the channel scales / zero points; "median" is DopQ-ViT's MOSF.
FOLD_TARGETS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"mean": torch.mean,
                                                                   "median": torch.median}


@dataclass(frozen=True)
class FoldOptions(Options):
    """The `config.options` keys this pass reads, checked when made."""
    PREFIX = "fold_"
    fold_target: str = option("mean", one_of(FOLD_TARGETS))
    fold_rotate: bool = option(False, BOOL)   # rotate each folded quantizer input (module docstring)


class _ChannelIndex(nn.Module):
    """Stands in for a LayerNorm during the probe: channel c holds the value c + 1."""

    def __init__(self, name: str, channels: int):
        super().__init__()
        self.name, self.channels = name, channels

    def forward(self, x):
        if x.shape[-1] != self.channels:
            raise FxQuantError(f"LayerNorm {self.name} does not normalize the last axis of its "
                               f"input {tuple(x.shape)}: the RepQ-ViT fold needs channels last")
        return torch.arange(1, self.channels + 1, dtype=x.dtype, device=x.device).expand_as(x)


class _Record(nn.Module):
    """Stands in for an observer during the probe: keeps what reaches it, records no statistics."""

    def forward(self, x):
        self.seen = x
        return x


def _check_channels_last(gm: fx.GraphModule, folds: dict, calib_loader: Iterable) -> None:
    """Run one batch with each LN output replaced by its channel index: every observer on a fold
    path must see channel c at position c of the last axis (or 0, padding)."""
    swaps = {n.target: _ChannelIndex(n.name, patterns.module_of(gm, n).normalized_shape[0])
             for n in folds}
    swaps.update({n.target: _Record() for n in annotation.observer_nodes(gm)})
    originals = {target: gm.get_submodule(target) for target in swaps}
    for target, module in swaps.items():
        gm.set_submodule(target, module)
    try:
        run_batch(gm, first_sample(next(iter(calib_loader))), 0, "layout probe")
    finally:
        for target, module in originals.items():
            gm.set_submodule(target, module)
    for ln, (observers, *_) in folds.items():
        channels = patterns.module_of(gm, ln).normalized_shape[0]
        index = torch.arange(1, channels + 1, dtype=torch.float32)
        for obs in observers:
            seen = swaps[obs.target].seen.float().cpu()
            if seen.shape[-1] != channels or not ((seen == index) | (seen == 0)).all():
                raise FxQuantError(f"the layout ops between LayerNorm {ln.name} and {obs.name} move "
                                   "its channel axis away from the last position: the RepQ-ViT "
                                   "fold needs channels last")


def _samples(gm: fx.GraphModule, observers: list[fx.Node]) -> torch.Tensor:
    """(N, C): the LN output rows kept by every observer on its paths."""
    return torch.cat([gm.get_submodule(o.target).samples() for o in observers])


def _channel_params(gm: fx.GraphModule, observers: list[fx.Node],
                    config: QuantConfig) -> UniformQuantizer:
    """Channel-wise grid of the LN output, from the statistics of every observer on its paths."""
    spec = config.roles[roles.POST_LAYERNORM]
    stats = [gm.get_submodule(o.target) for o in observers]
    lo = torch.stack([s.min.cpu() for s in stats]).amin(0)
    hi = torch.stack([s.max.cpu() for s in stats]).amax(0)
    return UniformQuantizer.from_samples(spec.observer, _samples(gm, observers), lo, hi,
                                         config.bits_for(spec), spec.symmetric)


def _rotate_branch(gm: fx.GraphModule, observers: list[fx.Node],
                   linears: list[nn.Linear], r: torch.Tensor, t: torch.Tensor,
                   config: QuantConfig) -> UniformQuantizer:
    """x' -> x' Q in front of the observers, W' -> W' Q: the per-tensor grid refitted on the rotated
    samples (one Q per width, seed 0, shared by every LayerNorm of that width)."""
    q, _ = ones_fixing_rotation(r.numel(), 0)
    rotate_inputs(gm, observers, linears, q, f"fold_rotation_{r.numel()}")
    q = q.to(r)
    rotated = (_samples(gm, observers).to(r) / r + t) @ q
    spec = config.roles[roles.POST_LAYERNORM]
    return UniformQuantizer.from_samples(spec.observer, rotated.reshape(-1).cpu(), rotated.min().cpu(),
                                         rotated.max().cpu(), config.bits_for(spec), spec.symmetric)


def fold_factors(params: UniformQuantizer,
                 target: str = "mean") -> tuple[torch.Tensor, torch.Tensor, UniformQuantizer]:
    """(r, t, per-tensor grid) for channel-wise `params`, with s~ and z~ from FOLD_TARGETS[target]."""
    if target not in FOLD_TARGETS:
        raise FxQuantError(f"unknown fold_target {target!r}: available are {sorted(FOLD_TARGETS)}")
    reduce = FOLD_TARGETS[target]
    scale = reduce(params.scale).reshape(())
    zero_point = torch.round(reduce(params.zero_point.float())).clamp(params.qmin, params.qmax)
    r = params.scale / scale
    t = scale * (params.zero_point.float() - zero_point)
    return r, t, UniformQuantizer(scale, zero_point.to(torch.int32), params.qmin, params.qmax)


@torch.no_grad()
def fold_linears(linears: list[nn.Linear], r: torch.Tensor, t: torch.Tensor | None) -> None:
    """W' = W diag(r), b' = b - W' t: the Linears take x / r + t in place of x (x / r for None)."""
    for linear in linears:
        linear.weight.mul_(r)
        if t is None:
            continue
        shift = linear.weight @ t
        if linear.bias is None:
            linear.bias = nn.Parameter(-shift)
        else:
            linear.bias.sub_(shift)


@torch.no_grad()
def _fold(ln: nn.LayerNorm, linears: list[nn.Linear], r: torch.Tensor, t: torch.Tensor) -> None:
    if ln.weight is None:
        ln.weight = nn.Parameter(torch.ones_like(r))
    if ln.bias is None:
        ln.bias = nn.Parameter(torch.zeros_like(r))
    ln.weight.div_(r)
    ln.bias.div_(r).add_(t)
    fold_linears(linears, r, t)


def scale_quantized_branch(gm: fx.GraphModule, source: fx.Node, observers: list[fx.Node],
                           r: torch.Tensor, t: torch.Tensor | None) -> None:
    """observer(x) -> observer(x * (1/r) + t) for each observer on `source`'s paths to its Linears
    (no Add when t is None)."""
    gm.register_buffer(f"{source.name}_smooth_scale", 1 / r)
    if t is not None:
        gm.register_buffer(f"{source.name}_smooth_shift", t)
    graph = gm.graph
    for obs in observers:
        value = obs.args[0]
        with graph.inserting_before(obs):
            shifted = graph.call_function(operator.mul, (
                value, graph.get_attr(f"{source.name}_smooth_scale")))
            if t is not None:
                shifted = graph.call_function(operator.add, (
                    shifted, graph.get_attr(f"{source.name}_smooth_shift")))
        obs.replace_input_with(value, shifted)
        annotation.update(obs, observes=shifted)


def _shift_padding(gm: fx.GraphModule, pad: fx.Node, name: str, t: torch.Tensor) -> None:
    """pad(x) -> pad(x - t) + t: padded positions keep the old value 0."""
    gm.register_buffer(name, t)
    graph = gm.graph
    with graph.inserting_before(pad):
        shift = graph.get_attr(name)
        pad.update_arg(0, graph.call_function(operator.sub, (pad.args[0], shift)))
    with graph.inserting_after(pad):
        restored = graph.call_function(operator.add, (pad, shift))
    pad.replace_all_uses_with(restored, delete_user_cb=lambda user: user is not restored)


@graph_pass(requires=(calibrated,))
def reparameterize_layernorm(gm: fx.GraphModule, config: QuantConfig,
                             calib_loader: Iterable) -> fx.GraphModule:
    spec = config.roles.get(roles.POST_LAYERNORM)
    if spec is None or not spec.per_channel:
        return gm
    options = FoldOptions.from_options(config.options)
    folds = {}
    for ln in [n for n in gm.graph.nodes if patterns.is_layernorm(gm, n)]:
        reach = patterns.layernorm_reach(gm, ln)
        observers, linears, pads = reach.observers, reach.linears, reach.pads
        if not observers or not linears:
            continue
        if reach.quantized_readers:
            other = reach.quantized_readers[0]
            raise FxQuantError(f"LayerNorm {ln.name} feeds {other.name} ({other.target}) through its "
                               "quantizer, which is not a Linear: its per-channel scales cannot be "
                               "folded exactly; quantize post_layernorm per tensor for this model")
        module = patterns.module_of(gm, ln)
        if module is None or len(module.normalized_shape) != 1:
            raise FxQuantError(f"LayerNorm {ln.name} must be an nn.LayerNorm over the last axis "
                               "for the RepQ-ViT fold")
        folds[ln] = (observers, linears, pads, bool(reach.float_readers))
    if folds:
        _check_channels_last(gm, folds, calib_loader)
    for ln, (observers, linears, pads, explicit) in folds.items():
        r, t, per_tensor = fold_factors(_channel_params(gm, observers, config), options.fold_target)
        modules = [own_copy(gm, lin, "Linear") for lin in linears]
        r, t = (v.to(modules[0].weight) for v in (r, t))
        if explicit:
            fold_linears(modules, r, t)
            scale_quantized_branch(gm, ln, observers, r, t)
        else:
            _fold(own_copy(gm, ln, "LayerNorm"), modules, r, t)
            for i, pad in enumerate(pads):
                _shift_padding(gm, pad, f"{ln.name}_fold_shift_{i}", t)
        if options.fold_rotate:
            per_tensor = _rotate_branch(gm, observers, modules, r, t, config)
        for obs in observers:
            annotation.update(obs, fitted=per_tensor)
    gm.graph.lint()
    gm.recompile()
    return gm
