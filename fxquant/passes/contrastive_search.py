"""CPT-V (Evol-Q): block-wise evolutionary search of the quantization scales on a contrastive loss.

The quantized graph is cut at its residual adds (`blocks.split_blocks`: the attention and the MLP
branch of a transformer block are two blocks) and the blocks holding scales to search are visited
last first, `cptv_passes` times. A visit starts a population of `cptv_population` copies of the
block's scales; each of `cptv_cycles` cycles draws `cptv_tournament` members (with replacement),
perturbs the fittest, s -> s·(1 + U(-ε, ε)) per element, scores the child and drops the worst
member; the block keeps the best. The score is InfoNCE between the quantized model's outputs and
the float reference's (`contrastive_loss`, τ = `cptv_temperature`, negatives from batches of
`cptv_batch_size`) on the search part of the calibration images, run from the block on: its
inputs are cached once a pass (a block cannot change what runs before it, and blocks are visited
last first). After each visit the loss on the held-out part of the calibration images
(`cptv_holdout`) decides which state the pass returns: no test data. `cptv_max_seconds` bounds
the whole pass; the best state judged so far is returned.

Which scales (`cptv_scales`): "attention" (the official code: the weight scales of the Linears on
residual branches holding a Softmax), "weights" (every uniform weight scale) or "all" (those and
every uniform activation scale). Zero points and integer ranges stay; a weight's integer codes are
re-rounded from its float weight (its annotation's `float_weight`) under each new scale, so the stored
codes always match the scales. A scale another op also reads (an integer Softmax's constants were
derived from it) and other quantizer kinds (PTF, log2, TanQ, ...) are left alone.

Deviations from the official code: relative noise instead of an absolute ±1e-3 that ignores a
scale's magnitude (weights: ε = 0.03 at <= 4 bits, 0.05 above, or `cptv_noise`; activations:
`cptv_act_noise`); the held-out calibration loss, not ImageNet validation accuracy, picks the
returned state; the default searches activation scales too ("all"), chosen in short trials on
the reference ViT and not benchmarked against "attention" (benchmarks/cpt_v.md holds the one
recorded run).
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.fx as fx
import torch.nn.functional as F
from tqdm import tqdm

from fxquant import annotation, patterns
from fxquant.blocks import Block, block_module, split_blocks
from fxquant.calibrate import graph_inputs
from fxquant.config import QuantConfig
from fxquant.errors import FxQuantError
from fxquant.options import (COUNT, NON_NEGATIVE, POSITIVE, POSITIVE_INT, PROBABILITY, Options, Rule,
                             one_of, option, optional)
from fxquant.passes.contract import graph_pass, quantized
from fxquant.passes.float_reference import float_reference
from fxquant.quantizers.uniform import MIN_SCALE, dequantize, fake_quant, quantize_codes

SCALE_SETS = ("attention", "weights", "all")
_CHUNK = 500  # images per forward
HOLDOUT = Rule("a number in [0, 1)", lambda v: PROBABILITY.accepts(v) and v < 1)  # 1 leaves no search images


@dataclass(frozen=True)
class CptvOptions(Options):
    """The `config.options` keys this pass reads (cptv_*), checked when made; cptv_passes = 0
    only measures the start."""
    PREFIX = "cptv_"
    cptv_scales: str = option("all", one_of(SCALE_SETS))
    cptv_passes: int = option(10, COUNT)
    cptv_cycles: int = option(3, POSITIVE_INT)
    cptv_population: int = option(15, POSITIVE_INT)
    cptv_tournament: int = option(10, POSITIVE_INT)
    cptv_noise: float | None = option(None, optional(NON_NEGATIVE))
    cptv_act_noise: float = option(0.1, NON_NEGATIVE)
    cptv_temperature: float = option(3.0, POSITIVE)
    cptv_batch_size: int = option(100, POSITIVE_INT)
    cptv_holdout: float = option(0.2, HOLDOUT)
    cptv_seed: int = option(0, COUNT)
    cptv_max_seconds: float | None = option(900, optional(NON_NEGATIVE))


def contrastive_loss(q: torch.Tensor, f: torch.Tensor, temperature: float = 3.0,
                     batch_size: int = 100) -> float:
    """InfoNCE of outputs q against reference outputs f (a row an image), scaled by 2τ: positives
    on the diagonal, negatives the other images of the same batch; the mean over the batches."""
    losses = []
    for i in range(0, len(q), batch_size):
        qb = F.normalize(q[i:i + batch_size].flatten(1).float(), dim=1)
        fb = F.normalize(f[i:i + batch_size].flatten(1).float(), dim=1)
        labels = torch.arange(len(qb), device=qb.device)
        losses.append(2 * temperature * F.cross_entropy(qb @ fb.T / temperature, labels))
    return torch.stack(losses).mean().item()


@dataclass
class _Scale:
    """A searched scale buffer; for a weight scale, what re-derives the codes from it."""
    name: str
    noise: float
    codes: str | None = None
    weight: torch.Tensor | None = None
    zero_point: torch.Tensor | None = None
    qmin: int = 0
    qmax: int = 0
    axis: int = 0


def _weight_noise(qmin: int, qmax: int, opts: CptvOptions) -> float:
    if opts.cptv_noise is not None:
        return float(opts.cptv_noise)
    return 0.03 if math.log2(qmax - qmin + 1) <= 4 else 0.05


def _read_only_by(gm: fx.GraphModule, target: str, op) -> bool:
    """True when every reader of buffer `target` is an `op` node: no other op (an integer Softmax's
    constants, say) was derived from the buffer, so changing it keeps the graph consistent."""
    return all(user.target is op for n in gm.graph.nodes
               if n.op == "get_attr" and n.target == target for user in n.users)


def _weight_scale(gm: fx.GraphModule, node: fx.Node, opts: CptvOptions):
    dq, op = node.args[1], dequantize.overload   # F.linear / conv2d(x, weight, ...)
    if not (isinstance(dq, fx.Node) and dq.target is op):
        return None
    w = dequantize.arguments(dq)
    if not all(_read_only_by(gm, a.target, op) for a in (w.codes, w.scale, w.zero_point)):
        return None  # not a uniform integer weight of its own
    note = annotation.of(node)
    if note.float_weight is None or note.weight_range is None:
        raise FxQuantError(f"{node.name} carries no float weight: cpt-v needs a model quantized "
                           "by this version of fxquant")
    codes, scale, zero_point = w.codes.target, w.scale.target, w.zero_point.target
    weight, zp = note.float_weight, gm.get_buffer(zero_point)
    qmin, qmax = note.weight_range  # the code range the quantize pass used
    nearest = quantize_codes(weight, gm.get_buffer(scale), zp, qmin, qmax, w.axis)
    if not torch.equal(nearest, gm.get_buffer(codes).to(nearest.dtype)):
        warnings.warn(f"cpt-v leaves {node.name} alone: its codes are not the nearest rounding of "
                      "its float weight (an earlier refinement chose them)")
        return None
    return _Scale(scale, _weight_noise(qmin, qmax, opts), codes, weight, zp, qmin, qmax, w.axis)


def _activation_scale(gm: fx.GraphModule, node: fx.Node, opts: CptvOptions):
    op = fake_quant.overload
    if node.target is not op or not _read_only_by(gm, fake_quant.arguments(node).scale.target, op):
        return None
    return _Scale(fake_quant.arguments(node).scale.target, float(opts.cptv_act_noise))


def _ancestors(node: fx.Node) -> set[fx.Node]:
    seen, stack = {node}, [node]
    while stack:
        for arg in stack.pop().all_input_nodes:
            if arg not in seen:
                seen.add(arg)
                stack.append(arg)
    return seen


def _attention_branch(gm: fx.GraphModule, block: Block, adds: set[fx.Node]) -> list[fx.Node]:
    """The nodes of the residual branch closing `block` when a Softmax is on it, else none."""
    end = block.nodes[-1]
    if end not in adds:
        return []
    a, b = end.args[:2]
    skip = a if a in _ancestors(b) else b
    branch = [n for n in block.nodes if n not in _ancestors(skip)]
    return branch if any(patterns.is_softmax(gm, n) for n in branch) else []


def _block_scales(gm, block: Block, adds, opts: CptvOptions) -> list[_Scale]:
    which = opts.cptv_scales
    nodes = _attention_branch(gm, block, adds) if which == "attention" else block.nodes
    found: dict[str, _Scale] = {}
    for node in nodes:
        if node.op == "call_function" and annotation.of(node).weighted:
            scale = _weight_scale(gm, node, opts)
        elif which == "all" and node.op == "call_function":
            scale = _activation_scale(gm, node, opts)
        else:
            continue
        if scale is not None:
            found.setdefault(scale.name, scale)
    return list(found.values())


def _read(gm: fx.GraphModule, scales: list[_Scale]) -> torch.Tensor:
    return torch.cat([gm.get_buffer(s.name).reshape(-1) for s in scales]).clone()


def _write(gm: fx.GraphModule, scales: list[_Scale], genome: torch.Tensor) -> None:
    """Scales <- genome, and every weight's codes re-rounded from its float weight."""
    offset = 0
    for s in scales:
        buffer = gm.get_buffer(s.name)
        buffer.copy_(genome[offset:offset + buffer.numel()].view_as(buffer))
        offset += buffer.numel()
        if s.codes is not None:
            codes = gm.get_buffer(s.codes)
            codes.copy_(quantize_codes(s.weight, buffer, s.zero_point, s.qmin, s.qmax, s.axis))


