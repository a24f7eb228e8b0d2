"""`fxquant bench attention-quantizers`: post-Softmax quantizers on the model's real attention maps.

Each quantizer is fitted as the quantize pass fits it (an Observer fed the calibration images'
attention, then ACTIVATION_FITTERS) and measured on test images' attention, layer by layer:
MSE over all values; mean absolute error on the largest 1 % of values (the ones near 1 that
DopQ-ViT says decide accuracy); and the relative squared error of A·V with the layer's real V.
"""
from __future__ import annotations

import argparse

import torch
import torch.fx as fx

from fxquant import patterns, quantizers, roles, workload
from fxquant.bench.accuracy import CIFAR10
from fxquant.calibrate import run_batch
from fxquant.config import RoleSpec
from fxquant.observers import search
from fxquant.observers.observer import Observer
from fxquant.tracing import trace

QUANTIZERS = ("uniform", "log2", "logsqrt2", "tan")
BITS = (3, 4, 6)
TOP_FRACTION = 0.01


def add_arguments(p: argparse.ArgumentParser) -> None:
    workload.add_arguments(p)
    if (CIFAR10 / "train5k.npz").is_file():
        p.set_defaults(calib_data=str(CIFAR10 / "train5k.npz"), test_data=str(CIFAR10 / "test.npz"))
    p.set_defaults(calib=1024, eval=500)
    p.add_argument("--quantizers", nargs="+", default=list(QUANTIZERS))
    p.add_argument("--bits", nargs="+", type=int, default=list(BITS))
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def attention_pairs(gm: fx.GraphModule) -> list[tuple[fx.Node, fx.Node]]:
    """(A, V) of every softmax(..) @ V, found by structure."""
    return [(n.args[0], n.args[1]) for n in gm.graph.nodes
            if patterns.is_matmul(gm, n)
            and patterns.is_softmax(gm, patterns.trace_back(n.args[0]).source)]


class _Capture(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, nodes):
        super().__init__(gm)
        self.nodes, self.values = set(nodes), {}

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if n in self.nodes:
            self.values[n] = out.detach()
        return out


@torch.no_grad()
def _maps(gm, pairs, loader):
    """Per batch: {node: value} for every A and V."""
    for index, batch in enumerate(loader):
        capture = _Capture(gm, [x for pair in pairs for x in pair])
        run_batch(lambda *a, **k: capture.run(*a, **k), batch, index)
        yield capture.values


def _errors(params, a: torch.Tensor, v: torch.Tensor) -> dict:
    a_hat = params.fake_quantize(a)
    top = a >= search.quantile(a.flatten(), 1 - TOP_FRACTION)
    out, out_hat = a @ v, a_hat @ v
    return {"mse": (a_hat - a).pow(2).mean().item(),
            "top_mae": (a_hat - a)[top].abs().mean().item(),
            "av_rel": ((out_hat - out).pow(2).sum() / out.pow(2).sum()).item()}


def run(args: argparse.Namespace) -> dict:
    fitters = {name: quantizers.get(name).fit for name in args.quantizers}
    work = workload.from_args(args)
    gm = trace(work.loaded.model)
    pairs = attention_pairs(gm)
    observers = [Observer(roles.POST_SOFTMAX) for _ in pairs]
    for values in _maps(gm, pairs, work.calib):
        for observer, (a, _) in zip(observers, pairs):
            observer(values[a])
    tests = list(_maps(gm, pairs, work.test))
    layers = [(torch.cat([t[a] for t in tests]), torch.cat([t[v] for t in tests])) for a, v in pairs]
    rows = []
    for name, fitter in fitters.items():
        spec = RoleSpec(quantizer=name, observer="mse", bits="attn")
        for bits in args.bits:
            per_layer = []
            for layer, (observer, (a, v)) in enumerate(zip(observers, layers)):
                per_layer.append({"layer": layer, **_errors(fitter(observer, spec, bits), a, v)})
            mean = {k: sum(p[k] for p in per_layer) / len(per_layer)
                    for k in ("mse", "top_mae", "av_rel")}
            rows.append({"quantizer": name, "bits": bits, **mean, "layers": per_layer})
    return {"model": work.loaded.name, "calib_images": work.calib_images,
            "eval_images": work.eval_images, "layers": len(pairs), "rows": rows}


def markdown(r: dict) -> str:
    lines = [f"{r['model']}: post-Softmax quantization error, mean over {r['layers']} layers; "
             f"fitted on {r['calib_images']} calibration images, measured on {r['eval_images']} "
             "test images", "",
             "| quantizer | bits | MSE | MAE on top 1 % | A·V rel. sq. error |", "|---|---|---|---|---|"]
    for row in sorted(r["rows"], key=lambda x: (x["bits"], x["quantizer"])):
        lines.append(f"| {row['quantizer']} | {row['bits']} | {row['mse']:.3e} | "
                     f"{row['top_mae']:.3e} | {row['av_rel']:.3e} |")
    return "\n".join(lines)
