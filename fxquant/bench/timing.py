"""Interleaved median latency of ONNX files in onnxruntime (what every speed number here uses)."""
from __future__ import annotations

import statistics
import time

import numpy as np
from tqdm import tqdm

from fxquant.errors import FxQuantError
from fxquant.lowering.runtime import session


def median_ms(paths: dict, batch: np.ndarray | dict, threads: int, repeats: int,
              warmup: int) -> dict:
    """Median latency of each file on `batch` (one input for all, or a dict: each file's own); an
    input is an array for the file's first input or a feed {input name: array}.
    The repeats are interleaved (one run of each file per round) so that a change in the
    machine's load shifts every file alike and the ratios hold."""
    sessions = {k: session(p, threads) for k, p in paths.items()}
    own = {k: batch[k] if isinstance(batch, dict) else batch for k in sessions}
    feeds = {k: own[k] if isinstance(own[k], dict) else {s.get_inputs()[0].name: own[k]}
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


def random_feed(path, batch: int, sequence: int = 64) -> dict[str, np.ndarray]:
    """{input name: array} for the ONNX file at `path`: float inputs standard normal (every
    non-batch axis fixed in the file), integer inputs (batch, sequence) token ids, or ones / zeros
    for an `attention_mask` / `token_type_ids` (Hugging Face's names)."""
    rng = np.random.default_rng(0)
    feed = {}
    for i in session(path).get_inputs():
        if i.type == "tensor(int64)":
            feed[i.name] = (np.ones((batch, sequence), np.int64) if i.name == "attention_mask" else
                            np.zeros((batch, sequence), np.int64) if i.name == "token_type_ids" else
                            rng.integers(1000, 2000, (batch, sequence)))
        elif all(isinstance(d, int) for d in i.shape[1:]):
            feed[i.name] = rng.standard_normal((batch, *i.shape[1:])).astype(np.float32)
        else:
            raise FxQuantError(f"{path} has a symbolic non-batch dimension in input {i.name!r}: "
                               f"{i.shape}")
    return feed