class _Suffix:
    """The graph run from block `start` to its output on cached block inputs, in image chunks."""

    def __init__(self, gm: fx.GraphModule, blocks: list[Block]):
        out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
        if not isinstance(out, fx.Node):
            raise FxQuantError("cpt-v needs a model that returns one tensor (its logits)")
        self.final, self.blocks = out.name, blocks
        self.modules = [block_module(gm, b) for b in blocks]
        made = {n.name: i for i, b in enumerate(blocks) for n in b.nodes}
        # needed[i]: the values blocks i.. read that were made before block i (or graph inputs)
        self.needed = [{v.name for b in blocks[i:] for v in b.inputs if made.get(v.name, -1) < i}
                       for i in range(len(blocks))]

    def run(self, start: int, values: dict, rows: slice, keep: set[str] = frozenset()):
        """(outputs for `rows`, the values named in `keep` for those rows)."""
        outs, kept = [], {k: [] for k in keep}
        for i in range(rows.start, rows.stop, _CHUNK):
            part = slice(i, min(i + _CHUNK, rows.stop))
            env = {k: values[k][part] for k in self.needed[start] if k in values}
            for module, block in zip(self.modules[start:], self.blocks[start:]):
                results = module(**{v.name: env[v.name] for v in block.inputs if v.name in env})
                env.update(zip((o.name for o in block.outputs), results))
            outs.append(env[self.final])
            for k in keep & env.keys():
                kept[k].append(env[k])
        return torch.cat(outs), {k: torch.cat(v) for k, v in kept.items() if v}


