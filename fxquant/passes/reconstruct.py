"""Block reconstruction (BRECQ / QDrop): per residual block, learn weight rounding and step sizes.

Each block of the quantized graph (`blocks.split_blocks`, cut at residual adds) is trained so its
output on the calibration images matches the float block's (`float_reference`):
- every quantized weight gets AdaRound's learned rounding, W^ = s·(clamp(floor(W/s) + h(V) + z) - z)
  with h a rectified sigmoid pushed to 0 or 1 by a regularizer whose exponent is annealed 20 -> 2;
- every uniform activation quantizer learns its step size (straight-through rounding, zero point
  fixed); other quantizers (log2, TanQ, ...) keep their parameters and pass gradients straight;
- optionally (recon_weight_step_lr > 0), each weight's per-row steps learn too: they stay what
  the export reads (the scale buffers), so they cost nothing at run time and change no integer code;
- QDrop: while training, each activation keeps its float value with probability 1 - p, and the
  block input mixes the quantized model's and the float model's inputs the same way;
- padding tokens (keys every attention padding mask drops, `fxquant/padding.py`) are left out of
  the loss: their outputs say nothing about the text, and a batch padded to a fixed length is
  mostly padding. Token positions that are padding in every sample of a minibatch are not computed
  at all when the block gives its real tokens the same outputs without them (checked once per
  block): the same training, in a fraction of the time, so more iterations in the budget.
The result goes back into the graph's own buffers: hard rounding -> integer codes, learned steps
-> scales. Zero points and the graph's structure are unchanged, so the export is unchanged.

Options (`config.options`, defaults and allowed values in ReconOptions): recon_iters per block,
recon_max_seconds for the whole pass (split over the blocks left; a block stops early and its
schedules follow elapsed time; None = no limit, the only setting whose result does not depend on
the machine's speed),
recon_seed, recon_batch_size, recon_drop_prob (p), recon_weight_lr, recon_scale_lr,
recon_weight_step_lr, recon_round_weight, recon_warmup (fraction without the regularizer),
recon_adds_per_block (2 = attention + MLP of a transformer block), recon_skip_padding.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.fx as fx
from torch import nn
from tqdm import tqdm

from fxquant import annotation
from fxquant.blocks import Block, block_module, drop_unneeded, run_block, split_blocks
from fxquant.calibrate import graph_inputs
from fxquant.config import QuantConfig
from fxquant.errors import FxQuantError
from fxquant.options import BOOL, COUNT, NON_NEGATIVE, POSITIVE_INT, PROBABILITY, Options, option, optional
from fxquant.padding import kept_tokens
from fxquant.passes.contract import graph_pass, quantized
from fxquant.passes.float_reference import float_reference, is_activation_quantizer
from fxquant.quantizers.custom_op import split_call
from fxquant.quantizers.uniform import MIN_SCALE, broadcast_shape, dequantize, fake_quant


@dataclass(frozen=True)
class ReconOptions(Options):
    """The `config.options` keys this pass reads (recon_*), checked when made."""
    PREFIX = "recon_"
    # QDrop's schedule is 20,000 iterations per block at learning rates 1e-3 / 4e-5; ours is 20
    # times shorter (the 20-minute budget on 2 cores), so both rates are 10 times larger.
    recon_iters: int = option(1000, POSITIVE_INT)
    recon_max_seconds: float | None = option(1080, optional(NON_NEGATIVE))
    recon_seed: int = option(0, COUNT)
    recon_batch_size: int = option(32, POSITIVE_INT)
    recon_drop_prob: float = option(0.5, PROBABILITY)
    recon_weight_lr: float = option(1e-2, NON_NEGATIVE)
    recon_scale_lr: float = option(4e-4, NON_NEGATIVE)
    recon_weight_step_lr: float = option(0.0, NON_NEGATIVE)   # 0: weights' steps stay fixed
    recon_round_weight: float = option(0.01, NON_NEGATIVE)
    recon_warmup: float = option(0.2, PROBABILITY)
    recon_adds_per_block: int = option(2, POSITIVE_INT)
    recon_skip_padding: bool = option(True, BOOL)      # padding tokens' outputs left out of the loss


class _Dropper:
    """QDrop: which values keep their quantized value (probability p) while training."""

    def __init__(self, p: float, generator: torch.Generator):
        self.p, self.generator, self.active = p, generator, False

    def keep(self, like: torch.Tensor) -> torch.Tensor | None:
        if not self.active or self.p >= 1 or not like.is_floating_point():
            return None
        if self.p == 0:
            return torch.zeros(like.shape, dtype=torch.bool, device=like.device)
        return torch.rand(like.shape, generator=self.generator).to(like.device) < self.p

    @contextlib.contextmanager
    def all_float(self):
        """Every activation keeps its float value: the block as a smooth function of its input,
        whose outputs do not jump where a float sum in another order lands across a rounding tie."""
        saved = self.active, self.p
        self.active, self.p = True, 0.0
        try:
            yield
        finally:
            self.active, self.p = saved

    def mix(self, quantized: torch.Tensor, floating: torch.Tensor) -> torch.Tensor:
        keep = self.keep(quantized)
        return quantized if keep is None else torch.where(keep, quantized, floating)


class _FakeQuantStep(torch.autograd.Function):
    """Uniform fake-quant with float values where `keep` is False, in one pass each way:
    straight-through gradient for x inside the range, LSQ's gradient for the step."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin: int, qmax: int, axis: int, keep):
        s = broadcast_shape(scale, x.ndim, axis)
        z = broadcast_shape(zero_point, x.ndim, axis).to(x.dtype)
        v = x / s
        r = torch.round(v) + z
        inside = (r >= qmin) & (r <= qmax)
        q = r.clamp_(qmin, qmax).sub_(z)
        out = q * s if keep is None else torch.where(keep, q * s, x)
        ctx.save_for_backward(v, q, inside, keep)
        ctx.axis, ctx.scale_shape = axis % x.ndim, scale.shape
        return out

    @staticmethod
    def backward(ctx, grad):
        v, q, inside, keep = ctx.saved_tensors
        grad_x, grad_s = grad * inside, grad * (q - v * inside)
        if keep is not None:
            grad_x, grad_s = torch.where(keep, grad_x, grad), grad_s * keep
        if ctx.scale_shape.numel() == 1:
            grad_s = grad_s.sum()
        else:
            grad_s = grad_s.sum([d for d in range(grad.ndim) if d != ctx.axis])
        return grad_x, grad_s.reshape(ctx.scale_shape), None, None, None, None, None


