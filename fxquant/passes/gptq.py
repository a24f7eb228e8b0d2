"""GPTQ: nearest-rounded weight codes -> codes chosen column by column on the same grid, each
column's rounding error compensated on the columns not yet rounded.

For a layer y = W x with inputs X (rows are samples), the output error of codes Q is
||X Wᵀ - X Ŵ(Q)ᵀ||², a quadratic form in the weight error with Hessian H = 2 XᵀX. GPTQ (Frantar et
al., ICLR 2023) rounds one input column at a time: after rounding column j, the error
e = (w_j - ŵ_j) / [U]_jj is spread over the remaining columns, W[:, j:] -= e · U[j, j:], where U is
the upper Cholesky factor of (H + λI)^-1 (λ = gptq_damp · mean diag H). Columns are processed in
blocks of gptq_block_size; a block's updates reach the columns after it in one product (lazy batch
updates). gptq_act_order visits the columns of largest diag H first.

Every weighted layer (Linear, Conv2d with groups = 1) is rounded in graph order with the inputs the
already-rounded quantized model produces (sequential GPTQ): the graph is cut at its residual adds
(`blocks.split_blocks`), each block's inputs are cached for the calibration set, and a layer's
H is accumulated chunk by chunk from a run of its block up to the layer's input (one H in memory).
Layers that read the same value share one H. With gptq_skip_padding, rows of padding tokens (keys
every attention padding mask of the graph drops, `fxquant/padding.py`) are left out of H:
no other token reads them, so their error does not count. Only the integer codes change: scales, zero points,
code ranges and the graph stay, so the export is the same QDQ graph. The float weight in the
annotation stays the float model's (float_reference and other refinements read it).
"""
from __future__ import annotations

import contextlib
import itertools
import time
from dataclasses import dataclass, replace
from typing import Iterable

import torch
import torch.fx as fx
import torch.nn.functional as F
from tqdm import tqdm

from fxquant import annotation
from fxquant.blocks import (CHUNK, Block, block_chunks, block_module, drop_unneeded,
                            run_block, split_blocks)
from fxquant.calibrate import graph_inputs
from fxquant.config import QuantConfig
from fxquant.errors import FxQuantError
from fxquant.observers.observer import token_rows
from fxquant.options import BOOL, NON_NEGATIVE, POSITIVE_INT, Options, option
from fxquant.padding import kept_tokens
from fxquant.passes.contract import graph_pass, quantized
from fxquant.quantizers.uniform import broadcast_shape, dequantize


@dataclass(frozen=True)
class GptqOptions(Options):
    """The `config.options` keys this pass reads (gptq_*), checked when made."""
    PREFIX = "gptq_"
    gptq_damp: float = option(0.01, NON_NEGATIVE)      # λ as a fraction of mean diag H (paper: 1 %)
    gptq_block_size: int = option(128, POSITIVE_INT)   # columns per lazy batch update (paper: 128)
    gptq_act_order: bool = option(True, BOOL)          # largest diag H first
    gptq_skip_padding: bool = option(True, BOOL)       # padding tokens' rows left out of H


@contextlib.contextmanager
def _one_thread():
    """GPTQ's column loop is thousands of tiny ops: on a busy CPU, waking a thread pool for each
    costs far more than it saves (25x slower with 2 threads on 2 loaded cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
@_one_thread()
def gptq_codes(weight: torch.Tensor, hessian: torch.Tensor, scale: torch.Tensor,
               zero_point: torch.Tensor, qmin: int, qmax: int, damp: float = 0.01,
               block_size: int = 128, act_order: bool = True) -> torch.Tensor:
    """Integer codes (int32, weight's shape) of `weight` (out, ...) on the per-row grid (scale,
    zero_point, [qmin, qmax]) that GPTQ picks for the input Hessian `hessian` (fan_in, fan_in)."""
    w = weight.reshape(len(weight), -1).double().clone()
    h = hessian.double().clone()
    if h.shape != (w.shape[1], w.shape[1]):
        raise FxQuantError(f"a Hessian of shape {tuple(h.shape)} does not fit a weight of fan-in {w.shape[1]}")
    dead = h.diagonal() == 0           # inputs that are always 0: any weight does, take code z
    h[dead, dead] = 1
    w[:, dead] = 0
    order = (torch.argsort(h.diagonal(), descending=True) if act_order
             else torch.arange(len(h), device=h.device))
    w, h = w[:, order], h[order][:, order]
    h.diagonal().add_(damp * h.diagonal().mean())
    chol, info = torch.linalg.cholesky_ex(h)
    if info:
        raise FxQuantError("the inputs' Hessian is not positive definite: raise gptq_damp")
    u = torch.linalg.cholesky(torch.cholesky_inverse(chol), upper=True)
    s = broadcast_shape(scale, 2, 0).double().expand(len(w), 1)[:, 0]
    z = broadcast_shape(zero_point, 2, 0).double().expand(len(w), 1)[:, 0]
    codes = torch.empty_like(w)
    for i1 in range(0, w.shape[1], block_size):
        i2 = min(i1 + block_size, w.shape[1])
        wb, err = w[:, i1:i2], torch.empty(len(w), i2 - i1, dtype=w.dtype, device=w.device)
        for j in range(i2 - i1):
            q = torch.clamp(torch.round(wb[:, j] / s) + z, qmin, qmax)
            codes[:, i1 + j] = q
            err[:, j] = (wb[:, j] - (q - z) * s) / u[i1 + j, i1 + j]
            wb[:, j:] -= torch.outer(err[:, j], u[i1 + j, i1 + j:i2])
        w[:, i2:] -= err @ u[i1:i2, i2:]
    return codes[:, torch.argsort(order)].reshape(weight.shape).to(torch.int32)


def _rows(node: fx.Node, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as (samples, fan_in) rows: im2col patches for a convolution."""
    if node.target is F.linear:
        return x.reshape(-1, x.shape[-1])
    stride, padding, dilation = node.args[3:6]
    kernel = annotation.of(node).float_weight.shape[2:]
    patches = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)
    return patches.transpose(1, 2).reshape(-1, patches.shape[1])