class _Clock:
    """The time budget: a step is skipped when what it cost last time would overrun the budget."""

    def __init__(self, seconds: float | None):
        self.began, self.seconds, self.cost, self.spent = time.perf_counter(), seconds, {}, False

    def elapsed(self) -> float:
        return time.perf_counter() - self.began

    def allows(self, step: str) -> bool:
        if self.seconds is not None and self.elapsed() + self.cost.get(step, 0.0) > self.seconds:
            self.spent = True
        return not self.spent

    def timed(self, step: str, fn, *args):
        tick = time.perf_counter()
        out = fn(*args)
        self.cost[step] = time.perf_counter() - tick
        return out


def _evolve(gm, scales: list[_Scale], current: float, score, opts: CptvOptions,
            generator: torch.Generator, clock: _Clock, report) -> float:
    """One visit of a block: the tournament over its scales; leaves the best in gm, returns its loss."""
    x0 = _read(gm, scales)
    eps = torch.cat([torch.full((gm.get_buffer(s.name).numel(),), s.noise) for s in scales])
    population = [(current, x0)] * opts.cptv_population
    for _ in range(opts.cptv_cycles):
        if not clock.allows("child"):
            break
        picks = torch.randint(len(population), (opts.cptv_tournament,), generator=generator)
        parent = min((population[j] for j in picks.tolist()), key=lambda m: m[0])[1]
        noise = (torch.rand(len(parent), generator=generator) * 2 - 1) * eps
        child = (parent * (1 + noise.to(parent.device))).clamp_min(MIN_SCALE)
        _write(gm, scales, child)
        child_loss = clock.timed("child", score)
        population.append((child_loss, child))
        population.pop(max(range(len(population)), key=lambda j: population[j][0]))
        report(child_loss, min(m[0] for m in population))
    best, genome = min(population, key=lambda m: m[0])
    _write(gm, scales, genome)
    return best