class _LearnedRounding(nn.Module):
    """AdaRound on a stored weight: up or down per element, learned through h(V) in [0, 1]."""
    ZETA, GAMMA = 1.1, -0.1

    def __init__(self, weight, scale, zero_point, axis: int, qmin: int, qmax: int, learn_step: bool):
        super().__init__()
        self.step = nn.Parameter(scale.detach().clone(), requires_grad=learn_step)
        self.ndim, self.axis = weight.ndim, axis
        self.zero_point = broadcast_shape(zero_point, weight.ndim, axis).to(weight.dtype)
        self.qmin, self.qmax = qmin, qmax
        ratio = weight / broadcast_shape(scale, weight.ndim, axis)
        self.floor = torch.floor(ratio)
        rest = (ratio - self.floor).clamp(1e-4, 1 - 1e-4)   # h(V) = rest at the start
        self.v = nn.Parameter(-torch.log((self.ZETA - self.GAMMA) / (rest - self.GAMMA) - 1))

    def soft(self) -> torch.Tensor:
        return torch.clamp(torch.sigmoid(self.v) * (self.ZETA - self.GAMMA) + self.GAMMA, 0, 1)

    def forward(self) -> torch.Tensor:
        q = torch.clamp(self.floor + self.soft() + self.zero_point, self.qmin, self.qmax)
        return (q - self.zero_point) * broadcast_shape(self.step, self.ndim, self.axis)

    def regularizer(self, beta: float) -> torch.Tensor:
        return (1 - (2 * self.soft() - 1).abs().pow(beta)).sum()

    def codes(self) -> torch.Tensor:
        return torch.clamp(self.floor + (self.v >= 0) + self.zero_point, self.qmin, self.qmax)


