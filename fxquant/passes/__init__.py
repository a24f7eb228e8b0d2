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
PRE_QUANTIZE: dict[str, str] = {}

# Run after quantization; recipe names chain them with "+" ("repq-vit+recon").
REFINEMENTS: dict[str, str] = {
    "recon": "fxquant.passes.reconstruct:reconstruct",
}


def load(name: str, table: dict[str, str]) -> Callable:
    if name not in table:
        raise FxQuantError(f"unknown pass {name!r}: available are {sorted(table)}")
    module, function = table[name].split(":")
    return getattr(importlib.import_module(module), function)
