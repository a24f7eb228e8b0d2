"""Peak memory of `fxquant quantize ... --out` per model size, beside the float weights.

Each model is converted and exported by the command line in a process of its own, so each peak
(ru_maxrss, `peak_rss_mb` in its JSON) is that model's alone; the weights are counted on the meta
device, so this process never holds a model. Random weights: memory and time do not depend on them.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import timm
import torch

from fxquant.errors import FxQuantError

MODELS = ("vit_small_patch16_224", "vit_base_patch16_224", "vit_large_patch16_224",
          "vit_huge_patch14_224")
MB = 2 ** 20


def float_weight_mb(name: str) -> float:
    """The parameters and buffers of timm model `name`, in MiB, counted without allocating them."""
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())) / MB


def quantize_alone(name: str, args: argparse.Namespace, folder: Path) -> dict:
    """The JSON result of `fxquant quantize` on `name`, run in a fresh process."""
    command = [sys.executable, "-m", "fxquant.cli", "quantize", "--model", name, "--random-weights",
               "--recipe", args.recipe, "--bits", args.bits, "--calib", str(args.calib),
               "--eval", "0", "--out", str(folder / f"{name}.onnx"), "--json"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise FxQuantError(f"fxquant quantize --model {name} failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> dict:
    rows = []
    for name in args.models:
        weights = float_weight_mb(name)
        with tempfile.TemporaryDirectory() as folder:
            result = quantize_alone(name, args, Path(folder))
        rows.append({"model": name, "float_weight_mb": round(weights, 1),
                     "peak_rss_mb": result["peak_rss_mb"],
                     "ratio": round(result["peak_rss_mb"] / weights, 2),
                     "convert_seconds": result["convert_seconds"],
                     "export_seconds": result["export_seconds"]})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # hours for all four: show each
    return {"recipe": args.recipe, "bits": args.bits, "calib_images": args.calib,
            "cpu": result["cpu"], "results": rows}


def markdown(r: dict) -> str:
    lines = [f"{r['recipe']} {r['bits']}, {r['calib_images']} calibration images, random weights, "
             f"{r['cpu']}; MB = MiB", "",
             "| model | float weights MB | peak RSS MB | peak / weights | convert s | export s |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {row['model']} | {row['float_weight_mb']:.0f} | {row['peak_rss_mb']:.0f} | "
              f"{row['ratio']:.2f} | {row['convert_seconds']:.0f} | {row['export_seconds']:.0f} |"
              for row in r["results"]]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=list(MODELS), help="timm model names")
    p.add_argument("--recipe", default="repq-vit")
    p.add_argument("--bits", default="w8a8")
    p.add_argument("--calib", type=int, default=256, help="calibration images per model")
    p.add_argument("--json", action="store_true")
