"""Where quantization hurts: per quantized tensor its role, bits, quantizer, range and SQNR.

SQNR (signal-to-quantization-noise ratio, dB) is measured on real images two ways:
- across the quantizer alone: its input vs its output, inside the quantized model;
- against the float model: the float reference graph's value of the same tensor (same folds,
  float weights, no quantizers) vs the quantized model's, so error carried in from earlier layers
  counts too.
Weights compare the dequantized codes with the float weights they were rounded from.
Also plots top-1 against bit-width from `fxquant bench accuracy --json`.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
import torch.fx as fx
from tqdm import tqdm

from fxquant import config, roles
from fxquant.calibrate import model_device
from fxquant.data import batch_inputs
from fxquant.errors import FxQuantError
from fxquant.passes.float_reference import float_reference, is_activation_quantizer
from fxquant.passes.quantize import FLOAT_WEIGHT_KEY


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
    source = linear.args[1].args[0] if isinstance(linear.args[1], fx.Node) else None
    if source is not None and source.op == "get_attr":
        return str(source.target).removesuffix("_codes").removesuffix("_weight")
    return linear.name


def _tensor_name(quantizer: fx.Node) -> str:
    """`blocks_0_norm1 -> blocks_0_attn_qkv`: the quantized value and the layers reading it."""
    readers = [_layer_name(u) if u.meta.get(roles.WEIGHT_KEY) else u.name for u in quantizer.users]
    return f"{quantizer.args[0].name} -> {', '.join(readers)}"


def _describe(cfg: config.QuantConfig, role: str) -> tuple[int, str]:
    spec = cfg.roles[role]
    kind = f"{spec.quantizer} {spec.observer}" + (" per-channel" if spec.per_channel else "")
    return cfg.bits_for(spec), kind + (" symmetric" if spec.symmetric else "")


@dataclass
class Report:
    """Rows in graph order; `table()` and `plot()` show them worst first / by layer."""
    rows: list[dict]
    title: str = ""

    def worst_first(self) -> list[dict]:
        return sorted(self.rows, key=lambda r: math.inf if r["sqnr_db"] is None else r["sqnr_db"])

    def table(self) -> str:
        return table(self.worst_first())

    def plot(self, path: str | Path) -> Path:
        return plot_sqnr(self.rows, path, self.title)


@torch.no_grad()
def report(qmodel, loader: Iterable, max_batches: int | None = None) -> Report:
    """Per-tensor SQNR of a QuantizedModel (fxquant.convert) over the batches of `loader`."""
    from fxquant.api import QuantizedModel
    if not isinstance(qmodel, QuantizedModel):
        raise FxQuantError(f"report needs a QuantizedModel from fxquant.convert, "
                           f"got {type(qmodel).__name__}")
    cfg = qmodel.config
    quantizers = [n for n in qmodel.graph.nodes if is_activation_quantizer(n)]
    linears = [n for n in qmodel.graph.nodes
               if n.meta.get(roles.WEIGHT_KEY) and FLOAT_WEIGHT_KEY in n.meta]
    stats = {n.name: _Stats() for n in (*quantizers, *linears)}
    floats: dict[str, torch.Tensor] = {}

    def keep_float(interp, node, out):
        floats[node.name] = out

    def on_quantizer(interp, node, out):
        stats[node.name].add(interp.env[node.args[0]], out, floats.get(node.args[0].name))

    def on_linear(interp, node, out):
        if stats[node.name].signal == 0.0:  # weights do not change between batches
            stats[node.name].add(node.meta[FLOAT_WEIGHT_KEY], interp.env[node.args[1]])

    reference = _Capture(float_reference(qmodel), {n.args[0].name: keep_float for n in quantizers})
    quantized = _Capture(qmodel, {**{n.name: on_quantizer for n in quantizers},
                                  **{n.name: on_linear for n in linears}})
    device, seen = model_device(qmodel), 0
    for index, batch in enumerate(tqdm(loader, desc="report", leave=False)):
        if max_batches is not None and index >= max_batches:
            break
        args, kwargs = batch_inputs(batch)
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
        role = node.meta.get(roles.META_KEY, roles.WEIGHT)
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


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # Agg canvas, no pyplot state; imported only to plot
    return Figure(figsize=(width, height))


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    if not path.parent.is_dir():
        raise FxQuantError(f"cannot write {path}: directory {path.parent} does not exist")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def plot_sqnr(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Horizontal bars of each tensor's SQNR in graph order, coloured by role."""
    fig = _figure(9, 1.5 + 0.2 * len(rows))
    ax = fig.add_subplot()
    colours = {role: f"C{i}" for i, role in enumerate(roles.ALL_ROLES)}
    y = list(range(len(rows)))[::-1]
    ax.barh(y, [r["sqnr_db"] or 0 for r in rows], color=[colours[r["role"]] for r in rows])
    from matplotlib.patches import Patch
    handles = [Patch(color=colours[role], label=f"{role} (quantizer alone)")
               for role in dict.fromkeys(r["role"] for r in rows)]
    ref = [(yy, r["sqnr_vs_float_db"]) for yy, r in zip(y, rows)
           if r["sqnr_vs_float_db"] is not None]
    if ref:
        handles.append(ax.scatter([v for _, v in ref], [yy for yy, _ in ref], color="black", s=12,
                                  zorder=3, label="vs float model (error carried in)"))
    ax.set_yticks(y, [f"{r['tensor']} [{r['bits']}b]" for r in rows], fontsize=7)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel("SQNR (dB), higher is better")
    ax.set_title(f"SQNR per quantized tensor, graph order: {title}")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(handles=handles, loc="lower right", fontsize=7)
    return _save(fig, path)


