"""`fxquant` command line; with no arguments it quantizes the bundled reference model."""
from __future__ import annotations

import argparse
import functools
import importlib
import json
import sys

from fxquant import cpu, target, workload
from fxquant.errors import FxQuantError

EXPORT_CHECK_IMAGES = 8
EXAMPLES = """examples:
  fxquant quantize --recipe repq-vit --bits w4a4     # the bundled model at 4 bits, integer ONNX
  fxquant recipes                                    # the recipes and the bits that suit each
  fxquant quantize --calib-data DIR --test-data DIR  # images from folders, a sub-folder per class
"""


def _quantize(args: argparse.Namespace) -> dict:
    from fxquant.api import convert
    from fxquant.evaluate import top1
    from fxquant.lowering.export import check_destination, export_onnx
    from fxquant.lowering.runtime import OnnxModule

    if args.out is not None and not args.no_onnx:
        check_destination(args.out)  # before minutes of calibration
    work = workload.from_args(args)
    recipe = args.recipe
    if args.fully_quantized:
        from dataclasses import replace

        from fxquant.config import FULLY_QUANTIZED, resolve
        cfg = resolve(recipe)
        recipe = replace(cfg, name=f"{cfg.name}-fully-quantized",
                         options={**cfg.options, FULLY_QUANTIZED: True})
    qmodel = convert(work.loaded.model, work.calib, recipe, args.bits, target=args.target)
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
            from fxquant.lowering.audit import audit, markdown, summary
            nodes = audit(path)
            print(markdown(nodes))
            result["float_nodes"] = len(nodes)
            result["float_ops"] = summary(nodes)
    return result


# `fxquant bench NAME` -> (module in fxquant.bench with add_arguments/run/markdown, help)
BENCHMARKS = {
    "speed": ("speed", "ONNX latency: FP32 vs fxquant vs onnxruntime quantize_static"),
    "latency": ("latency", "ONNX latency of given files (e.g. fully quantized vs QDQ)"),
    "parity": ("parity", "QuantizedModel vs its ONNX export: top-1 agreement"),
    "accuracy": ("accuracy", "top-1 of every recipe and bit-width beside the peers"),
    "stsb": ("stsb", "all-MiniLM-L6-v2 on STS-B: Spearman of every recipe and bit-width beside "
                     "the peers (needs the text extra)"),
    "attention-quantizers": ("attention_quantizers",
                             "post-Softmax quantizers (TanQ, log2, uniform) on real attention maps"),
    "cpt-v": ("cpt_v", "top-1 before and after the CPT-V scale search, per seed"),
    "dopq": ("dopq", "DopQ-ViT ablation: TanQ, MOSF, reconstruction on repq-vit"),
    "two-scale-error": ("two_scale_error",
                        "V-2SF vs uniform and log2 on real post-Softmax/post-GELU tensors"),
}


def _bench(module, args: argparse.Namespace) -> dict:
    result = module.run(args)
    print(module.markdown(result))
    return result


def _report(args: argparse.Namespace) -> dict:
    from fxquant.report_command import markdown, run
    result = run(args)
    print(markdown(result))
    return result


def _recipes(args: argparse.Namespace) -> None:
    """Print every recipe with what it is for and the bits that suit it (a JSON list with --json)."""
    from fxquant.config import RECIPES
    from fxquant.pipeline import REFINEMENTS
    rows = [{"name": name, "summary": RECIPES[name].summary, "bits": list(RECIPES[name].suggested_bits)}
            for name in sorted(RECIPES)]
    if args.json:
        print(json.dumps(rows))
        return
    for row in rows:
        print(f"{row['name']:<13} {' '.join(row['bits']):<22} {row['summary']}")
    print(f"refinements, appended with '+' (repq-vit+recon): {', '.join(sorted(REFINEMENTS))}")


def _print_result(result: dict, as_json: bool) -> None:
    for key, value in result.items():
        if isinstance(value, (list, dict)):
            continue  # tables were printed by the command; the JSON line holds everything
        print(f"{key:>16}: {value:.4f}" if isinstance(value, float) else f"{key:>16}: {value}")
    if as_json:
        print(json.dumps(result))


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; a benchmark's module (and its optional dependencies: NNCF, transformers) is
    imported only when `argv` selects that benchmark, so other commands start fast."""
    p = argparse.ArgumentParser(prog="fxquant", description=__doc__, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command")
    q = sub.add_parser("quantize", help="quantize a model, evaluate it, export ONNX")
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
    q.set_defaults(run=_quantize)

    recipes = sub.add_parser("recipes", help="list the recipes, what each is for, the bits that suit it")
    recipes.add_argument("--json", action="store_true", help="print a JSON list of {name, summary, bits}")
    recipes.set_defaults(run=_recipes)

    bench = sub.add_parser("bench", help="benchmarks: accuracy and speed against the usual tools")
    bench_sub = bench.add_subparsers(dest="benchmark", required=True)
    selected = argv[1] if argv is not None and len(argv) > 1 and argv[0] == "bench" else None
    for name, (module_name, help_text) in BENCHMARKS.items():
        b = bench_sub.add_parser(name, help=help_text)
        if argv is None or name == selected:
            module = importlib.import_module(f"fxquant.bench.{module_name}")
            module.add_arguments(b)
            b.set_defaults(run=functools.partial(_bench, module))

    from fxquant.report_command import add_arguments as report_arguments
    r = sub.add_parser("report", help="per-tensor SQNR and ranges (table + PNG), or plot "
                                      "accuracy against bit-width from `bench accuracy --json`")
    report_arguments(r)
    r.set_defaults(run=_report)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["quantize", *argv]  # bare options mean the main job
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        result = args.run(args)
    except FxQuantError as e:
        print(f"fxquant: error: {e}", file=sys.stderr)
        return 2
    if result is not None:  # `recipes` prints its own list
        _print_result(result, getattr(args, "json", False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
