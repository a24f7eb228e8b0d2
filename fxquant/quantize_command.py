"""`fxquant quantize`: convert a model, evaluate it, export and check the integer ONNX; its
arguments and the one result dict every caller (the command line, sweeps) reads."""
from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from dataclasses import asdict, replace

import torch

from fxquant import cpu, options, pipeline, target, workload
from fxquant.allocator import return_freed_memory
from fxquant.annotation import release_float_weights
from fxquant.api import convert
from fxquant.config import FULLY_QUANTIZED, QuantConfig, resolve
from fxquant.errors import FxQuantError
from fxquant.evaluate import top1
from fxquant.ignored_scope import IgnoredScope
from fxquant.lowering.audit import audit, markdown, summary
from fxquant.lowering.export import check_destination, export_onnx
from fxquant.lowering.runtime import OnnxModule

EXPORT_CHECK_IMAGES = 8


def add_arguments(q: argparse.ArgumentParser) -> None:
    workload.add_arguments(q)
    q.add_argument("--recipe", default="minmax", help="recipe name, e.g. minmax")
    q.add_argument("--bits", default=None,
                   help="bit-widths, e.g. w8a8, w4a4, w8a8attn4 (default: the recipe's, w8a8 for most)")
    q.add_argument("--out", default=None,
                   help="path of the integer ONNX model (default: <model>_<recipe>_<bits>.onnx)")
    add_cell_options(q)
    q.add_argument("--ignore-names", nargs="+", default=(), metavar="PATH",
                   help="keep these modules (and all inside them) in float, e.g. blocks.11 head")
    q.add_argument("--ignore-patterns", nargs="+", default=(), metavar="REGEX",
                   help="keep modules whose path matches in full in float, e.g. 'blocks\\.1[01]\\..*'")
    q.add_argument("--ignore-types", nargs="+", default=(), metavar="TYPE",
                   help="keep modules of these classes (or inside them) in float, e.g. Mlp, or 'matmul' "
                        "for every product of two activations")
    q.add_argument("--ignore-roles", nargs="+", default=(), metavar="ROLE",
                   help="leave tensors of these roles unquantized, e.g. post_softmax")
    q.add_argument("--audit", action="store_true",
                   help="list the ONNX nodes onnxruntime runs in float after the input is quantized")
    q.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def add_cell_options(q: argparse.ArgumentParser) -> None:
    """How a model is converted, exported and run, apart from its model, recipe and bits: the
    options `fxquant sweep` passes to every cell."""
    target.add_argument(q)
    options.add_argument(q)
    q.add_argument("--no-onnx", action="store_true", help="skip the ONNX export")
    q.add_argument("--no-verify", action="store_true",
                   help="write the ONNX file even if onnxruntime disagrees with PyTorch on it")
    q.add_argument("--fully-quantized", action="store_true",
                   help="also quantize LayerNorm/Softmax/GELU inputs, integer LayerNorm and Softmax")
    q.add_argument("--threads", type=int, default=None,
                   help="torch and onnxruntime threads (default: theirs, one per core; 1 in each cell of "
                        "`fxquant sweep`): fix it to compare runs across machines")


def _recipe(args: argparse.Namespace) -> QuantConfig:
    cfg = resolve(args.recipe, options=dict(args.option))
    if not args.fully_quantized:
        return cfg
    return replace(cfg, name=f"{cfg.name}-fully-quantized", options={**cfg.options, FULLY_QUANTIZED: True})


def run(args: argparse.Namespace) -> dict:
    if args.threads is not None and args.threads < 1:
        raise FxQuantError(f"--threads must be at least 1, got {args.threads}")
    if args.out is not None and not args.no_onnx:
        check_destination(args.out)  # before minutes of calibration
    recipe = _recipe(args)
    pipeline.check(recipe)  # a misspelled pass or option fails before the model loads
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return_freed_memory()  # before the model: the peak is then what the job holds at once
    work = workload.from_args(args)
    scope = IgnoredScope(names=args.ignore_names, patterns=args.ignore_patterns,
                         types=args.ignore_types, roles=args.ignore_roles)
    qmodel = convert(work.loaded.model, work.calib, recipe, args.bits, target=args.target,
                     ignored_scope=scope)
    for part in qmodel.float_parts:
        print(f"kept float: {part}")
    result = {"model": work.loaded.name, "recipe": qmodel.config.name,
              "bits": qmodel.config.bits_label, "target": qmodel.config.target,
              "options": dict(args.option), "cpu": cpu.current().kind, "calib_images": work.calib_images,
              "eval_images": work.eval_images, "fp32_top1": None, "quant_top1": None,
              "convert_seconds": round(qmodel.convert_seconds, 2),
              "float_parts": [asdict(part) for part in qmodel.float_parts]}
    if work.test is not None:
        result["fp32_top1"] = top1(work.loaded.model, work.test, "evaluating fp32")
        result["quant_top1"] = top1(qmodel, work.test, "evaluating quantized")
    if not args.no_onnx:
        _release_float_model(work, qmodel)
        start = time.perf_counter()
        out = args.out or f"{work.loaded.name}_{qmodel.config.name}_{qmodel.config.bits_label}.onnx"
        # the self-check runs the file on several calibration images; the batch axis stays free
        path = export_onnx(qmodel, out, next(iter(work.calib))[0][:EXPORT_CHECK_IMAGES],
                           verify=not args.no_verify)
        result["export_seconds"] = round(time.perf_counter() - start, 2)
        result["onnx_path"] = str(path)
        if work.test is not None:
            result["onnx_top1"] = top1(OnnxModule(path, args.threads), work.test, "evaluating onnx")
        if args.audit:
            nodes = audit(path)
            print(markdown(nodes))
            result["float_nodes"] = len(nodes)
            result["float_ops"] = summary(nodes)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def _release_float_model(work: workload.Workload, qmodel) -> None:
    """The export needs neither the float model nor the float weights kept for refinements and
    reports: letting both go first keeps a large model's export near its integer size."""
    release_float_weights(qmodel)
    work.loaded.model = None
    gc.collect()  # module trees and traced graphs hold reference cycles


def peak_rss_mb() -> float:
    """The process's peak resident memory so far, in MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2 ** 20 if sys.platform == "darwin" else 2 ** 10), 1)
