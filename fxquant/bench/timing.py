"""Interleaved median latency of ONNX files in onnxruntime (what every speed number here uses)."""
from __future__ import annotations

import statistics
import time

import numpy as np
from tqdm import tqdm

from fxquant.lowering.runtime import session


def median_ms(paths: dict, batch: np.ndarray | dict, threads: int, repeats: int,
              warmup: int) -> dict:
    """Median latency of each file on `batch` (one input for all, or a dict: each file's own).
    The repeats are interleaved (one run of each file per round) so that a change in the
    machine's load shifts every file alike and the ratios hold."""
    sessions = {k: session(p, threads) for k, p in paths.items()}
    feeds = {k: {s.get_inputs()[0].name: batch[k] if isinstance(batch, dict) else batch}
             for k, s in sessions.items()}
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
