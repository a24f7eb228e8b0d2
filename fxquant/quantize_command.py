"""`fxquant quantize`: convert a model, evaluate it, export and check the integer ONNX; its
arguments and the one result dict every caller (the command line, sweeps) reads."""
from __future__ import annotations

import argparse
from dataclasses import replace

from fxquant import cpu, target, workload
from fxquant.api import convert
from fxquant.config import FULLY_QUANTIZED, resolve
from fxquant.evaluate import top1
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
    target.add_argument(q)
    q.add_argument("--no-onnx", action="store_true", help="skip the ONNX export")
    q.add_argument("--no-verify", action="store_true",
                   help="write the ONNX file even if onnxruntime disagrees with PyTorch on it")
    q.add_argument("--fully-quantized", action="store_true",
                   help="also quantize LayerNorm/Softmax/GELU inputs, integer LayerNorm and Softmax")
    q.add_argument("--audit", action="store_true",
                   help="list the ONNX nodes onnxruntime runs in float after the input is quantized")
    q.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def _recipe(args: argparse.Namespace):
    if not args.fully_quantized:
        return args.recipe
    cfg = resolve(args.recipe)
    return replace(cfg, name=f"{cfg.name}-fully-quantized", options={**cfg.options, FULLY_QUANTIZED: True})


def run(args: argparse.Namespace) -> dict:
    if args.out is not None and not args.no_onnx:
        check_destination(args.out)  # before minutes of calibration
    work = workload.from_args(args)
    qmodel = convert(work.loaded.model, work.calib, _recipe(args), args.bits, target=args.target)
    result = {"model": work.loaded.name, "recipe": qmodel.config.name,
              "bits": qmodel.config.bits_label, "target": qmodel.config.target,
              "cpu": cpu.current().kind, "calib_images": work.calib_images,
              "eval_images": work.eval_images, "fp32_top1": None, "quant_top1": None,
              "convert_seconds": round(qmodel.convert_seconds, 2)}
    if work.test is not None:
        result["fp32_top1"] = top1(work.loaded.model, work.test, "evaluating fp32")
        result["quant_top1"] = top1(qmodel, work.test, "evaluating quantized")
    if not args.no_onnx:
        out = args.out or f"{work.loaded.name}_{qmodel.config.name}_{qmodel.config.bits_label}.onnx"
        # the self-check runs the file on several calibration images; the batch axis stays free
        path = export_onnx(qmodel, out, next(iter(work.calib))[0][:EXPORT_CHECK_IMAGES],
                           verify=not args.no_verify)
        result["onnx_path"] = str(path)
        if work.test is not None:
            result["onnx_top1"] = top1(OnnxModule(path), work.test, "evaluating onnx")
        if args.audit:
            nodes = audit(path)
            print(markdown(nodes))
            result["float_nodes"] = len(nodes)
            result["float_ops"] = summary(nodes)
    return result
