"""`fxquant bench cpt-v`: top-1 before and after the CPT-V search, per recipe, bit-width and seed.

Each recipe x bit-width is converted once and measured; each seed then searches a copy of it,
under a time budget, on the calibration images alone: the test images are read only after the
search, to fill the table. Writes <out-dir>/cpt_v.{json,md} and <out-dir>/cpt_v_loss.png (the
model's search loss and held-out calibration loss against the number of candidates scored).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
from dataclasses import replace
from pathlib import Path

from fxquant import config, pipeline, plots, workload
from fxquant.api import convert
from fxquant.bench.accuracy import CIFAR10
from fxquant.bench.parity import model_parity
from fxquant.errors import FxQuantError
from fxquant.evaluate import top1
from fxquant.passes.contrastive_search import SCALE_SETS, CptvOptions, contrastive_search

RECIPES = ("repq-vit", "fq-vit")
BITS = ("w4a4", "w3a3")


def add_arguments(p: argparse.ArgumentParser) -> None:
    workload.add_arguments(p)
    if (CIFAR10 / "train5k.npz").is_file() and (CIFAR10 / "test.npz").is_file():
        p.set_defaults(calib_data=str(CIFAR10 / "train5k.npz"), test_data=str(CIFAR10 / "test.npz"))
    p.set_defaults(calib=1000, batch_size=100)
    p.add_argument("--recipes", nargs="+", default=None,
                   help=f"recipes to refine (default: {' '.join(RECIPES)})")
    p.add_argument("--bits", nargs="+", default=list(BITS), help="bit-widths (default: %(default)s)")
    p.add_argument("--configs", nargs="+", metavar="RECIPE:BITS", default=None,
                   help="rows as recipe:bits pairs (fq-vit:w8a8attn4), instead of --recipes x --bits")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--max-seconds", type=float, default=900, help="search budget per seed")
    p.add_argument("--scales", default=CptvOptions().cptv_scales, choices=SCALE_SETS)
    p.add_argument("--passes", type=int, default=CptvOptions().cptv_passes)
    p.add_argument("--parity-images", type=int, default=1000,
                   help="compare each searched model with its ONNX on this many test images (0: skip)")
    p.add_argument("--out-dir", default="benchmarks", help="where cpt_v.json and the PNG go")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def search(qmodel, cfg: config.QuantConfig, calib, options: dict):
    """A searched copy of `qmodel`; only the calibration loader goes in."""
    return contrastive_search(copy.deepcopy(qmodel), replace(cfg, options={**cfg.options, **options}),
                              calib)


def _run_row(work: workload.Workload, recipe: str, bits: str, args: argparse.Namespace) -> dict:
    qmodel = convert(work.loaded.model, work.calib, recipe, bits)
    row = {"recipe": recipe, "bits": bits,
           "before_top1": top1(qmodel, work.test, f"{recipe} {bits}"), "runs": []}
    for seed in args.seeds:
        options = {"cptv_seed": seed, "cptv_max_seconds": args.max_seconds,
                   "cptv_scales": args.scales, "cptv_passes": args.passes}
        searched = search(qmodel, qmodel.config, work.calib, options)
        record = searched.meta["cpt-v"]
        after = top1(searched, work.test, f"{recipe}+cpt-v {bits} seed {seed}")
        row["runs"].append({"seed": seed, "after_top1": after, "gain_pp": 100 * (after - row["before_top1"]),
                            **{k: record[k] for k in ("seconds", "stopped_by_budget", "start_loss",
                                                      "final_loss", "start_judge", "final_judge",
                                                      "images", "visits")},
                            "evaluations": len(record["history"])})
        if args.parity_images:
            row["runs"][-1]["parity"] = model_parity(searched, work.test, f"{recipe}+cpt-v {bits}",
                                                     args.parity_images)
    gains = [r["gain_pp"] for r in row["runs"]]
    row["gain_pp_mean"] = statistics.mean(gains)
    row["gain_pp_range"] = [min(gains), max(gains)]
    return row


def _pairs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(recipe, bits) rows, checked before any work starts."""
    if args.configs:
        if args.recipes:
            raise FxQuantError("give rows either as --configs or as --recipes x --bits, not both")
        malformed = [c for c in args.configs if c.count(":") != 1]
        if malformed:
            raise FxQuantError(f"--configs {malformed[0]!r}: write each row as recipe:bits, e.g. fq-vit:w8a8attn4")
        pairs = [tuple(c.split(":")) for c in args.configs]
    else:
        pairs = [(r, b) for r in args.recipes or RECIPES for b in args.bits]
    for recipe, bits in pairs:
        pipeline.check(config.resolve(recipe, bits))
    return pairs


