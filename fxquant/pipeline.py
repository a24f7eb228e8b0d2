"""The passes a recipe may name, by name, and the check that a recipe names only passes,
quantizers, observer methods and options that exist (with allowed values).

It sits above the passes (they import the config) so the config can stay plain data: a name is
checked here, before convert spends any time. Every pass has the signature
`fn(gm, config, calib_loader) -> gm`.
"""
from __future__ import annotations

from typing import Callable, Mapping

from fxquant import quantizers
from fxquant.config import REWRITE_NAMES, PipelineOptions, QuantConfig
from fxquant.errors import FxQuantError
from fxquant.options import Options, unknown_option
from fxquant.passes.contrastive_search import CptvOptions, contrastive_search
from fxquant.passes.gptq import GptqOptions, gptq
from fxquant.passes.integer_layernorm import integer_layernorm
from fxquant.passes.integer_softmax import integer_softmax
from fxquant.passes.reconstruct import ReconOptions, reconstruct
from fxquant.passes.reparameterize_layernorm import FoldOptions, reparameterize_layernorm
from fxquant.passes.rotate import RotateOptions, rotate
from fxquant.passes.smooth_channels import SmoothOptions, smooth_channels
from fxquant.passes.split_two_scale import split_two_scale
from fxquant.quantizers.uniform import OBSERVER_METHODS

# Run on the float graph right after tracing, before roles and observers (they change the
# activations calibration must see); recipe names add them with "+" ("repq-vit+rotate").
FLOAT_REWRITES: dict[str, Callable] = {
    "rotate": rotate,
}
REWRITE_NAMES.update(FLOAT_REWRITES)

# Run between calibration and quantization (observers hold their statistics).
PRE_QUANTIZE: dict[str, Callable] = {
    "reparameterize_layernorm": reparameterize_layernorm,
    "smooth_channels": smooth_channels,
}

# Run after quantization; recipe names chain them with "+" ("repq-vit+recon").
REFINEMENTS: dict[str, Callable] = {
    "recon": reconstruct,
    "cpt-v": contrastive_search,
    "gptq": gptq,
}

# Run last, in this order, when config.options["fully_quantized"] is on: LayerNorm and Softmax
# from integer codes.
INTEGER: dict[str, Callable] = {
    "integer_layernorm": integer_layernorm,
    "integer_softmax": integer_softmax,
    "split_two_scale": split_two_scale,  # V-2SF -> Linear
}

# Every key of config.options belongs to one of these; each checks its own values.
OPTIONS: tuple[type[Options], ...] = (PipelineOptions, FoldOptions, ReconOptions, CptvOptions,
                                      GptqOptions, RotateOptions, SmoothOptions)


def get(name: str, table: dict[str, Callable]) -> Callable:
    if name not in table:
        raise FxQuantError(f"unknown pass {name!r}: available are {sorted(table)}")
    return table[name]


def check_options(options: Mapping[str, object]) -> None:
    """Refuse an option key no pass reads (naming the closest one) or a value its class refuses."""
    known = [key for kind in OPTIONS for key in kind.keys()]
    for key in options:
        if key not in known:
            raise unknown_option(key, known)
    for kind in OPTIONS:
        kind.from_options(options)


def _check_refinement_order(refine: tuple[str, ...]) -> None:
    """`gptq` only re-chooses weight codes, and `recon` learns every code again from the float
    weight, so GPTQ before reconstruction would be minutes thrown away without a word. After it,
    GPTQ's codes replace the learned rounding and the learned activation steps stay."""
    if "gptq" in refine and "recon" in refine[refine.index("gptq") + 1:]:
        raise FxQuantError("+gptq before +recon has no effect: reconstruction learns every weight's "
                           "rounding again from the float weight; put +gptq after +recon "
                           "(dopq-vit+gptq, repq-vit+recon+gptq) or leave it out")


def check(config: QuantConfig) -> None:
    """Refuse a recipe naming a pass, quantizer, observer method or option that does not exist, or
    an option value that is not allowed, before any work is done."""
    for name in config.rewrite:
        get(name, FLOAT_REWRITES)
    for name in config.passes:
        get(name, PRE_QUANTIZE)
    unknown = [r for r in config.refine if r not in REFINEMENTS]
    if unknown:
        raise FxQuantError(f"unknown refinement {unknown[0]!r}: available are {sorted(REFINEMENTS)} "
                           f"(float rewrites: {sorted(FLOAT_REWRITES)})")
    _check_refinement_order(config.refine)
    for role, spec in config.roles.items():
        quantizers.get(spec.quantizer)
        if spec.observer not in OBSERVER_METHODS:
            raise FxQuantError(f"unknown observer method {spec.observer!r} for role {role}: use one "
                               f"of {', '.join(OBSERVER_METHODS)}")
    check_options(config.options)