def _roundable(node: fx.Node) -> bool:
    """A quantized Linear, or Conv2d with groups = 1, whose weight is dequantized integer codes."""
    if node.op != "call_function" or node.target not in (F.linear, F.conv2d):
        return False
    if node.target is F.conv2d and (len(node.args) < 7 or node.args[6] != 1 or len(node.args[3]) != 2):
        return False
    dq = node.args[1]
    return (annotation.of(node).float_weight is not None and isinstance(dq, fx.Node)
            and dq.target is dequantize.overload)


def _hessian(gm: fx.GraphModule, block: Block, node: fx.Node, cache, kept) -> torch.Tensor:
    """Mean of x xᵀ over the rows of `node`'s input, from its block run on the cached inputs
    (rows of tokens `kept` drops left out)."""
    part = replace(block, outputs=(node.args[0],))
    module = block_module(gm, part)
    module.graph.eliminate_dead_code()
    module.recompile()
    h, n = None, 0
    for start, (x,) in zip(itertools.count(0, CHUNK), block_chunks(module, part, cache)):
        if kept is not None and node.target is F.linear:
            x = token_rows(x, kept[start:start + len(x)])
        rows = _rows(node, x).double()
        h = rows.T @ rows if h is None else h.addmm_(rows.T, rows)
        n += len(rows)
    return h / n


def _round_layer(gm: fx.GraphModule, node: fx.Node, h: torch.Tensor, opts: GptqOptions) -> dict:
    note = annotation.of(node)
    w = dequantize.arguments(node.args[1])
    if w.axis != 0:
        raise FxQuantError(f"{node.name}: gptq needs weight parameters per output channel (axis 0)")
    scale, zero_point = gm.get_buffer(w.scale.target), gm.get_buffer(w.zero_point.target)
    codes = gm.get_buffer(w.codes.target)
    qmin, qmax = note.weight_range
    new = gptq_codes(note.float_weight, h, scale, zero_point, qmin, qmax, opts.gptq_damp,
                     opts.gptq_block_size, opts.gptq_act_order)
    changed = (new != codes.to(new.dtype)).float().mean().item()
    codes.copy_(new.to(codes.dtype))
    return {"layer": node.name, "fan_in": len(h), "codes_changed": round(changed, 4)}


@graph_pass(requires=(quantized,))
def gptq(gm: fx.GraphModule, config: QuantConfig, calib_loader: Iterable) -> fx.GraphModule:
    opts = GptqOptions.from_options(config.options)
    start = time.perf_counter()
    blocks = split_blocks(gm)
    layers = [[n for n in b.nodes if _roundable(n)] for b in blocks]
    cache = graph_inputs(gm, calib_loader)
    kept = kept_tokens(gm, cache) if opts.gptq_skip_padding else None
    stats = []
    bar = tqdm(total=sum(map(len, layers)), desc="gptq", leave=False)
    for i, (block, weighted) in enumerate(zip(blocks, layers)):
        by_input: dict[fx.Node, list[fx.Node]] = {}
        for node in weighted:
            by_input.setdefault(node.args[0], []).append(node)
        for group in by_input.values():
            h = _hessian(gm, block, group[0], cache, kept)
            for node in group:
                stats.append(_round_layer(gm, node, h, opts))
                bar.update(1)
        if i + 1 < len(blocks):
            cache.update(run_block(block_module(gm, block), block, cache))
            drop_unneeded(cache, blocks[i + 1:])
    bar.close()
    gm.meta["gptq"] = {"seconds": round(time.perf_counter() - start, 2), "layers": stats,
                       "rows_kept": None if kept is None else round(kept.float().mean().item(), 4)}
    return gm
