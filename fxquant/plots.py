"""Figures for the reports and benches: matplotlib's Agg canvas, no pyplot state."""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from fxquant import config, roles
from fxquant.errors import FxQuantError


def figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height))


def save(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG at `path`, refusing a missing directory in words."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FxQuantError(f"cannot write {path}: directory {path.parent} does not exist")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def plot_sqnr(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Horizontal bars of each tensor's SQNR in graph order, coloured by role."""
    fig = figure(9, 1.5 + 0.2 * len(rows))
    ax = fig.add_subplot()
    colours = {role: f"C{i}" for i, role in enumerate(roles.ALL_ROLES)}
    y = list(range(len(rows)))[::-1]
    ax.barh(y, [r["sqnr_db"] or 0 for r in rows], color=[colours[r["role"]] for r in rows])
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
    return save(fig, path)


def plot_accuracy(result: dict, path: str | Path) -> Path:
    """Top-1 against activation bit-width: a line per fxquant recipe, a marker per peer."""
    fig = figure(8, 5.5)
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
    return save(fig, path)
