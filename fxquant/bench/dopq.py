"""`fxquant bench dopq`: the DopQ-ViT ablation on one model, calibration set and test set.

Variants start from `repq-vit` and switch on DopQ-ViT's parts one by one: TanQ for post-Softmax,
the MOSF (median) fold target, block reconstruction (`recon`); each alone, TanQ and MOSF with
reconstruction held fixed, and the `dopq-vit` recipe as registered. One part from outside the
paper can join them: `smooth`, the MLP's hidden activations smoothed into fc2 (repq-vit-mlp's
pass, with the pass's default α = 0.5, not repq-vit-mlp's 1.0). Reconstruction options
(iterations, time budget, seed) come from the command line, so every variant gets the same.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace

from fxquant import config, options, roles, workload
from fxquant.api import convert
from fxquant.bench.accuracy import CIFAR10
from fxquant.bench.parity import model_parity
from fxquant.config import QuantConfig, RoleSpec
from fxquant.evaluate import top1

PARTS = ("tanq", "mosf", "recon")
VARIANTS = {"repq-vit": (), "tanq": ("tanq",), "mosf": ("mosf",), "recon": ("recon",),
            "tanq+recon": ("tanq", "recon"), "mosf+recon": ("mosf", "recon"),
            "tanq+mosf+recon": PARTS, "tanq+mosf+smooth+recon": ("tanq", "mosf", "smooth", "recon")}
BITS = ("w6a6", "w4a4", "w3a3")


def variant(parts: tuple[str, ...]) -> QuantConfig:
    """repq-vit with the named DopQ-ViT parts switched on."""
    cfg = config.RECIPES["repq-vit"]
    if "tanq" in parts:
        cfg = replace(cfg, roles={**cfg.roles, roles.POST_SOFTMAX: RoleSpec(
            quantizer="tan", observer="mse", bits="attn")})
    if "mosf" in parts:
        cfg = replace(cfg, options={**cfg.options, "fold_target": "median"})
    if "smooth" in parts:   # repq-vit-mlp's passes and GELU role; its smooth_alpha is not taken
        mlp = config.RECIPES["repq-vit-mlp"]
        cfg = replace(cfg, passes=mlp.passes,
                      roles={**cfg.roles, roles.POST_GELU: mlp.roles[roles.POST_GELU]})
    if "recon" in parts:
        cfg = replace(cfg, refine=cfg.refine + ("recon",))
    return replace(cfg, name="+".join(("repq-vit",) + parts))


def add_arguments(p: argparse.ArgumentParser) -> None:
    workload.add_arguments(p)
    if (CIFAR10 / "train5k.npz").is_file():
        p.set_defaults(calib_data=str(CIFAR10 / "train5k.npz"), test_data=str(CIFAR10 / "test.npz"))
    p.set_defaults(calib=1024, batch_size=128)
    p.add_argument("--variants", nargs="+", default=[*VARIANTS, "dopq-vit"],
                   help="ablation rows: %(default)s")
    p.add_argument("--bits", nargs="+", default=list(BITS))
    p.add_argument("--recon-iters", type=int, default=None, help="recon_iters (default: the pass's)")
    p.add_argument("--recon-max-seconds", type=float, default=None, help="recon_max_seconds")
    p.add_argument("--seed", type=int, default=0, help="recon_seed")
    options.add_argument(p)
    p.add_argument("--parity-images", type=int, default=1000,
                   help="compare each row with its ONNX in onnxruntime on this many test images (0: skip)")
    p.add_argument("--rows-to", default=None,
                   help="append each row as a JSON line to this file as soon as it is measured")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def _config(name: str, bits: str, args: argparse.Namespace) -> QuantConfig:
    cfg = config.RECIPES["dopq-vit"] if name == "dopq-vit" else variant(VARIANTS[name])
    chosen = {"recon_seed": args.seed, **dict(args.option)}
    if args.recon_iters is not None:
        chosen["recon_iters"] = args.recon_iters
    if args.recon_max_seconds is not None:
        chosen["recon_max_seconds"] = args.recon_max_seconds
    return config.resolve(cfg, bits, options=chosen)


def run(args: argparse.Namespace) -> dict:
    configs = [(name, _config(name, bits, args)) for bits in args.bits for name in args.variants]
    work = workload.from_args(args)
    result = {"model": work.loaded.name, "calib_images": work.calib_images,
              "eval_images": work.eval_images, "recon_iters": args.recon_iters,
              "recon_max_seconds": args.recon_max_seconds, "seed": args.seed,
              "options": dict(args.option),
              "fp32_top1": top1(work.loaded.model, work.test, "fp32"), "rows": []}
    for name, cfg in configs:
        qmodel = convert(work.loaded.model, work.calib, cfg)
        recon = qmodel.meta.get("recon", {})
        row = {"variant": name, "bits": cfg.bits_label, "top1": top1(qmodel, work.test, cfg.name),
               "convert_seconds": round(qmodel.convert_seconds, 1),
               "recon_seconds": recon.get("seconds"),
               "recon_iters": [b["iters"] for b in recon.get("blocks", [])] or None}
        if args.parity_images:
            row["parity"] = model_parity(qmodel, work.test, f"{name} {cfg.bits_label}", args.parity_images)
        result["rows"].append(row)
        if args.rows_to:
            with open(args.rows_to, "a") as f:
                f.write(json.dumps(row) + "\n")
    return result


def markdown(r: dict) -> str:
    bits = list(dict.fromkeys(row["bits"] for row in r["rows"]))
    cells = {(row["variant"], row["bits"]): row for row in r["rows"]}
    lines = [f"{r['model']}: top-1 (%) on {r['eval_images']} test images, {r['calib_images']} "
             f"calibration images; FP32 {100 * r['fp32_top1']:.2f}. Drop vs FP32 in brackets; "
             "recon seconds after the slash; [onnxruntime top-1 agreement with PyTorch; onnxruntime "
             "top-1 when the check covered every test image].", "",
             "| variant | " + " | ".join(b.upper() for b in bits) + " |",
             "|---|" + "---|" * len(bits)]
    for name in dict.fromkeys(row["variant"] for row in r["rows"]):
        values = []
        for b in bits:
            row = cells.get((name, b))
            if row is None:
                values.append("n/a")
                continue
            text = f"{100 * row['top1']:.2f} ({100 * (row['top1'] - r['fp32_top1']):+.2f})"
            text += f" / {row['recon_seconds']:.0f} s" if row["recon_seconds"] else ""
            parity = row.get("parity")
            if parity:
                text += f" [{100 * parity['top1_agreement']:.1f} %"
                text += (f"; onnxruntime {100 * parity['onnxruntime_top1']:.2f}]"
                         if parity["images"] == r["eval_images"] else "]")
            values.append(text)
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    return "\n".join(lines)