class _LearnedStep(nn.Module):
    """Uniform fake-quant with a trainable step size; zero point and range fixed."""

    def __init__(self, scale, zero_point, qmin: int, qmax: int, axis: int, drop: _Dropper):
        super().__init__()
        self.scale = nn.Parameter(scale.detach().clone())
        self.zero_point, self.qmin, self.qmax, self.axis, self.drop = zero_point, qmin, qmax, axis, drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _FakeQuantStep.apply(x, self.scale, self.zero_point, self.qmin, self.qmax, self.axis,
                                    self.drop.keep(x))


class _FixedQuantizer(nn.Module):
    """Any other fxquant quantizer op, run as it is in the graph; gradients pass straight."""

    def __init__(self, op, extra_args: tuple, drop: _Dropper):
        super().__init__()
        self.op, self.extra_args, self.drop = op, extra_args, drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.drop.mix(self.op(x.detach(), *self.extra_args), x) - x).detach()


def _resolve(module: fx.GraphModule, arg):
    return getattr(module, arg.target) if isinstance(arg, fx.Node) else arg


class _TrainableBlock:
    """A block module whose quantizers are replaced in place by trainable ones."""

    def __init__(self, module: fx.GraphModule, drop: _Dropper, learn_weight_steps: bool):
        self.module, self.drop, self.learn_weight_steps = module, drop, learn_weight_steps
        self.roundings: dict[str, _LearnedRounding] = {}   # weight-codes buffer -> rounding
        self.steps: dict[str, _LearnedStep] = {}           # scale buffer -> learned step
        self.weight_steps: dict[str, _LearnedRounding] = {}  # weight-scale buffer -> its rounding
        graph = module.graph
        for node in list(graph.nodes):
            if node.op == "call_function" and annotation.of(node).weighted:
                self._replace_weight(node)
            elif is_activation_quantizer(node):
                self._replace_activation(node)
        graph.eliminate_dead_code(lambda n: n.op != "get_attr"
                                  and n.target is not dequantize.overload)
        module.recompile()

    def _replace_weight(self, node: fx.Node) -> None:
        note = annotation.of(node)
        if note.float_weight is None or note.weight_range is None:
            raise FxQuantError(f"{node.name} carries no float weight: recon needs a model quantized "
                               "by this version of fxquant")
        w = dequantize.arguments(node.args[1])   # F.linear / conv2d(x, weight, ...)
        scale, zero_point = _resolve(self.module, w.scale), _resolve(self.module, w.zero_point)
        qmin, qmax = note.weight_range  # the code range the quantize pass used
        rounding = _LearnedRounding(note.float_weight.to(scale.device), scale, zero_point, w.axis,
                                    qmin, qmax, self.learn_weight_steps)
        self.roundings[w.codes.target] = rounding
        if self.learn_weight_steps:
            self.weight_steps[w.scale.target] = rounding
        name = f"recon_{node.name}_weight"
        self.module.add_submodule(name, rounding)
        with self.module.graph.inserting_before(node):
            node.update_arg(1, self.module.graph.call_module(name))

    def _replace_activation(self, node: fx.Node) -> None:
        x, rest = split_call(node)
        values = [_resolve(self.module, a) for a in rest]
        if node.target is fake_quant.overload:
            quantizer = _LearnedStep(*values, self.drop)
            self.steps[fake_quant.arguments(node).scale.target] = quantizer
        else:
            quantizer = _FixedQuantizer(node.target, tuple(values), self.drop)
        name = f"recon_{node.name}"
        self.module.add_submodule(name, quantizer)
        with self.module.graph.inserting_before(node):
            new = self.module.graph.call_module(name, (x,))
        node.replace_all_uses_with(new)
        self.module.graph.erase_node(node)

    @torch.no_grad()
    def write_back(self) -> None:
        """Hard rounding -> the codes buffers, learned steps -> the scale buffers (in place)."""
        for codes_name, rounding in self.roundings.items():
            codes = getattr(self.module, codes_name)
            codes.copy_(rounding.codes().to(codes.dtype))
        for scale_name, step in self.steps.items():
            getattr(self.module, scale_name).copy_(step.scale)
        for scale_name, rounding in self.weight_steps.items():
            getattr(self.module, scale_name).copy_(rounding.step)