def run(args: argparse.Namespace) -> dict:
    pairs = _pairs(args)
    out_dir = Path(args.out_dir)
    if not out_dir.is_dir():
        raise FxQuantError(f"--out-dir {out_dir} is not a directory")
    work = workload.from_args(args)
    if work.test is None:
        raise FxQuantError("bench cpt-v needs test images: --eval must not be 0")
    result = {"model": work.loaded.name, "calib_images": work.calib_images,
              "eval_images": work.eval_images, "calib_data": Path(args.calib_data).name,
              "test_data": Path(args.test_data).name, "scales": args.scales, "passes": args.passes,
              "max_seconds": args.max_seconds,
              "results": [_run_row(work, r, b, args) for r, b in pairs]}
    result["command"] = (f"fxquant bench cpt-v --configs {' '.join(f'{r}:{b}' for r, b in pairs)} "
                         f"--seeds {' '.join(map(str, args.seeds))} --max-seconds {args.max_seconds:g} "
                         f"--scales {args.scales} --passes {args.passes} --calib {args.calib} "
                         f"--eval {work.eval_images} --parity-images {args.parity_images}")
    (out_dir / "cpt_v.json").write_text(json.dumps(result, indent=1))
    (out_dir / "cpt_v.md").write_text(f"{markdown(result)}\n\nCommand: `{result['command']}`\n")
    result["plot"] = str(plot(result, out_dir / "cpt_v_loss.png"))
    return result


def plot(result: dict, path: Path) -> Path:
    """One panel per recipe x bits: search loss (solid) and held-out loss (dashed) per seed."""
    rows = result["results"]
    fig = plots.figure(5 * len(rows), 4)
    for k, row in enumerate(rows):
        ax = fig.add_subplot(1, len(rows), k + 1)
        for i, run in enumerate(row["runs"]):
            x = [0] + [v["evaluations"] for v in run["visits"]]
            ax.plot(x, [run["start_loss"]] + [v["loss"] for v in run["visits"]], "-", color=f"C{i}",
                    label=f"seed {run['seed']} search")
            ax.plot(x, [run["start_judge"]] + [v["judge"] for v in run["visits"]], "--",
                    color=f"C{i}", label=f"seed {run['seed']} held out")
        ax.set_title(f"{row['recipe']} {row['bits'].upper()}: {100 * row['before_top1']:.2f} -> "
                     f"{100 * row['before_top1'] + row['gain_pp_mean']:.2f} (mean)", fontsize=9)
        ax.set_xlabel("candidates scored")
        ax.set_ylabel("InfoNCE loss (2τ-scaled)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return plots.save(fig, path)


def markdown(result: dict) -> str:
    lines = [f"{result['model']}: top-1 (%) on {result['eval_images']} test images "
             f"({result['test_data']}), {result['calib_images']} calibration images "
             f"({result['calib_data']}); cpt-v scales={result['scales']}, passes={result['passes']}, "
             f"budget {result['max_seconds']:.0f} s per seed", "",
             "| recipe | bits | before | after (per seed) | gain pp mean [min, max] | search s | candidates "
             "| onnxruntime top-1 agreement |", "|---|---|---|---|---|---|---|---|"]
    for row in result["results"]:
        runs = row["runs"]
        lines.append(
            f"| {row['recipe']} | {row['bits'].upper()} | {100 * row['before_top1']:.2f} | "
            + " / ".join(f"{100 * r['after_top1']:.2f}" for r in runs)
            + f" | {row['gain_pp_mean']:+.2f} [{row['gain_pp_range'][0]:+.2f}, {row['gain_pp_range'][1]:+.2f}] | "
            + " / ".join(f"{r['seconds']:.0f}" for r in runs) + " | "
            + " / ".join(str(r["evaluations"]) for r in runs) + " | "
            + " / ".join(f"{100 * r['parity']['top1_agreement']:.1f} %" if "parity" in r else "n/a"
                         for r in runs) + " |")
    return "\n".join(lines)
