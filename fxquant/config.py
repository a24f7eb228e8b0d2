"""QuantConfig and the registry of named recipes. A recipe is data: a quantizer choice per role,
plus passes and options (typed in fxquant/options.py); each method's file in fxquant/methods/
registers its own.

Bits are given apart from the recipe (`"w4a4"`, `"w8a8attn4"`) and fill the `w` / `a` / `attn`
slots the role specs refer to.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Mapping

from fxquant import roles, target as targets
from fxquant.errors import FxQuantError
from fxquant.options import BOOL, Options, option


@dataclass(frozen=True)
class RoleSpec:
    """How tensors of one role are quantized."""
    quantizer: str = "uniform"      # a name registered in fxquant.quantizers (QUANTIZERS)
    observer: str = "minmax"        # minmax | percentile | mse (percentile-MSE search)
    per_channel: bool = False       # per output channel for weights, per last-dim channel else
    symmetric: bool = False
    bits: str = "a"                 # "w", "a", "attn", or a fixed number such as "8"


FULLY_QUANTIZED = "fully_quantized"


@dataclass(frozen=True)
class PipelineOptions(Options):
    """Options of the pipeline itself (any recipe). fully_quantized: also quantize the inputs of
    LayerNorm, Softmax and GELU (roles.pre_*, with the recipe's linear_input spec unless it names
    them) and compute LayerNorm and Softmax from the integer codes where the quantizers allow it
    (pipeline.INTEGER)."""
    PREFIX = "fully_"
    fully_quantized: bool = option(False, BOOL)


@dataclass(frozen=True)
class QuantConfig:
    name: str
    roles: Mapping[str, RoleSpec]
    w_bits: int = 8
    a_bits: int = 8
    attn_bits: int | None = None    # post-softmax bits; None means a_bits
    rewrite: tuple[str, ...] = ()   # float-graph rewrites right after tracing ("rotate")
    passes: tuple[str, ...] = ()    # graph passes between calibration and quantization
    refine: tuple[str, ...] = ()    # passes after quantization ("recon", "cpt-v")
    options: Mapping[str, object] = field(default_factory=dict)
    target: str = targets.DEFAULT   # CPUs the integer file must be exact on (fxquant/target.py)
    # Largest relative L2 difference between onnxruntime and PyTorch on the export example that
    # export_onnx accepts (float32 kernels round differently: a code can move across a .5 tie).
    export_tolerance: float = 0.05
    summary: str = ""               # what the recipe is for, one line (`fxquant recipes`)
    suggested_bits: tuple[str, ...] = ()   # the bit-widths it suits, best first, e.g. ("w4a4",)

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


# Names of the float-graph rewrites (pipeline.FLOAT_REWRITES, which fills this set): a `+name`
# suffix naming one goes to QuantConfig.rewrite, any other to QuantConfig.refine.
REWRITE_NAMES: set[str] = set()

# Named recipes, filled by the files of fxquant/methods/ (one per method, each registering its
# own); fxquant.api imports that package, so importing any fxquant module fills it.
RECIPES: dict[str, QuantConfig] = {}


def register_recipe(config: QuantConfig) -> QuantConfig:
    """Add `config` to RECIPES under its name, which `resolve` then accepts."""
    if config.name != config.name.strip().lower() or "+" in config.name:
        raise FxQuantError(f"recipe name {config.name!r} must be lower case, without spaces or '+'")
    if config.name in RECIPES:
        raise FxQuantError(f"a recipe named {config.name!r} is already registered")
    RECIPES[config.name] = config
    return config


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


def resolve(config: str | QuantConfig, bits: str | None = None, target: str | None = None,
            options: Mapping[str, object] | None = None) -> QuantConfig:
    """A recipe name (with `+rewrite` / `+refinement` suffixes) or a QuantConfig, with bits, target
    and `options` (values over the recipe's, e.g. {"recon_iters": 2000}) applied. Pass names and
    the passes' options are not checked here (pipeline.check does: the passes import the config)."""
    if not isinstance(config, (str, QuantConfig)):
        raise FxQuantError(f"config must be a recipe name or a QuantConfig, not {type(config).__name__}: "
                           f"choose one of {sorted(RECIPES)}")
    if isinstance(config, QuantConfig):
        cfg = config
    else:
        base, *suffixes = config.strip().lower().split("+")
        if base not in RECIPES:
            raise FxQuantError(f"unknown recipe {base!r}: choose one of {sorted(RECIPES)}")
        rewrite = tuple(name for name in suffixes if name in REWRITE_NAMES)
        refine = tuple(name for name in suffixes if name not in REWRITE_NAMES)
        cfg = replace(RECIPES[base], rewrite=RECIPES[base].rewrite + rewrite,
                      refine=RECIPES[base].refine + refine)
        cfg = replace(cfg, name=config.strip().lower())
    if options:
        cfg = replace(cfg, options={**cfg.options, **options})
    if PipelineOptions.from_options(cfg.options).fully_quantized:
        default = cfg.roles.get(roles.LINEAR_INPUT, RoleSpec())
        cfg = replace(cfg, roles={**{r: default for r in roles.FULLY_QUANTIZED_ROLES}, **cfg.roles})
    cfg = replace(cfg, target=targets.check_target(cfg.target if target is None else target))
    return replace(cfg, **parse_bits(bits)) if bits else cfg
