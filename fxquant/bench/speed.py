"""Speed of fxquant's integer ONNX against the float model and onnxruntime's own quantizer.

One process, one thread count, one batch: export (a) FP32 ONNX, (b) fxquant W8A8, (c) onnxruntime
`quantize_static` (QDQ, per-channel, MinMax) of (a) on the same calibration images, (d) fxquant
W4A8; then warm up and time the sessions, interleaved, reporting medians. Random weights are fine
for timm architectures: speed does not depend on the values.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fxquant import workload
from fxquant.api import convert
from fxquant.bench.fp32_onnx import export_float_onnx
from fxquant.bench.peers import PEERS, PeerInputs
from fxquant.lowering.export import export_onnx
from fxquant.lowering.runtime import session

RECIPE = "minmax"
ORT_PEER = "ort-static-minmax"  # QDQ, per-channel int8 weights, MinMax uint8 activations


def median_ms(paths: dict, batch: np.ndarray, threads: int, repeats: int,
              warmup: int) -> dict:
    """Median latency of each file. The repeats are interleaved (one run of each file per round)
    so that a change in the machine's load shifts every file alike and the ratios hold."""
    sessions = {k: session(p, threads) for k, p in paths.items()}
    feeds = {k: {s.get_inputs()[0].name: batch} for k, s in sessions.items()}
    for k, s in sessions.items():
        for _ in range(warmup):
            s.run(None, feeds[k])
    times = {k: [] for k in sessions}
    for _ in tqdm(range(repeats), desc="timing", leave=False):
        for k, s in sessions.items():
            start = time.perf_counter()
            s.run(None, feeds[k])
            times[k].append((time.perf_counter() - start) * 1000)
    return {k: statistics.median(t) for k, t in times.items()}


def run(args: argparse.Namespace) -> dict:
    args.random_weights = True
    args.eval = 0
    work = workload.from_args(args)
    model = work.loaded.model
    example = next(iter(work.calib))[0][:1]
    x = torch.randn(args.batch, *example.shape[1:]).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = {"fp32": export_float_onnx(model, tmp / "fp32.onnx", example)}
        for bits in ("w8a8", "w4a8"):
            qmodel = convert(model, work.calib, RECIPE, bits)
            paths[bits] = export_onnx(qmodel, tmp / f"{bits}.onnx", example)
        peer = next(p for p in PEERS if p.name == ORT_PEER and p.bits == "w8a8")
        calib = [images for images, _ in work.calib]
        paths["ort_static"] = peer.build(PeerInputs(model, paths["fp32"], calib, tmp)).path
        ms = median_ms(paths, x, args.threads, args.repeats, args.warmup)
        mb = {k: p.stat().st_size / 2 ** 20 for k, p in paths.items()}
    return {"model": work.loaded.name, "batch": args.batch, "threads": args.threads,
            "recipe": RECIPE, "repeats": args.repeats,
            "fp32_ms": ms["fp32"], "fxquant_w8a8_ms": ms["w8a8"], "ort_static_ms": ms["ort_static"],
            "fxquant_w4_ms": ms["w4a8"],
            "speedup_vs_fp32": ms["fp32"] / ms["w8a8"],
            "speedup_vs_ort_static": ms["ort_static"] / ms["w8a8"],
            "fp32_mb": mb["fp32"], "fxquant_w8_mb": mb["w8a8"], "fxquant_w4_mb": mb["w4a8"],
            "ort_static_mb": mb["ort_static"]}


def markdown(r: dict) -> str:
    rows = [("FP32 ONNX", r["fp32_ms"], r["fp32_mb"]),
            ("fxquant W8A8", r["fxquant_w8a8_ms"], r["fxquant_w8_mb"]),
            ("onnxruntime quantize_static W8A8", r["ort_static_ms"], r["ort_static_mb"]),
            ("fxquant W4A8", r["fxquant_w4_ms"], r["fxquant_w4_mb"])]
    lines = [f"{r['model']}, batch {r['batch']}, {r['threads']} threads, median of {r['repeats']}",
             "", "| model | ms | x vs FP32 | MB | size vs FP32 |", "|---|---|---|---|---|"]
    for name, ms, mb in rows:
        lines.append(f"| {name} | {ms:.1f} | {r['fp32_ms'] / ms:.2f} | {mb:.2f} | "
                     f"{mb / r['fp32_mb']:.3f} |")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    workload.add_arguments(p)
    p.set_defaults(calib=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--json", action="store_true")