def _lp_loss(out: torch.Tensor, target: torch.Tensor, kept: torch.Tensor | None) -> torch.Tensor:
    """QDrop's reconstruction loss: squared error summed over dim 1, averaged over the rest; an
    output laid out (samples, tokens, ...) counts only the tokens `kept` marks True."""
    error = (out - target).pow(2)
    if kept is not None and error.shape[:2] == kept.shape:
        error = error * kept.reshape(*kept.shape, *[1] * (error.ndim - 2))
    return error.sum(1).mean()


def _cut_tokens(values: dict[str, torch.Tensor], columns: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each value laid out (samples, tokens, ...) reduced to the token `columns` marked True."""
    tokens = len(columns)
    return {name: v[:, columns] if v.ndim >= 2 and v.shape[1] == tokens else v
            for name, v in values.items()}


@torch.no_grad()
def _cutting_is_exact(block: _TrainableBlock, feed: dict[str, torch.Tensor],
                      kept: torch.Tensor) -> bool:
    """Whether the block gives the real tokens of `feed` the same outputs with the positions that
    are padding in every sample cut away (activations left in float for the check). A graph
    traced with a fixed token count fails to run cut; one that numbers positions from the left
    (left padding) or averages over every position runs but differs."""
    columns = kept.any(0)
    if columns.all():
        return False   # nothing to cut in this batch, so nothing shown either
    with block.drop.all_float():
        full = block.module(**feed)
        try:
            cut = block.module(**_cut_tokens(feed, columns))
        except RuntimeError:   # a shape fixed at trace time
            return False
    real = kept[:, columns]
    for f, c in zip(full, cut):
        if not (isinstance(f, torch.Tensor) and f.is_floating_point()):
            continue
        if f.shape[:2] == kept.shape:   # per token: the real ones must agree
            f, c = f[:, columns][real], (c[real] if c.shape[:2] == real.shape else c)
        if c.shape != f.shape or not torch.allclose(c, f, rtol=1e-4,
                                                    atol=1e-5 * f.abs().max().item()):
            return False
    return True


def _beta(progress: float, warmup: float, start: float = 20.0, end: float = 2.0) -> float:
    rel = (progress - warmup) / (1 - warmup)
    return end + (start - end) * max(0.0, 1 - rel)


def _train(block: _TrainableBlock, spec: Block, q_cache, f_cache, targets, kept,
           opts: ReconOptions, seconds: float | None, bar: tqdm) -> dict:
    inputs = [v.name for v in spec.inputs if v.name in q_cache]
    outputs = [v.name for v in spec.outputs]
    roundings = list(block.roundings.values())
    act_steps = [s.scale for s in block.steps.values()]
    weight_steps = [r.step for r in block.weight_steps.values()]
    scales = act_steps + weight_steps
    opt_w = torch.optim.Adam([r.v for r in roundings], lr=opts.recon_weight_lr) if roundings else None
    groups = [{"params": params, "lr": lr, "base_lr": lr} for params, lr in (
        (act_steps, opts.recon_scale_lr), (weight_steps, opts.recon_weight_step_lr)) if params]
    opt_s = torch.optim.Adam(groups) if groups else None
    total = len(next(iter(targets.values())))
    iters, warmup = opts.recon_iters, opts.recon_warmup
    cut = False
    if kept is not None:   # checked on the samples with the fewest tokens: most to cut
        shortest = kept.sum(1).argsort()[:opts.recon_batch_size]
        cut = _cutting_is_exact(block, {n: q_cache[n][shortest] for n in inputs}, kept[shortest])
    block.drop.active = True
    start, first, last, it = time.perf_counter(), None, None, 0
    for it in range(iters):
        progress = it / iters
        if seconds is not None:
            elapsed = time.perf_counter() - start
            progress = max(progress, elapsed / seconds) if seconds > 0 else 1.0
        if progress >= 1:
            break
        idx = torch.randint(total, (opts.recon_batch_size,), generator=block.drop.generator)
        feed = {n: block.drop.mix(q_cache[n][idx], f_cache[n][idx]) for n in inputs}
        target = {name: targets[name][idx] for name in outputs
                  if isinstance(targets[name], torch.Tensor) and targets[name].is_floating_point()}
        kept_now = None if kept is None else kept[idx]
        if cut:
            columns = kept_now.any(0)
            feed, target = _cut_tokens(feed, columns), _cut_tokens(target, columns)
            kept_now = kept_now[:, columns]
        outs = block.module(**feed)
        rec = sum(_lp_loss(o, target[name], kept_now) for o, name in zip(outs, outputs)
                  if name in target)  # not masks or sizes
        loss = rec
        if progress >= warmup and roundings:
            beta = _beta(progress, warmup)
            loss = rec + opts.recon_round_weight * sum(r.regularizer(beta) for r in roundings)
        for opt in (opt_w, opt_s):
            if opt is not None:
                opt.zero_grad()
        loss.backward()
        if opt_w is not None:
            opt_w.step()
        if opt_s is not None:
            for group in opt_s.param_groups:  # cosine decay, as in QDrop
                group["lr"] = group["base_lr"] * 0.5 * (1 + math.cos(math.pi * progress))
            opt_s.step()
            with torch.no_grad():
                for scale in scales:
                    scale.clamp_(min=MIN_SCALE)
        first = rec.item() if first is None else first
        last = rec.item()
        bar.update(1)
        bar.set_postfix(loss=f"{last:.4g}")
    block.drop.active = False
    return {"iters": it + 1 if last is not None else 0, "loss_first": first, "loss_last": last,
            "seconds": round(time.perf_counter() - start, 2), "padding_cut": cut}


@graph_pass(requires=(quantized,))
def reconstruct(gm: fx.GraphModule, config: QuantConfig, calib_loader: Iterable) -> fx.GraphModule:
    opts = ReconOptions.from_options(config.options)
    start = time.perf_counter()
    reference = float_reference(gm)
    k = opts.recon_adds_per_block
    q_blocks, f_blocks = split_blocks(gm, k), split_blocks(reference, k)
    if [(len(b.inputs), len(b.outputs)) for b in q_blocks] != \
            [(len(b.inputs), len(b.outputs)) for b in f_blocks]:
        raise FxQuantError("the quantized graph and its float reference split into different blocks")
    q_cache = graph_inputs(gm, calib_loader)
    kept = kept_tokens(gm, q_cache) if opts.recon_skip_padding else None
    f_cache = dict(q_cache)   # float values under the quantized graph's names (a quantizer's
    #                           output there is its input in the reference: same place, other name)
    drop = _Dropper(opts.recon_drop_prob, torch.Generator().manual_seed(opts.recon_seed))
    budget = opts.recon_max_seconds
    stats = []
    bar = tqdm(total=len(q_blocks) * opts.recon_iters, desc="reconstructing", leave=False)
    for i, (qb, fb) in enumerate(zip(q_blocks, f_blocks)):
        floats = {f.name: f_cache[q.name] for q, f in zip(qb.inputs, fb.inputs) if q.name in f_cache}
        targets = run_block(block_module(reference, fb), fb, floats)
        targets = {q.name: targets[f.name] for q, f in zip(qb.outputs, fb.outputs)}
        block = _TrainableBlock(block_module(gm, qb), drop, opts.recon_weight_step_lr > 0)
        if block.roundings or block.steps:
            seconds = None if budget is None else \
                max(0.0, budget - (time.perf_counter() - start)) / (len(q_blocks) - i)
            stats.append(_train(block, qb, q_cache, f_cache, targets, kept, opts, seconds, bar))
            block.write_back()
        q_cache.update(run_block(block_module(gm, qb), qb, q_cache))
        f_cache.update(targets)
        for cache in (q_cache, f_cache):
            drop_unneeded(cache, q_blocks[i + 1:])
    bar.close()
    gm.meta["recon"] = {"seconds": round(time.perf_counter() - start, 2), "blocks": stats,
                        "tokens_kept": None if kept is None else round(kept.float().mean().item(), 4)}
    return gm