def plot_accuracy(result: dict, path: str | Path) -> Path:
    """Top-1 against activation bit-width: a line per fxquant recipe, a marker per peer."""
    fig = _figure(8, 5.5)
    ax = fig.add_subplot()
    a_bits = lambda b: config.parse_bits(b)["a_bits"]  # noqa: E731
    recipes = list(dict.fromkeys(r["recipe"] for r in result["results"]))
    for i, recipe in enumerate(recipes):
        rows = sorted((r for r in result["results"] if r["recipe"] == recipe),
                      key=lambda r: -a_bits(r["bits"]))
        for key, style in (("torch_top1", "-o"), ("onnx_top1", "--x")):
            points = [(a_bits(r["bits"]), 100 * r[key]) for r in rows if r.get(key) is not None]
            if points:
                runtime = " (onnxruntime)" if key == "onnx_top1" else ""
                ax.plot(*zip(*points), style, color=f"C{i}", label=f"fxquant {recipe}{runtime}")
    markers = "sD^v<>phP*"
    peers = list(dict.fromkeys(p["name"] for p in result["peers"]))
    for i, name in enumerate(peers):
        points = [(a_bits(p["bits"]), 100 * p["top1"]) for p in result["peers"]
                  if p["name"] == name and p.get("top1") is not None]
        if points:
            ax.scatter(*zip(*points), marker=markers[i % len(markers)], s=45, zorder=3,
                       facecolors="none", edgecolors=f"C{(len(recipes) + i) % 10}", label=name)
    ax.axhline(100 * result["fp32_top1"], color="gray", linestyle=":", label="FP32")
    ax.set_xlabel("bits (weights = activations)")
    ax.set_ylabel("top-1 (%)")
    ax.invert_xaxis()
    ax.set_xticks(sorted({a_bits(r["bits"]) for r in result["results"] + result["peers"]}))
    ax.set_title(f"{result['model']}: top-1 on {result['eval_images']} test images, "
                 f"{result['calib_images']} calibration images")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    return _save(fig, path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from fxquant import workload
    workload.add_arguments(p)
    p.set_defaults(eval=256)
    p.add_argument("--recipe", default="minmax", help="recipe name, e.g. minmax")
    p.add_argument("--bits", default="w8a8", help="bit-widths, e.g. w8a8, w4a4")
    p.add_argument("--png", default=None, help="where to write the plot")
    p.add_argument("--accuracy-json", default=None,
                   help="plot top-1 against bit-width from this `bench accuracy --json` object "
                        "instead of reporting a model")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def run(args: argparse.Namespace) -> dict:
    if args.accuracy_json:
        try:
            result = json.loads(Path(args.accuracy_json).read_text())
        except (OSError, ValueError) as e:
            raise FxQuantError(f"cannot read {args.accuracy_json} as bench accuracy JSON: "
                               f"{e}") from e
        return {"accuracy_json": args.accuracy_json,
                "png": str(plot_accuracy(result, args.png or "accuracy_vs_bits.png"))}
    from fxquant import workload
    from fxquant.api import convert
    work = workload.from_args(args)
    if work.test is None:
        raise FxQuantError("report needs images to measure on: --eval must not be 0")
    qmodel = convert(work.loaded.model, work.calib, args.recipe, args.bits)
    rep = report(qmodel, work.test)
    result = {"model": work.loaded.name, "recipe": qmodel.config.name,
              "bits": qmodel.config.bits_label, "calib_images": work.calib_images,
              "images": work.eval_images, "tensors": rep.worst_first()}
    if args.png:
        result["png"] = str(rep.plot(args.png))
    return result


def markdown(result: dict) -> str:
    if "tensors" not in result:
        return f"wrote {result['png']}"
    return (f"{result['model']} {result['recipe']} {result['bits']}: SQNR on {result['images']} "
            f"images, worst first\n\n" + table(result["tensors"]))
