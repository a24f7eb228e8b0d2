"""`fxquant bench accuracy`: top-1 of every recipe x bit-width, in PyTorch and in onnxruntime,
beside the peers (bench.peers) on the same model and calibration images.

A recipe, export or peer that fails is listed with its error, never dropped. By default the
benchmark calibrates on `train5k.npz` and evaluates the full test split of `../shared/data/cifar10`
when those files are there, else on the bundled images.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Callable

from fxquant import config, cpu, options, pipeline, target, workload
from fxquant.api import convert
from fxquant.bench.fp32_onnx import export_float_onnx
from fxquant.bench.peers import PEERS, PeerInputs
from fxquant.errors import ExportMismatch, FxQuantError
from fxquant.evaluate import top1
from fxquant.lowering import saturation
from fxquant.lowering.export import export_onnx
from fxquant.lowering.runtime import OnnxModule

BITS = ("w8a8", "w6a6", "w4a4", "w3a3")
CIFAR10 = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10"


def add_arguments(p: argparse.ArgumentParser) -> None:
    workload.add_arguments(p)
    if (CIFAR10 / "train5k.npz").is_file() and (CIFAR10 / "test.npz").is_file():
        p.set_defaults(calib_data=str(CIFAR10 / "train5k.npz"), test_data=str(CIFAR10 / "test.npz"))
    p.add_argument("--recipes", nargs="*", default=None,
                   help="recipes to run (default: every recipe fxquant has; "
                        "the flag alone for none)")
    p.add_argument("--bits", nargs="+", default=list(BITS),
                   help="bit-widths (default: %(default)s)")
    p.add_argument("--peers", nargs="*", default=None,
                   help=f"peers to run, in this order (default: all of "
                        f"{list(dict.fromkeys(q.name for q in PEERS))}; the flag alone for none)")
    p.add_argument("--no-onnx", action="store_true",
                   help="recipes in PyTorch numerics only (no export, no onnxruntime column)")
    target.add_argument(p)
    options.add_argument(p)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def error_line(e: BaseException) -> str:
    """A failure as one table cell: its type and the first line of its message."""
    text = f"{type(e).__name__}: {e}".strip().splitlines()[0]
    return text[:300]


def export_scored(qmodel, path: Path, example, axes=None) -> tuple[Path, str | None]:
    """Export for a benchmark. A file the export's self-check refuses is still written and scored,
    and the refusal is returned for the table: the onnxruntime number is then of a file
    `export_onnx` would not hand a user without verify=False."""
    try:
        return export_onnx(qmodel, path, example, axes), None
    except ExportMismatch as e:
        return export_onnx(qmodel, path, example, axes, verify=False), f"self-check refused it: {e}"


def select_peers(names: list[str] | None, bits: list[str]) -> list:
    """The peers named (all of them for None), in that order, at the bit-widths asked for."""
    known = {p.name for p in PEERS}
    unknown = sorted(set(names or ()) - known)
    if unknown:
        raise FxQuantError(f"unknown peer {unknown[0]!r}: available are {sorted(known)}")
    order = list(dict.fromkeys(p.name for p in PEERS)) if names is None else names
    return [p for name in order for p in PEERS if p.name == name and p.bits in bits]


def _recipe_row(work: workload.Workload, recipe: str, bits: str, tmp: Path, example,
                args: argparse.Namespace) -> dict:
    row = {"recipe": recipe, "bits": bits, "torch_top1": None, "onnx_top1": None,
           "convert_seconds": None}
    try:
        qmodel = convert(work.loaded.model, work.calib, config.resolve(recipe, options=dict(args.option)),
                         bits, target=args.target)
        row["convert_seconds"] = round(qmodel.convert_seconds, 2)
        row["torch_top1"] = top1(qmodel, work.test, f"{recipe} {bits} (PyTorch)")
    except Exception as e:  # a failing recipe is a result too
        row["error"] = error_line(e)
        return row
    if args.no_onnx:
        return row
    try:
        path, refusal = export_scored(qmodel, tmp / f"{recipe}_{bits}.onnx", example)
        if refusal:
            row["onnx_check"] = refusal
        row["gemms_saturating_without_vnni"] = len(saturation.saturating(path))
        row["onnx_top1"] = top1(OnnxModule(path), work.test, f"{recipe} {bits} (onnxruntime)")
    except Exception as e:
        row["onnx_error"] = error_line(e)
    return row


def peer_row(peer, inputs: PeerInputs, key: str, score: Callable[[Callable], float]) -> dict:
    """One peer built and scored (`row[key] = score(model)`), with its convert time; a failure
    is a row with the error (both benchmarks' peer rows)."""
    row = {"name": peer.name, "bits": peer.bits, "runtime": peer.runtime}
    try:
        start = time.perf_counter()
        model = peer.build(inputs)
        row["convert_seconds"] = round(time.perf_counter() - start, 2)
        row[key] = score(model)
        if isinstance(model, OnnxModule):  # what a CPU without VNNI would get wrong in that file
            row["gemms_saturating_without_vnni"] = len(saturation.saturating(model.path))
    except Exception as e:
        row["error"] = error_line(e)
    return row


def run(args: argparse.Namespace) -> dict:
    recipes = list(config.RECIPES) if args.recipes is None else args.recipes
    for name in recipes:
        pipeline.check(config.resolve(name, options=dict(args.option)))
    for bits in args.bits:
        config.parse_bits(bits)
    peers = select_peers(args.peers, args.bits)
    work = workload.from_args(args)
    if work.test is None:
        raise FxQuantError("bench accuracy needs test images: --eval must not be 0")
    example = next(iter(work.calib))[0][:1]
    result = {"model": work.loaded.name, "eval_images": work.eval_images,
              "calib_images": work.calib_images, "target": args.target, "options": dict(args.option),
              **cpu.current().as_dict(),
              "calib_data": Path(args.calib_data).name, "test_data": Path(args.test_data).name,
              "fp32_top1": top1(work.loaded.model, work.test, "fp32 (PyTorch)")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fp32 = export_float_onnx(work.loaded.model, tmp / "fp32.onnx", example)
        result["fp32_onnx_top1"] = top1(OnnxModule(fp32), work.test, "fp32 (onnxruntime)")
        result["results"] = [_recipe_row(work, r, b, tmp, example, args)
                             for r in recipes for b in args.bits]
        inputs = PeerInputs(work.loaded.model, fp32, [batch[0] for batch in work.calib], tmp)
        result["peers"] = [peer_row(p, inputs, "top1",
                                    lambda m, p=p: top1(m, work.test, f"{p.name} {p.bits}"))
                           for p in peers]
    return result


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def markdown(r: dict) -> str:
    """Top-1 (%) with one column per bit-width; n/a where a peer offers no such bit-width."""
    bits = list(dict.fromkeys([x["bits"] for x in r["results"]] + [p["bits"] for p in r["peers"]]))
    bits.sort(key=lambda b: -config.parse_bits(b)["a_bits"])
    head = ["| tool | method | runtime | " + " | ".join(b.upper() for b in bits) + " |",
            "|---|---|---|" + "---|" * len(bits)]
    rows, errors, seconds = [], [], []
    for recipe in dict.fromkeys(x["recipe"] for x in r["results"]):
        cells = {x["bits"]: x for x in r["results"] if x["recipe"] == recipe}
        for key, runtime in (("torch_top1", "PyTorch"), ("onnx_top1", "onnxruntime")):
            values = [_pct(cells[b][key]) if b in cells else "n/a" for b in bits]
            rows.append(f"| fxquant | {recipe} | {runtime} | " + " | ".join(values) + " |")
        seconds.append(f"| {recipe} | " + " | ".join(
            str(cells[b]["convert_seconds"]) if b in cells else "n/a" for b in bits) + " |")
        errors += [f"- fxquant {recipe} {b}: {cells[b][k]}" for b in bits if b in cells
                   for k in ("error", "onnx_error", "onnx_check") if k in cells[b]]
    for name in dict.fromkeys(p["name"] for p in r["peers"]):
        cells = {p["bits"]: p for p in r["peers"] if p["name"] == name}
        values = [("error" if "error" in cells[b] else _pct(cells[b]["top1"])) if b in cells
                  else "n/a" for b in bits]
        runtime = next(iter(cells.values()))["runtime"]
        rows.append(f"| peer | {name} | {runtime} | " + " | ".join(values) + " |")
        errors += [f"- {name} {b}: {cells[b]['error']}" for b in bits
                   if b in cells and "error" in cells[b]]
    lines = [f"{r['model']}: top-1 (%) on {r['eval_images']} test images ({r['test_data']}), "
             f"{r['calib_images']} calibration images ({r['calib_data']}); FP32 "
             f"{_pct(r['fp32_top1'])} in PyTorch, {_pct(r['fp32_onnx_top1'])} in onnxruntime",
             "", *head, *rows]
    saturating = [f"{x.get('recipe', x.get('name'))} {x['bits']}: {x['gemms_saturating_without_vnni']}"
                  for x in (*r["results"], *r["peers"]) if "gemms_saturating_without_vnni" in x]
    lines += ["", f"fxquant target {r['target']}; CPU: {r['cpu_model']} ({r['cpu_kind']})."]
    if r.get("options"):
        lines[-1] += " Options over the recipes': " + ", ".join(f"{k}={v!r}" for k, v in r["options"].items()) + "."
    if saturating:
        lines[-1] += (" Integer GEMMs that can saturate on x86 without VNNI (lowering/saturation.py): "
                      + ", ".join(saturating))
    if errors:
        lines += ["", "Errors:", *errors]
    if seconds:
        lines += ["", "fxquant convert seconds (trace + calibrate + quantize):", "",
                  "| recipe | " + " | ".join(b.upper() for b in bits) + " |",
                  "|---|" + "---|" * len(bits), *seconds]
    return "\n".join(lines)
