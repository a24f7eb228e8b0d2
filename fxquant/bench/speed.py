"""Speed of fxquant's integer ONNX against the float model and onnxruntime's own quantizer, beside
what this CPU's int8 GEMM allows.

One process, one thread count: export (a) FP32 ONNX, (b) fxquant W8A8 for the portable target and
(c) for the vnni target (full 8-bit range: exact only on VNNI / AMX / ARM64 CPUs), onnxruntime
`quantize_static` (QDQ, per-channel, MinMax) of (a) on the same calibration images (d) as is and
(e) with `reduce_range` (7-bit weights), (f) fxquant W4A8. Then, per batch size, warm up and time
the sessions, interleaved, reporting medians, and time the int8-vs-fp32 GEMM ceiling on the
model's own GEMM shapes (bench.int8_ceiling). Random weights are fine for timm architectures:
speed does not depend on the values. The CPU model and its int8 flags are part of the result.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from fxquant import cpu, target as targets, workload
from fxquant.api import convert
from fxquant.bench import int8_ceiling
from fxquant.bench.fp32_onnx import export_float_onnx
from fxquant.bench.peers import PEERS, PeerInputs
from fxquant.bench.timing import median_ms
from fxquant.lowering.export import export_onnx

RECIPE = "minmax"
# JSON key stem -> what is timed: fxquant as (bits, target), onnxruntime's quantizer as a peer name
FXQUANT = {"fxquant_w8a8": ("w8a8", targets.PORTABLE),
           "fxquant_w8a8_vnni": ("w8a8", targets.VNNI),
           "fxquant_w4a8": ("w4a8", targets.PORTABLE)}
ORT_PEERS = {"ort_static": "ort-static-minmax",  # QDQ, per-channel int8 weights, uint8 activations
             "ort_static_rr": "ort-static-minmax-rr"}  # the same with reduce_range: 7-bit weights
LABELS = {"fp32": "FP32 ONNX",
          "fxquant_w8a8": f"fxquant W8A8 target portable — {targets.TARGETS[targets.PORTABLE]}",
          "fxquant_w8a8_vnni": f"fxquant W8A8 target vnni — {targets.TARGETS[targets.VNNI]}",
          "ort_static": "onnxruntime quantize_static W8A8",
          "ort_static_rr": "onnxruntime quantize_static W8A8, reduce_range (7-bit weights)",
          "fxquant_w4a8": "fxquant W4A8"}


def _export_all(work: workload.Workload, example, tmp: Path) -> dict[str, Path]:
    """Every file of the table, from one float model and one set of calibration images."""
    model = work.loaded.model
    paths = {"fp32": export_float_onnx(model, tmp / "fp32.onnx", example)}
    for key, (bits, target) in FXQUANT.items():
        qmodel = convert(model, work.calib, RECIPE, bits, target=target)
        paths[key] = export_onnx(qmodel, tmp / f"{key}.onnx", example)
    inputs = PeerInputs(model, paths["fp32"], [batch[0] for batch in work.calib], tmp)
    for key, name in ORT_PEERS.items():
        peer = next(p for p in PEERS if p.name == name and p.bits == "w8a8")
        paths[key] = peer.build(inputs).path
    return paths


def _time_batch(paths: dict[str, Path], batch: int, example, args: argparse.Namespace) -> dict:
    """One interleaved timing round of every file at `batch`, and the GEMM ceiling there."""
    x = np.random.default_rng(0).standard_normal((batch, *example.shape[1:])).astype(np.float32)
    ms = median_ms(paths, x, args.threads, args.repeats, args.warmup)
    return {"batch": batch, **{f"{k}_ms": v for k, v in ms.items()},
            "speedup_vs_fp32": ms["fp32"] / ms["fxquant_w8a8"],
            "speedup_vs_ort_static": ms["ort_static"] / ms["fxquant_w8a8"],
            "int8_ceiling": int8_ceiling.ceiling(paths["fp32"], batch, args.threads,
                                                 args.repeats, args.warmup)}


def run(args: argparse.Namespace) -> dict:
    args.random_weights = True
    args.eval = 0
    work = workload.from_args(args)
    example = next(iter(work.calib))[0][:1]
    with tempfile.TemporaryDirectory() as tmp:
        paths = _export_all(work, example, Path(tmp))
        rows = [_time_batch(paths, b, example, args) for b in args.batches]
        mb = {f"{k}_mb": p.stat().st_size / 2 ** 20 for k, p in paths.items()}
    return {"model": work.loaded.name, "threads": args.threads, "recipe": RECIPE,
            "repeats": args.repeats, "cpu": cpu.current().describe(), **cpu.current().as_dict(),
            **mb, "batches": rows}


def _files_table(r: dict) -> list[str]:
    """One row per file: ms and x vs FP32 at each batch, then its size."""
    rows = r["batches"]
    lines = ["| model | " + " | ".join(f"batch {b['batch']} ms | x vs FP32" for b in rows)
             + " | MB | size vs FP32 |", "|---|" + "---|---|" * len(rows) + "---|---|"]
    for key, label in LABELS.items():
        times = " | ".join(f"{b[f'{key}_ms']:.1f} | {b['fp32_ms'] / b[f'{key}_ms']:.2f}"
                           for b in rows)
        mb = r[f"{key}_mb"]
        lines.append(f"| {label} | {times} | {mb:.2f} | {mb / r['fp32_mb']:.3f} |")
    return lines


def _ceiling_table(r: dict) -> list[str]:
    """What the CPU's int8 GEMM gains over fp32 on the model's shapes, per batch."""
    rows = r["batches"]
    lines = ["int8 GEMM ceiling on the model's own GEMM shapes (MatMulInteger vs fp32 MatMul, "
             "each shape counted as often as the model runs it):", "",
             "| GEMM | " + " | ".join(f"batch {b['batch']} x vs FP32" for b in rows) + " |",
             "|---|" + "---|" * len(rows)]
    for kind, label in (("u8s8", "uint8 x int8"), ("u8u8", "uint8 x uint8 (U8U8)")):
        ratios = " | ".join(f"{b['int8_ceiling'][f'{kind}_speedup']:.2f}" for b in rows)
        lines.append(f"| {label} | {ratios} |")
    return lines


def markdown(r: dict) -> str:
    exact = "yes" if r["full_range_int8_exact"] else "no (int16 saturation)"
    return "\n".join([
        f"{r['model']}, {r['threads']} threads, median of {r['repeats']} interleaved runs",
        f"CPU: {r['cpu']}; full-range 8-bit GEMMs exact here: {exact}", "",
        *_files_table(r), "", *_ceiling_table(r)])


def add_arguments(p: argparse.ArgumentParser) -> None:
    workload.add_arguments(p)
    p.set_defaults(calib=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8],
                   help="batch sizes, each timed in its own interleaved round")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--json", action="store_true")
