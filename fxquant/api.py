"""The public surface: convert() runs the whole pipeline and returns a QuantizedModel."""
from __future__ import annotations

import time
from typing import Iterable, Sequence

import torch
import torch.fx as fx

from fxquant import config as config_mod
from fxquant import passes
from fxquant.calibrate import calibrate
from fxquant.config import QuantConfig
from fxquant.float32 import as_float32
from fxquant.passes.annotate_roles import annotate_roles
from fxquant.passes.insert_observers import insert_observers
from fxquant.passes.quantize import quantize
from fxquant.trace import trace


class QuantizedModel(fx.GraphModule):
    """A GraphModule running the quantized numerics, with the config that made it."""

    def __init__(self, gm: fx.GraphModule, config: QuantConfig, convert_seconds: float):
        super().__init__(gm, gm.graph, f"Quantized{type(gm).__name__}")
        self.config = config
        self.convert_seconds = convert_seconds
        self.meta.update(gm.meta)  # what refinements recorded (search curves, times)

    def __deepcopy__(self, memo):
        """GraphModule's deepcopy keeps the graph and buffers only: keep the config too."""
        return QuantizedModel(super().__deepcopy__(memo), self.config, self.convert_seconds)


def convert(model: torch.nn.Module, calib_loader: Iterable, config: str | QuantConfig = "minmax",
            bits: str | None = None, input_names: Sequence[str] | None = None,
            target: str | None = None) -> QuantizedModel:
    """Trace, calibrate and quantize `model` as recipe `config` says (bits like "w4a4"); `target`
    ("portable", the default, or "vnni") names the CPUs the integer file must be exact on."""
    start = time.perf_counter()
    cfg = config_mod.resolve(config, bits, target)
    model, calib_loader = as_float32(model, calib_loader)  # the result takes float32 inputs
    example = next(iter(calib_loader), None)  # decides branches on sizes while tracing
    gm = annotate_roles(trace(model, input_names, example), bool(cfg.options.get(config_mod.FULLY_QUANTIZED)))
    insert_observers(gm, cfg)
    calibrate(gm, calib_loader)
    for name in cfg.passes:
        gm = passes.load(name, passes.PRE_QUANTIZE)(gm, cfg, calib_loader)
    quantize(gm, cfg)
    for name in cfg.refine:
        gm = passes.load(name, passes.REFINEMENTS)(gm, cfg, calib_loader)
    for name in passes.INTEGER if cfg.options.get(config_mod.FULLY_QUANTIZED) else ():
        gm = passes.load(name, passes.INTEGER)(gm, cfg, calib_loader)
    return QuantizedModel(gm, cfg, time.perf_counter() - start)
