"""SmoothQuant in explicit form on activations that only Linears read (the MLP's GELU output):
x -> x / s in front of the quantizer, W -> W diag(s) in the Linears, one per-tensor grid on x / s.

A role quantized per channel (RoleSpec(per_channel=True)) other than post-LayerNorm has its
statistics kept per channel; this pass turns them into SmoothQuant's factors
s_c = max|x_c|^α / max|W[:, c]|^(1-α) (Xiao et al., ICML 2023; α = smooth_alpha) over every Linear
reading the value. Nothing in front of the quantizer can absorb 1/s (GELU is not scale-equivariant),
so it stays a float Mul in the ONNX, elementwise, and the Linears still run on integer kernels with
one activation scale, fitted by the role's method on the kept samples divided by s. (The exact
channel-wise grids of the LayerNorm fold, MSE-fitted channel scales with zero-point shifts, scored
lower in a first try: docs/methods/repq-vit.md.) BERT-style encoders need it at 4 bits: a few channels of their MLP's hidden activations reach
ranges many times the others' (benchmarks/stsb.md). Post-LayerNorm roles are left to
reparameterize_layernorm.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
import torch.fx as fx

from fxquant import annotation, patterns, roles
from fxquant.config import QuantConfig
from fxquant.errors import FxQuantError
from fxquant.options import PROBABILITY, Options, option
from fxquant.passes.buffers import own_copy
from fxquant.passes.contract import calibrated, graph_pass
from fxquant.passes.reparameterize_layernorm import fold_linears, scale_quantized_branch
from fxquant.quantizers.uniform import UniformQuantizer

TINY = 1e-5  # floor of a channel's range, so an all-zero channel or column gets a finite factor


@dataclass(frozen=True)
class SmoothOptions(Options):
    """The `config.options` key this pass reads, checked when made."""
    PREFIX = "smooth_"
    smooth_alpha: float = option(0.5, PROBABILITY)   # migration strength (paper: 0.5)


def _linear_readers(gm: fx.GraphModule, obs: fx.Node, role: str) -> list[fx.Node]:
    """The Linears reading the quantizer's output as their input; anything else is refused."""
    readers = list(obs.users)
    other = next((u for u in readers if not (patterns.is_linear(gm, u) and u.args[0] is obs)), None)
    if other is not None or not readers:
        what = f"{other.name} ({other.target})" if other is not None else "nothing"
        raise FxQuantError(f"the {role} quantizer {obs.name} is read by {what}, not only by Linears: "
                           f"it cannot be smoothed into their weights; quantize {role} per tensor")
    return readers


def smoothing_factors(x_min: torch.Tensor, x_max: torch.Tensor, weights: list[torch.Tensor],
                      alpha: float) -> torch.Tensor:
    """s_c = max|x_c|^α / max|W[:, c]|^(1-α), the largest over every Linear reading x."""
    x_range = torch.maximum(x_min.abs(), x_max.abs()).clamp_min(TINY)
    w_range = torch.stack([w.detach().abs().amax(0) for w in weights]).amax(0).clamp_min(TINY)
    return x_range.pow(alpha) / w_range.to(x_range).pow(1 - alpha)


@graph_pass(requires=(calibrated,))
def smooth_channels(gm: fx.GraphModule, config: QuantConfig, calib_loader: Iterable) -> fx.GraphModule:
    alpha = SmoothOptions.from_options(config.options).smooth_alpha
    for obs in annotation.observer_nodes(gm):
        observer = gm.get_submodule(obs.target)
        spec = config.roles[observer.role]
        if not spec.per_channel or observer.role == roles.POST_LAYERNORM:
            continue
        if spec.quantizer != "uniform":
            raise FxQuantError(f"the {observer.role} role is per channel with the {spec.quantizer!r} "
                               "quantizer: only a uniform grid can be smoothed")
        linears = [own_copy(gm, n, "Linear") for n in _linear_readers(gm, obs, observer.role)]
        if observer.min.numel() != linears[0].in_features:
            raise FxQuantError(f"the {observer.role} quantizer {obs.name} saw {observer.min.numel()} "
                               f"channels for a Linear of {linears[0].in_features} inputs")
        s = smoothing_factors(observer.min, observer.max, [lin.weight for lin in linears], alpha)
        samples = (observer.samples() / s).reshape(-1)
        params = UniformQuantizer.from_samples(spec.observer, samples, (observer.min / s).min(),
                                               (observer.max / s).max(), config.bits_for(spec),
                                               spec.symmetric)
        s = s.to(linears[0].weight)
        fold_linears(linears, s, None)
        scale_quantized_branch(gm, obs, [obs], s, None)
        annotation.update(obs, fitted=params)
    gm.graph.lint()
    gm.recompile()
    return gm
