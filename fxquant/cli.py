"""`fxquant` command line; with no arguments it quantizes the bundled reference model."""
from __future__ import annotations

import argparse
import functools
import importlib
import json
import sys

from fxquant import quantize_command, report_command
from fxquant.config import RECIPES
from fxquant.errors import FxQuantError
from fxquant.pipeline import FLOAT_REWRITES, REFINEMENTS

EXAMPLES = """examples:
  fxquant quantize --recipe repq-vit --bits w4a4     # the bundled model at 4 bits, integer ONNX
  fxquant recipes                                    # the recipes and the bits that suit each
  fxquant quantize --calib-data DIR --test-data DIR  # images from folders, a sub-folder per class
"""


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
    "memory": ("memory", "peak memory of quantize + export per ViT size (vit_small to vit_huge)"),
    "two-scale-error": ("two_scale_error",
                        "V-2SF vs uniform and log2 on real post-Softmax/post-GELU tensors"),
}


def _bench(module, args: argparse.Namespace) -> dict:
    result = module.run(args)
    print(module.markdown(result))
    return result


def _report(args: argparse.Namespace) -> dict:
    result = report_command.run(args)
    print(report_command.markdown(result))
    return result


def _sweep(args: argparse.Namespace) -> dict:
    from fxquant.sweep.command import markdown, run
    result = run(args)
    print(markdown(result))
    return result


def _recipes(args: argparse.Namespace) -> None:
    """Print every recipe with what it is for and the bits that suit it (a JSON list with --json)."""
    rows = [{"name": name, "summary": RECIPES[name].summary, "bits": list(RECIPES[name].suggested_bits)}
            for name in sorted(RECIPES)]
    if args.json:
        print(json.dumps(rows))
        return
    for row in rows:
        print(f"{row['name']:<13} {' '.join(row['bits']):<22} {row['summary']}")
    print(f"refinements, appended with '+' (repq-vit+recon): {', '.join(sorted(REFINEMENTS))}")
    print(f"float rewrites before calibration, appended with '+' (repq-vit+rotate): "
          f"{', '.join(sorted(FLOAT_REWRITES))}")


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
    quantize_command.add_arguments(q)
    q.set_defaults(run=quantize_command.run)

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

    r = sub.add_parser("report", help="per-tensor SQNR and ranges (table + PNG), or plot "
                                      "accuracy against bit-width from `bench accuracy --json`")
    report_command.add_arguments(r)
    r.set_defaults(run=_report)

    s = sub.add_parser("sweep", help="models x recipes x bit-widths, each cell `fxquant quantize` "
                                     "as a Ray task (local, or a cluster by address), resumable "
                                     "(needs the ray extra)")
    if argv is None or argv[:1] == ["sweep"]:  # Ray is imported only for a sweep
        from fxquant.sweep.command import add_arguments as sweep_arguments
        sweep_arguments(s)
        s.set_defaults(run=_sweep)
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
