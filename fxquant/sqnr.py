"""Where quantization hurts: per quantized tensor its role, bits, quantizer, range and SQNR.

SQNR (signal-to-quantization-noise ratio, dB) is measured on real images two ways:
- across the quantizer alone: its input vs its output, inside the quantized model;
- against the float model: the float reference graph's value of the same tensor (same folds,
  float weights, no quantizers) vs the quantized model's, so error carried in from earlier layers
  counts too.
Weights compare the dequantized codes with the float weights they were rounded from.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.fx as fx
from tqdm import tqdm

from fxquant import annotation, config, roles
from fxquant.calibrate import model_device
from fxquant.data import TransformFn, batch_inputs, model_inputs
from fxquant.errors import FxQuantError
from fxquant.passes.float_reference import float_reference, is_activation_quantizer
from fxquant.quantized_model import QuantizedModel
from fxquant.quantizers.custom_op import quantized_value
from fxquant.quantizers.uniform import dequantize


class _Stats:
    """Running sums for the SQNR of one tensor, and its float range."""

    def __init__(self):
        self.signal = self.noise = self.signal_f = self.noise_f = 0.0
        self.lo, self.hi = math.inf, -math.inf

    def add(self, x: torch.Tensor, q: torch.Tensor, reference: torch.Tensor | None = None) -> None:
        x, q = x.detach().double(), q.detach().double()
        self.signal += x.pow(2).sum().item()
        self.noise += (x - q).pow(2).sum().item()
        self.lo, self.hi = min(self.lo, x.min().item()), max(self.hi, x.max().item())
        if reference is not None:
            reference = reference.detach().double()
            self.signal_f += reference.pow(2).sum().item()
            self.noise_f += (reference - q).pow(2).sum().item()


def _db(signal: float, noise: float) -> float | None:
    if signal == 0.0:
        return None
    return 10 * math.log10(signal / max(noise, 1e-30))


class _Capture(fx.Interpreter):
    """Runs a graph, handing each node named in `wanted` (with the interpreter) to a callback."""

    def __init__(self, gm: fx.GraphModule, wanted: dict):
        super().__init__(gm)
        self.wanted = wanted

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if n.name in self.wanted:
            self.wanted[n.name](self, n, out)
        return out


def _layer_name(linear: fx.Node) -> str:
    """`blocks_0_attn_qkv` from the codes buffer feeding a quantized Linear/Conv's dequantize op."""
    weight = linear.args[1]   # F.linear / conv2d(x, weight, ...)
    source = (dequantize.arguments(weight).codes
              if isinstance(weight, fx.Node) and weight.target is dequantize.overload else None)
    if source is not None and source.op == "get_attr":
        return str(source.target).removesuffix("_codes").removesuffix("_weight")
    return linear.name


def _tensor_name(quantizer: fx.Node) -> str:
    """`blocks_0_norm1 -> blocks_0_attn_qkv`: the quantized value and the layers reading it."""
    readers = [_layer_name(u) if annotation.of(u).weighted else u.name for u in quantizer.users]
    return f"{quantized_value(quantizer).name} -> {', '.join(readers)}"


def _describe(cfg: config.QuantConfig, role: str) -> tuple[int, str]:
    spec = cfg.roles[role]
    kind = f"{spec.quantizer} {spec.observer}" + (" per-channel" if spec.per_channel else "")
    return cfg.bits_for(spec), kind + (" symmetric" if spec.symmetric else "")


@dataclass
class Report:
    """Rows in graph order; `table()` shows them worst first, `plots.plot_sqnr` by layer."""
    rows: list[dict]
    title: str = ""

    def worst_first(self) -> list[dict]:
        return sorted(self.rows, key=lambda r: math.inf if r["sqnr_db"] is None else r["sqnr_db"])

    def table(self) -> str:
        return table(self.worst_first())


@torch.no_grad()
def report(qmodel, loader: Iterable, max_batches: int | None = None,
           transform_fn: TransformFn | None = None) -> Report:
    """Per-tensor SQNR of a QuantizedModel (fxquant.convert) over the batches of `loader`, each
    mapped to the model's inputs by `transform_fn` as in `convert`."""
    if not isinstance(qmodel, QuantizedModel):
        raise FxQuantError(f"report needs a QuantizedModel from fxquant.convert, "
                           f"got {type(qmodel).__name__}")
    cfg = qmodel.config
    quantizers = [n for n in qmodel.graph.nodes if is_activation_quantizer(n)]
    linears = [n for n in qmodel.graph.nodes if annotation.of(n).float_weight is not None]
    stats = {n.name: _Stats() for n in (*quantizers, *linears)}
    floats: dict[str, torch.Tensor] = {}

    def keep_float(interp, node, out):
        floats[node.name] = out

    def on_quantizer(interp, node, out):
        x = quantized_value(node)
        stats[node.name].add(interp.env[x], out, floats.get(x.name))

    def on_linear(interp, node, out):
        if stats[node.name].signal == 0.0:  # weights do not change between batches
            stats[node.name].add(annotation.of(node).float_weight, interp.env[node.args[1]])

    reference = _Capture(float_reference(qmodel),
                         {quantized_value(n).name: keep_float for n in quantizers})
    quantized = _Capture(qmodel, {**{n.name: on_quantizer for n in quantizers},
                                  **{n.name: on_linear for n in linears}})
    device, seen = model_device(qmodel), 0
    for index, batch in enumerate(tqdm(loader, desc="report", leave=False)):
        if max_batches is not None and index >= max_batches:
            break
        args, kwargs = batch_inputs(model_inputs(batch, transform_fn))
        if kwargs:
            raise FxQuantError("report feeds positional inputs only: give (tensor, label) batches")
        args = [a.to(device) if isinstance(a, torch.Tensor) else a for a in args]
        floats.clear()
        reference.run(*args)
        quantized.run(*args)
        seen += 1
    if seen == 0:
        raise FxQuantError("the report loader is empty: give it at least one batch")
    rows = []
    for node in qmodel.graph.nodes:
        if node.name not in stats:
            continue
        s = stats[node.name]
        role = annotation.of(node).role or roles.WEIGHT
        bits, kind = _describe(cfg, role)
        is_weight = role == roles.WEIGHT
        rows.append({"tensor": f"{_layer_name(node)}.weight" if is_weight else _tensor_name(node),
                     "role": role, "bits": bits, "quantizer": kind, "min": s.lo, "max": s.hi,
                     "sqnr_db": _db(s.signal, s.noise),
                     "sqnr_vs_float_db": None if is_weight else _db(s.signal_f, s.noise_f)})
    return Report(rows, f"{cfg.name} {cfg.bits_label}")


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict]) -> str:
    lines = ["| tensor | role | bits | quantizer | min | max | SQNR dB (quantizer) | "
             "SQNR dB (vs float model) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['tensor']} | {r['role']} | {r['bits']} | {r['quantizer']} | "
                     f"{r['min']:.3g} | {r['max']:.3g} | {_fmt(r['sqnr_db'])} | "
                     f"{_fmt(r['sqnr_vs_float_db'])} |")
    return "\n".join(lines)
