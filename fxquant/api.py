"""The public surface: convert() runs the whole pipeline and returns a QuantizedModel."""
from __future__ import annotations

import time
import warnings
from typing import Iterable, Sequence

import torch

from fxquant import pipeline
from fxquant.calibrate import calibrate
from fxquant.config import PipelineOptions, QuantConfig, resolve
from fxquant.data import TransformFn, read_batches
from fxquant.float32 import as_float32
from fxquant.ignored_scope import IgnoredScope
from fxquant.methods import METHODS  # importing the methods registers their recipes
from fxquant.passes.annotate_roles import annotate_roles
from fxquant.passes.insert_observers import insert_observers
from fxquant.passes.keep_float import NO_QUANTIZED_FORM, keep_float
from fxquant.passes.quantize import quantize
from fxquant.quantized_model import QuantizedModel
from fxquant.tracing import trace

__all__ = ["METHODS", "IgnoredScope", "QuantizedModel", "convert"]


def convert(model: torch.nn.Module, calib_loader: Iterable, config: str | QuantConfig = "minmax",
            bits: str | None = None, input_names: Sequence[str] | None = None,
            target: str | None = None, transform_fn: TransformFn | None = None,
            ignored_scope: IgnoredScope | None = None) -> QuantizedModel:
    """Trace, calibrate and quantize `model` as recipe `config` says (bits like "w4a4"); `target`
    ("portable", the default, or "vnni") names the CPUs the integer file must be exact on.

    `calib_loader` is any iterable (a one-shot generator too: it is read once); `transform_fn`
    maps one of its items to the model's inputs (a tensor, a tuple of positional inputs or a dict
    of keyword inputs), e.g. `lambda batch: {"pixel_values": batch["pixel_values"]}` to leave a
    Hugging Face batch's labels out. Without it an item is a tensor, (inputs, labels...) or a dict.
    `ignored_scope` names parts to keep in float (module paths, patterns, types, roles). What
    stays float, asked for or not, is listed in the result's `float_parts`; parts fxquant has no
    quantized form for are also warned about.
    """
    start = time.perf_counter()
    cfg = resolve(config, bits, target)
    pipeline.check(cfg)
    model, calib_loader = as_float32(model, read_batches(calib_loader, transform_fn))
    example = next(iter(calib_loader))  # decides branches on sizes while tracing
    fully_quantized = PipelineOptions.from_options(cfg.options).fully_quantized
    gm = trace(model, input_names, example)
    for name in cfg.rewrite:
        gm = pipeline.get(name, pipeline.FLOAT_REWRITES)(gm, cfg, calib_loader)
    gm = keep_float(annotate_roles(gm, fully_quantized), ignored_scope)
    _warn_unquantizable(gm.meta["float_parts"])
    insert_observers(gm, cfg)
    calibrate(gm, calib_loader)
    for name in cfg.passes:
        gm = pipeline.get(name, pipeline.PRE_QUANTIZE)(gm, cfg, calib_loader)
    quantize(gm, cfg)
    for name in cfg.refine:
        gm = pipeline.get(name, pipeline.REFINEMENTS)(gm, cfg, calib_loader)
    for integer_pass in pipeline.INTEGER.values() if fully_quantized else ():
        gm = integer_pass(gm, cfg, calib_loader)
    return QuantizedModel(gm, cfg, time.perf_counter() - start)


def _warn_unquantizable(parts) -> None:
    unasked = [str(p.name) + f" ({p.kind})" for p in parts if p.reason == NO_QUANTIZED_FORM]
    if unasked:
        warnings.warn(f"{len(unasked)} part(s) stay float, {NO_QUANTIZED_FORM}: {', '.join(unasked[:5])}"
                      + (" ..." if len(unasked) > 5 else ""), stacklevel=3)
