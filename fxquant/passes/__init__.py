"""Graph passes, one per file. The registries name the passes a recipe may list.

Entries are "module:function" so that registering a pass imports nothing (passes import the
config, and the config validates names against these tables). Every registered pass has the
signature `fn(gm, config, calib_loader) -> gm`.
"""
from __future__ import annotations

import importlib
from typing import Callable

from fxquant.errors import FxQuantError

# Run between calibration and quantization (observers hold their statistics).
PRE_QUANTIZE: dict[str, str] = {
    "reparameterize_layernorm": "fxquant.passes.reparameterize_layernorm:reparameterize_layernorm",
}

# Run after quantization; recipe names chain them with "+" ("repq-vit+recon").
REFINEMENTS: dict[str, str] = {
    "recon": "fxquant.passes.reconstruct:reconstruct",
    "cpt-v": "fxquant.passes.contrastive_search:contrastive_search",
}

# Run last, when config.options["fully_quantized"] is on: LayerNorm and Softmax from integer codes.
INTEGER: dict[str, str] = {
    "integer_layernorm": "fxquant.passes.integer_layernorm:integer_layernorm",
    "integer_softmax": "fxquant.passes.integer_softmax:integer_softmax",
    "split_two_scale": "fxquant.passes.split_two_scale:split_two_scale",  # V-2SF -> Linear
}


def load(name: str, table: dict[str, str]) -> Callable:
    if name not in table:
        raise FxQuantError(f"unknown pass {name!r}: available are {sorted(table)}")
    module, function = table[name].split(":")
    return getattr(importlib.import_module(module), function)
