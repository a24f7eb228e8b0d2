"""`fxquant report`: the SQNR table (and plot) of one recipe on a model, or the plot of top-1
against bit-width from `fxquant bench accuracy --json`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from fxquant import workload
from fxquant.api import convert
from fxquant.errors import FxQuantError
from fxquant.plots import plot_accuracy, plot_sqnr
from fxquant.sqnr import report, table


def add_arguments(p: argparse.ArgumentParser) -> None:
    workload.add_arguments(p)
    p.set_defaults(eval=256)
    p.add_argument("--recipe", default="minmax", help="recipe name, e.g. minmax")
    p.add_argument("--bits", default="w8a8", help="bit-widths, e.g. w8a8, w4a4")
    p.add_argument("--png", default=None, help="where to write the plot")
    p.add_argument("--accuracy-json", default=None,
                   help="plot top-1 against bit-width from this `bench accuracy --json` object "
                        "instead of reporting a model")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def run(args: argparse.Namespace) -> dict:
    if args.accuracy_json:
        try:
            result = json.loads(Path(args.accuracy_json).read_text())
        except (OSError, ValueError) as e:
            raise FxQuantError(f"cannot read {args.accuracy_json} as bench accuracy JSON: "
                               f"{e}") from e
        return {"accuracy_json": args.accuracy_json,
                "png": str(plot_accuracy(result, args.png or "accuracy_vs_bits.png"))}
    work = workload.from_args(args)
    if work.test is None:
        raise FxQuantError("report needs images to measure on: --eval must not be 0")
    qmodel = convert(work.loaded.model, work.calib, args.recipe, args.bits)
    rep = report(qmodel, work.test)
    result = {"model": work.loaded.name, "recipe": qmodel.config.name,
              "bits": qmodel.config.bits_label, "calib_images": work.calib_images,
              "images": work.eval_images, "tensors": rep.worst_first()}
    if args.png:
        result["png"] = str(plot_sqnr(rep.rows, args.png, rep.title))
    return result


def markdown(result: dict) -> str:
    if "tensors" not in result:
        return f"wrote {result['png']}"
    return (f"{result['model']} {result['recipe']} {result['bits']}: SQNR on {result['images']} "
            f"images, worst first\n\n" + table(result["tensors"]))
