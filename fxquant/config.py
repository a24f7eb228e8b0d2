"""QuantConfig and the named recipes. A recipe is data: a quantizer choice per role, plus passes.

Bits are given apart from the recipe (`"w4a4"`, `"w8a8attn4"`) and fill the `w` / `a` / `attn`
slots the role specs refer to.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Mapping

from fxquant import roles, target as targets
from fxquant.errors import FxQuantError


@dataclass(frozen=True)
class RoleSpec:
    """How tensors of one role are quantized."""
    quantizer: str = "uniform"      # a name registered in fxquant.quantizers (QUANTIZERS)
    observer: str = "minmax"        # minmax | percentile | mse (percentile-MSE search)
    per_channel: bool = False       # per output channel for weights, per last-dim channel else
    symmetric: bool = False
    bits: str = "a"                 # "w", "a", "attn", or a fixed number such as "8"


# Option (any recipe): also quantize the inputs of LayerNorm, Softmax and GELU (roles.pre_*, with
# the recipe's linear_input spec unless it names them) and compute LayerNorm and Softmax from the
# integer codes where the quantizers allow it (pipeline.INTEGER).
FULLY_QUANTIZED = "fully_quantized"


@dataclass(frozen=True)
class QuantConfig:
    name: str
    roles: Mapping[str, RoleSpec]
    w_bits: int = 8
    a_bits: int = 8
    attn_bits: int | None = None    # post-softmax bits; None means a_bits
    passes: tuple[str, ...] = ()    # graph passes between calibration and quantization
    refine: tuple[str, ...] = ()    # passes after quantization ("recon", "cpt-v")
    options: Mapping[str, object] = field(default_factory=dict)
    target: str = targets.DEFAULT   # CPUs the integer file must be exact on (fxquant/target.py)
    # Largest relative L2 difference between onnxruntime and PyTorch on the export example that
    # export_onnx accepts (float32 kernels round differently: a code can move across a .5 tie).
    export_tolerance: float = 0.05

    def bits_for(self, spec: RoleSpec) -> int:
        slots = {"w": self.w_bits, "a": self.a_bits,
                 "attn": self.attn_bits if self.attn_bits is not None else self.a_bits}
        bits = slots[spec.bits] if spec.bits in slots else int(spec.bits)
        if not 2 <= bits <= 8:
            raise FxQuantError(f"bit-width {bits} is not supported: use 2 to 8 bits")
        return bits

    @property
    def bits_label(self) -> str:
        label = f"w{self.w_bits}a{self.a_bits}"
        return label + (f"attn{self.attn_bits}" if self.attn_bits is not None else "")


_ACT = RoleSpec()
RECIPES: dict[str, QuantConfig] = {
    "minmax": QuantConfig(
        name="minmax",
        roles={
            roles.WEIGHT: RoleSpec(per_channel=True, symmetric=True, bits="w"),
            roles.MODEL_INPUT: RoleSpec(bits="8"),
            roles.POST_LAYERNORM: _ACT,
            roles.POST_GELU: _ACT,
            roles.LINEAR_INPUT: _ACT,
            roles.MATMUL_INPUT: _ACT,
            roles.POST_SOFTMAX: RoleSpec(bits="attn"),
        },
    ),
}

# RepQ-ViT (methods/repq-vit.md): percentile-MSE everywhere, per-channel post-LayerNorm grids
# folded into LN + Linear, log√2 attention (uniform where its MSE is lower: 6-8 bits);
# `-sym` keeps weight zero points at 0.
_MSE = RoleSpec(observer="mse")
_REPQ_ROLES = {
    roles.WEIGHT: RoleSpec(observer="mse", per_channel=True, bits="w"),
    roles.MODEL_INPUT: RoleSpec(observer="mse", bits="8"),
    roles.POST_LAYERNORM: RoleSpec(observer="mse", per_channel=True),
    roles.POST_GELU: _MSE,
    roles.LINEAR_INPUT: _MSE,
    roles.MATMUL_INPUT: _MSE,
    roles.POST_SOFTMAX: RoleSpec(quantizer="logsqrt2_or_uniform", observer="mse", bits="attn"),
}
RECIPES["repq-vit"] = QuantConfig(name="repq-vit", roles=_REPQ_ROLES,
                                  passes=("reparameterize_layernorm",))
RECIPES["repq-vit-sym"] = replace(RECIPES["repq-vit"], name="repq-vit-sym", roles={
    **_REPQ_ROLES, roles.WEIGHT: RoleSpec(observer="mse", per_channel=True, symmetric=True, bits="w")})

# DopQ-ViT (methods/dopq-vit.md): RepQ-ViT with TanQ attention, the median fold target (MOSF)
# and block reconstruction (benchmarks/dopq.md has the ablation).
RECIPES["dopq-vit"] = replace(
    RECIPES["repq-vit"], name="dopq-vit", refine=("recon",), options={"fold_target": "median"},
    roles={**_REPQ_ROLES, roles.POST_SOFTMAX: RoleSpec(quantizer="tan", observer="mse", bits="attn")})

# FQ-ViT (methods/fq-vit.md): fully quantized, MinMax uint8 activations, PTF on LayerNorm inputs
# (integer LayerNorm), Log-Int-Softmax attention at <= 4 attention bits (uniform above: its 8/8/8).
RECIPES["fq-vit"] = QuantConfig(
    name="fq-vit", attn_bits=4, options={FULLY_QUANTIZED: True},
    roles={**RECIPES["minmax"].roles,
           roles.PRE_LAYERNORM: RoleSpec(quantizer="ptf", per_channel=True),
           roles.PRE_SOFTMAX: _ACT, roles.PRE_GELU: _ACT,
           roles.POST_SOFTMAX: RoleSpec(quantizer="lis", bits="attn")})

# TSPTQ-ViT (methods/tsptq-vit.md): FQ-ViT's fully quantized setting with two-scaled factors,
# V-2SF on post-Softmax and post-GELU values, O-2SF (a two-level PTF) on LayerNorm inputs.
RECIPES["tsptq-vit"] = QuantConfig(
    name="tsptq-vit", options={FULLY_QUANTIZED: True},
    roles={**RECIPES["minmax"].roles,
           roles.PRE_LAYERNORM: RoleSpec(quantizer="o2sf", per_channel=True),
           roles.PRE_SOFTMAX: _ACT, roles.PRE_GELU: _ACT,
           roles.POST_SOFTMAX: RoleSpec(quantizer="two_scale", bits="attn"),
           roles.POST_GELU: RoleSpec(quantizer="two_scale")})

_BITS = re.compile(r"^w(\d+)a(\d+)(?:attn(\d+))?$")


def parse_bits(bits: str) -> dict[str, int | None]:
    """'w4a4' -> {'w_bits': 4, 'a_bits': 4, 'attn_bits': None}; 'w8a8attn4' sets attn_bits."""
    m = _BITS.match(bits.strip().lower())
    if not m:
        raise FxQuantError(f"cannot read bit-widths {bits!r}: write them like w8a8, w4a4 or w8a8attn4")
    parsed = {"w_bits": int(m[1]), "a_bits": int(m[2]), "attn_bits": int(m[3]) if m[3] else None}
    for key, value in parsed.items():
        if value is not None and not 2 <= value <= 8:
            raise FxQuantError(f"bit-width {value} in {bits!r} is not supported: use 2 to 8 bits")
    return parsed


def resolve(config: str | QuantConfig, bits: str | None = None,
            target: str | None = None) -> QuantConfig:
    """A recipe name (with `+refinement` suffixes) or a QuantConfig, with bits and target applied.
    Pass names are not checked here (pipeline.check does: the passes import the config)."""
    if isinstance(config, QuantConfig):
        cfg = config
    else:
        base, *refine = config.strip().lower().split("+")
        if base not in RECIPES:
            raise FxQuantError(f"unknown recipe {base!r}: choose one of {sorted(RECIPES)}")
        cfg = replace(RECIPES[base], refine=RECIPES[base].refine + tuple(refine))
        cfg = replace(cfg, name=config.strip().lower())
    if cfg.options.get(FULLY_QUANTIZED):
        default = cfg.roles.get(roles.LINEAR_INPUT, RoleSpec())
        cfg = replace(cfg, roles={**{r: default for r in roles.FULLY_QUANTIZED_ROLES}, **cfg.roles})
    cfg = replace(cfg, target=targets.check_target(cfg.target if target is None else target))
    return replace(cfg, **parse_bits(bits)) if bits else cfg