@graph_pass(requires=(quantized,))
@torch.no_grad()
def contrastive_search(gm: fx.GraphModule, config: QuantConfig,
                       calib_loader: Iterable) -> fx.GraphModule:
    opts = CptvOptions.from_options(config.options)
    clock = _Clock(opts.cptv_max_seconds)
    blocks = split_blocks(gm)
    adds = set(patterns.residual_adds(gm))
    searched = [(i, s) for i, b in enumerate(blocks) if (s := _block_scales(gm, b, adds, opts))]
    if not searched:
        raise FxQuantError(f"cpt-v found no uniform scales to search (cptv_scales="
                           f"{opts.cptv_scales!r}); 'attention' needs Softmax residual branches")
    generator = torch.Generator().manual_seed(opts.cptv_seed)
    inputs = graph_inputs(gm, calib_loader)
    n = len(next(iter(inputs.values())))
    order = torch.randperm(n, generator=generator)
    inputs = {k: v[order.to(v.device)] for k, v in inputs.items()}
    n_search = n - round(n * opts.cptv_holdout)
    if n_search < 2:
        raise FxQuantError(f"cpt-v needs at least 2 calibration images to search on, got {n_search}")
    search_rows, hold_rows, all_rows = slice(0, n_search), slice(n_search, n), slice(0, n)
    suffix, reference = _Suffix(gm, blocks), float_reference(gm)
    target = torch.cat([reference(**{k: v[i:i + _CHUNK] for k, v in inputs.items()})
                        for i in range(0, n, _CHUNK)])

    def loss(out: torch.Tensor, rows: slice) -> float:
        return contrastive_loss(out, target[rows], opts.cptv_temperature, opts.cptv_batch_size)

    def search_loss(start: int) -> float:
        return loss(suffix.run(start, cache, search_rows)[0], search_rows)

    def judge(searched_loss: float, start: int) -> float:
        """What picks the returned state: the held-out loss, or the search loss without a holdout."""
        return loss(suffix.run(start, cache, hold_rows)[0], hold_rows) if n_search < n else searched_loss

    keep = set().union(*(suffix.needed[i] for i, _ in searched))
    out, cache = clock.timed("refresh", suffix.run, 0, inputs, all_rows, keep)
    current = loss(out[search_rows], search_rows)
    first = judge(current, 0)
    best = {"judge": first, "loss": current, "genomes": [_read(gm, s) for _, s in searched]}
    record = {"searched": {i: [s.name for s in scales] for i, scales in searched},
              "images": {"search": n_search, "holdout": n - n_search},
              "start_loss": current, "start_judge": first, "history": [], "visits": []}
    bar = tqdm(total=opts.cptv_passes * len(searched) * opts.cptv_cycles, desc="cpt-v search",
               leave=False)

    def report(child_loss: float, best_loss: float) -> None:
        record["history"].append({"loss": child_loss, "best": best_loss,
                                  "seconds": round(clock.elapsed(), 2)})
        bar.update(1)
        bar.set_postfix(loss=f"{best_loss:.4f}", held_out=f"{best['judge']:.4f}")

    for p in range(opts.cptv_passes):
        if clock.spent:
            break
        if p and clock.allows("refresh"):
            cache = clock.timed("refresh", suffix.run, 0, inputs, all_rows, keep)[1]
        for i, scales in reversed(searched):
            if clock.spent:
                break
            current = _evolve(gm, scales, current, lambda: search_loss(i), opts, generator, clock,
                              report)
            if n_search < n and not clock.allows("judge"):
                break  # no time left to judge this visit: the restore below drops it
            judged = clock.timed("judge", judge, current, i)
            record["visits"].append({"pass": p, "block": i, "loss": current, "judge": judged,
                                     "evaluations": len(record["history"])})
            if judged < best["judge"]:
                best = {"judge": judged, "loss": current, "genomes": [_read(gm, s) for _, s in searched]}
    bar.close()
    for (_, scales), genome in zip(searched, best["genomes"]):
        _write(gm, scales, genome)
    record.update(final_loss=best["loss"], final_judge=best["judge"], stopped_by_budget=clock.spent,
                  seconds=round(clock.elapsed(), 2))
    gm.meta["cpt-v"] = record
    return gm
