"""`fxquant bench two-scale-error`: V-2SF against uniform and log2 on the model's real post-Softmax
and post-GELU tensors.

The tensors are found by role (the pipeline's own trace, roles and observers): each quantizer is
fitted as the quantize pass fits it, from observers fed the calibration images, and measured on
observers fed test images (a seeded sample of each tensor's values), layer by layer: MSE and SQNR.
For A·V errors of post-Softmax quantizers see `fxquant bench attention-quantizers --quantizers
uniform log2 two_scale`.
"""
from __future__ import annotations

import argparse
import math

import torch

from fxquant import annotation, quantizers, roles, workload
from fxquant.bench.accuracy import CIFAR10
from fxquant.calibrate import calibrate
from fxquant.config import RECIPES, RoleSpec
from fxquant.observers.observer import Observer
from fxquant.passes.annotate_roles import annotate_roles
from fxquant.passes.insert_observers import insert_observers
from fxquant.tracing import trace

ROLES = (roles.POST_SOFTMAX, roles.POST_GELU)
METHODS = (("uniform", "minmax"), ("uniform", "mse"), ("log2", "mse"), ("two_scale", "mse"))
BITS = (4, 6, 8)


def add_arguments(p: argparse.ArgumentParser) -> None:
    workload.add_arguments(p)
    if (CIFAR10 / "train5k.npz").is_file():
        p.set_defaults(calib_data=str(CIFAR10 / "train5k.npz"), test_data=str(CIFAR10 / "test.npz"))
    p.set_defaults(calib=1000, eval=1000)
    p.add_argument("--bits", nargs="+", type=int, default=list(BITS))
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def role_observers(model: torch.nn.Module, loader) -> list[tuple[str, Observer]]:
    """(tensor name, observer fed `loader`) for every post-Softmax and post-GELU tensor."""
    gm = annotate_roles(trace(model))
    insert_observers(gm, RECIPES["minmax"])
    calibrate(gm, loader)
    return [(annotation.of(n).observes.name, gm.get_submodule(n.target))
            for n in annotation.observer_nodes(gm) if annotation.of(n).role in ROLES]


def _errors(params, x: torch.Tensor) -> dict:
    noise = (params.fake_quantize(x) - x).pow(2)
    return {"mse": noise.mean().item(),
            "sqnr_db": 10 * math.log10(x.pow(2).sum().item() / max(noise.sum().item(), 1e-30))}


def _settings(params) -> str:
    if hasattr(params, "shift"):
        return f"m={params.shift}"
    if hasattr(params, "delta"):
        return f"Δ={params.delta:.3g}"
    return f"s={params.scale.item():.3g}"


def run(args: argparse.Namespace) -> dict:
    work = workload.from_args(args)
    fitted = role_observers(work.loaded.model, work.calib)
    measured = role_observers(work.loaded.model, work.test)
    rows = []
    for quantizer, observer_method in METHODS:
        fit = quantizers.get(quantizer).fit
        for role in ROLES:
            spec = RoleSpec(quantizer=quantizer, observer=observer_method)
            for bits in args.bits:
                layers = [{"tensor": name, "settings": _settings(params := fit(calib, spec, bits)),
                           **_errors(params, test.samples())}
                          for (name, calib), (_, test) in zip(fitted, measured) if calib.role == role]
                rows.append({"role": role, "quantizer": quantizer, "observer": observer_method,
                             "bits": bits, "layers": layers,
                             **{k: sum(x[k] for x in layers) / len(layers) for k in ("mse", "sqnr_db")}})
    return {"model": work.loaded.name, "calib_images": work.calib_images,
            "eval_images": work.eval_images, "rows": rows}


def markdown(r: dict) -> str:
    lines = [f"{r['model']}: quantization error of post-Softmax and post-GELU tensors, mean over "
             f"layers; fitted on {r['calib_images']} calibration images, measured on "
             f"{r['eval_images']} test images", "",
             "| role | bits | quantizer (fit) | MSE | SQNR dB | per-layer settings |",
             "|---|---|---|---|---|---|"]
    for row in sorted(r["rows"], key=lambda x: (x["role"], x["bits"])):
        settings = " ".join(x["settings"] for x in row["layers"])
        lines.append(f"| {row['role']} | {row['bits']} | {row['quantizer']} ({row['observer']}) | "
                     f"{row['mse']:.3e} | {row['sqnr_db']:.2f} | {settings} |")
    return "\n".join(lines)
