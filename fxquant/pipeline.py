"""The passes a recipe may name, by name, and the check that a recipe names only passes and
quantizers that exist.

It sits above the passes (they import the config) so the config can stay plain data: a name is
checked here, before convert spends any time. Every pass has the signature
`fn(gm, config, calib_loader) -> gm`.
"""
from __future__ import annotations

from typing import Callable

from fxquant import quantizers
from fxquant.config import QuantConfig
from fxquant.errors import FxQuantError
from fxquant.passes.contrastive_search import contrastive_search
from fxquant.passes.integer_layernorm import integer_layernorm
from fxquant.passes.integer_softmax import integer_softmax
from fxquant.passes.reconstruct import reconstruct
from fxquant.passes.reparameterize_layernorm import reparameterize_layernorm
from fxquant.passes.split_two_scale import split_two_scale

# Run between calibration and quantization (observers hold their statistics).
PRE_QUANTIZE: dict[str, Callable] = {
    "reparameterize_layernorm": reparameterize_layernorm,
}

# Run after quantization; recipe names chain them with "+" ("repq-vit+recon").
REFINEMENTS: dict[str, Callable] = {
    "recon": reconstruct,
    "cpt-v": contrastive_search,
}

# Run last, in this order, when config.options["fully_quantized"] is on: LayerNorm and Softmax
# from integer codes.
INTEGER: dict[str, Callable] = {
    "integer_layernorm": integer_layernorm,
    "integer_softmax": integer_softmax,
    "split_two_scale": split_two_scale,  # V-2SF -> Linear
}


def get(name: str, table: dict[str, Callable]) -> Callable:
    if name not in table:
        raise FxQuantError(f"unknown pass {name!r}: available are {sorted(table)}")
    return table[name]


def check(config: QuantConfig) -> None:
    """Refuse a recipe naming a pass or quantizer that does not exist, before any work is done."""
    for name in config.passes:
        get(name, PRE_QUANTIZE)
    unknown = [r for r in config.refine if r not in REFINEMENTS]
    if unknown:
        raise FxQuantError(f"unknown refinement {unknown[0]!r}: available are {sorted(REFINEMENTS)}")
    for spec in config.roles.values():
        quantizers.get(spec.quantizer)
