"""`fxquant` command line; with no arguments it quantizes the bundled reference model."""
from __future__ import annotations

import argparse
import json
import sys

from fxquant import workload
from fxquant.errors import FxQuantError


def _quantize(args: argparse.Namespace) -> dict:
    from fxquant.api import convert
    from fxquant.evaluate import top1

    if args.out:
        raise FxQuantError("--out: ONNX export is not available yet in this version")
    work = workload.from_args(args)
    qmodel = convert(work.loaded.model, work.calib, args.recipe, args.bits)
    result = {"model": work.loaded.name, "recipe": qmodel.config.name,
              "bits": qmodel.config.bits_label, "calib_images": work.calib_images,
              "eval_images": work.eval_images, "fp32_top1": None, "quant_top1": None,
              "convert_seconds": round(qmodel.convert_seconds, 2)}
    if work.test is not None:
        result["fp32_top1"] = top1(work.loaded.model, work.test, "evaluating fp32")
        result["quant_top1"] = top1(qmodel, work.test, "evaluating quantized")
    return result


def _print_result(result: dict, as_json: bool) -> None:
    for key, value in result.items():
        print(f"{key:>16}: {value:.4f}" if isinstance(value, float) else f"{key:>16}: {value}")
    if as_json:
        print(json.dumps(result))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fxquant", description=__doc__)
    sub = p.add_subparsers(dest="command")
    q = sub.add_parser("quantize", help="quantize a model, evaluate it, export ONNX")
    workload.add_arguments(q)
    q.add_argument("--recipe", default="minmax", help="recipe name, e.g. minmax")
    q.add_argument("--bits", default="w8a8", help="bit-widths, e.g. w8a8, w4a4, w8a8attn4")
    q.add_argument("--out", default=None, help="path of the integer ONNX model to write")
    q.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    q.set_defaults(run=_quantize)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["quantize", *argv]  # bare options mean the main job
    args = parser.parse_args(argv)
    try:
        result = args.run(args)
    except FxQuantError as e:
        print(f"fxquant: error: {e}", file=sys.stderr)
        return 2
    _print_result(result, getattr(args, "json", False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
