"""Whole-model parity: the QuantizedModel (PyTorch numerics) against its ONNX export in onnxruntime.

For each model, recipe and bit-width: top-1 agreement between the two and the largest logit
difference, on the bundled test images (resized for ImageNet-size models, whose weights may be
random).
"""
from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

from fxquant import cpu, target, workload
from fxquant.api import convert
from fxquant.lowering import saturation
from fxquant.lowering.export import export_onnx
from fxquant.lowering.parity import agreement
from fxquant.lowering.runtime import OnnxModule


def _logits_and_labels(model, loader, desc: str) -> tuple[torch.Tensor, torch.Tensor]:
    logits, labels = [], []
    with torch.no_grad():
        for x, y in tqdm(loader, desc=desc, leave=False):
            logits.append(model(x))
            labels.append(y)
    return torch.cat(logits), torch.cat(labels)


def model_parity(qmodel, loader, tag: str, images: int | None = None) -> dict:
    """Export `qmodel` and compare it with its ONNX in onnxruntime on the first `images` images of
    `loader` (whole batches; all when None): the agreement statistics, each runtime's top-1 on those
    images, the images used, and how many of the file's integer GEMMs could saturate on a CPU
    without VNNI."""
    if images is not None:
        batch = len(next(iter(loader))[0])
        loader = list(itertools.islice(loader, -(-images // batch)))
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(qmodel, Path(tmp) / "q.onnx", next(iter(loader))[0][:1])
        torch_logits, labels = _logits_and_labels(qmodel, loader, f"{tag} (PyTorch)")
        ort_logits, _ = _logits_and_labels(OnnxModule(path), loader, f"{tag} (onnxruntime)")
        risky = len(saturation.saturating(path))
    return {"images": len(labels), **agreement(torch_logits, ort_logits),
            "pytorch_top1": (torch_logits.argmax(-1) == labels).float().mean().item(),
            "onnxruntime_top1": (ort_logits.argmax(-1) == labels).float().mean().item(),
            "gemms_saturating_without_vnni": risky}


def run(args: argparse.Namespace) -> dict:
    rows = []
    for name in args.models:
        args.model, args.random_weights = name, name != "ref-vit"
        work = workload.from_args(args)
        for recipe, bits in ((r, b) for r in args.recipes for b in args.bits):
            qmodel = convert(work.loaded.model, work.calib, recipe, bits, target=args.target)
            rows.append({"model": name, "recipe": recipe, "bits": bits,
                         **model_parity(qmodel, work.test, f"{name} {recipe} {bits}")})
    return {"target": args.target, **cpu.current().as_dict(), "results": rows}


def markdown(result: dict) -> str:
    lines = [f"target {result['target']}; CPU: {result['cpu_model']} ({result['cpu_kind']})", "",
             "| model | recipe | bits | images | top-1 agreement | max abs logit diff | "
             "median top-2 logit gap | GEMMs that can saturate without VNNI |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["results"]:
        lines.append(f"| {r['model']} | {r['recipe']} | {r['bits']} | {r['images']} | "
                     f"{100 * r['top1_agreement']:.2f} % | {r['max_abs_diff']:.4f} | "
                     f"{r['median_top2_gap']:.4f} | {r['gemms_saturating_without_vnni']} |")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    workload.add_arguments(p)
    p.set_defaults(calib=64, eval=None)
    p.add_argument("--models", nargs="+",
                   default=["ref-vit", "deit_tiny_patch16_224", "swin_tiny_patch4_window7_224"])
    p.add_argument("--recipes", nargs="+", default=["minmax"])
    p.add_argument("--bits", nargs="+", default=["w8a8", "w4a4"])
    target.add_argument(p)
    p.add_argument("--json", action="store_true")
