"""Latency of given ONNX files in onnxruntime: one thread count, one random batch, medians.

For comparing exports of one model (fully quantized against plain QDQ, say) as `fxquant quantize
--out` wrote them; the input shape is read from the first file (batch axis set to --batch). Token
models (integer inputs, Hugging Face names) get --sequence random token ids, an attention mask of
ones and token types of zeros.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from fxquant import cpu
from fxquant.bench import int8_ceiling
from fxquant.bench.timing import median_ms, random_feed
from fxquant.errors import FxQuantError


def run(args: argparse.Namespace) -> dict:
    paths = [Path(p) for p in args.files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FxQuantError(f"no such ONNX file: {', '.join(missing)}")
    feed = random_feed(paths[0], args.batch, args.sequence)
    ms = median_ms(dict(enumerate(paths)), dict.fromkeys(range(len(paths)), feed), args.threads,
                   args.repeats, args.warmup)
    rows = [{"file": str(p), "ms": ms[i], "mb": p.stat().st_size / 2 ** 20}
            for i, p in enumerate(paths)]
    tokens = any(a.dtype.kind == "i" for a in feed.values())
    result = {"batch": args.batch, "sequence": args.sequence if tokens else None,
              "threads": args.threads, "repeats": args.repeats, "cpu": cpu.current().describe(),
              "results": rows}
    if args.ceiling:
        result["int8_ceiling"] = int8_ceiling.ceiling(paths[0], args.batch, args.threads,
                                                      args.repeats, args.warmup, args.sequence)
    return result


def markdown(r: dict) -> str:
    base = r["results"][0]["ms"]
    tokens = f", {r['sequence']} tokens" if r.get("sequence") else ""
    lines = [f"batch {r['batch']}{tokens}, {r['threads']} threads, median of {r['repeats']} runs", "",
             "| ONNX file | ms | x vs first | MB |", "|---|---|---|---|"]
    lines += [f"| {row['file']} | {row['ms']:.1f} | {base / row['ms']:.2f} | {row['mb']:.2f} |"
              for row in r["results"]]
    lines.append(f"\nCPU: {r['cpu']}")
    if "int8_ceiling" in r:
        c = r["int8_ceiling"]
        lines.append(f"int8 GEMM ceiling on the first file's GEMM shapes: u8s8 {c['u8s8_speedup']:.2f}x, "
                     f"u8u8 {c['u8u8_speedup']:.2f}x fp32")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", help="ONNX files (the first is the baseline)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--sequence", type=int, default=64, help="tokens per row (token models)")
    p.add_argument("--ceiling", action="store_true",
                   help="the first file is the FP32 model: also time this CPU's int8 GEMM "
                        "ceiling on its GEMM shapes")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--json", action="store_true")
