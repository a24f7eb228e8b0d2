"""Latency of given ONNX files in onnxruntime: one thread count, one random batch, medians.

For comparing exports of one model (fully quantized against plain QDQ, say) as `fxquant quantize
--out` wrote them; the input shape is read from the first file (batch axis set to --batch).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fxquant.bench.timing import median_ms
from fxquant.errors import FxQuantError
from fxquant.lowering.runtime import session


def run(args: argparse.Namespace) -> dict:
    paths = [Path(p) for p in args.files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FxQuantError(f"no such ONNX file: {', '.join(missing)}")
    shape = session(paths[0]).get_inputs()[0].shape
    if not all(isinstance(d, int) for d in shape[1:]):
        raise FxQuantError(f"{paths[0]} has a symbolic non-batch input dimension: {shape}")
    x = np.random.default_rng(0).standard_normal((args.batch, *shape[1:])).astype(np.float32)
    ms = median_ms(dict(enumerate(paths)), x, args.threads, args.repeats, args.warmup)
    rows = [{"file": str(p), "ms": ms[i], "mb": p.stat().st_size / 2 ** 20}
            for i, p in enumerate(paths)]
    return {"batch": args.batch, "threads": args.threads, "repeats": args.repeats, "results": rows}


def markdown(r: dict) -> str:
    base = r["results"][0]["ms"]
    lines = [f"batch {r['batch']}, {r['threads']} threads, median of {r['repeats']} runs", "",
             "| ONNX file | ms | x vs first | MB |", "|---|---|---|---|"]
    lines += [f"| {row['file']} | {row['ms']:.1f} | {base / row['ms']:.2f} | {row['mb']:.2f} |"
              for row in r["results"]]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", help="ONNX files (the first is the baseline)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--json", action="store_true")
