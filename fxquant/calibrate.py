"""Run calibration data through a graph with observers, checking the data on the way."""
from __future__ import annotations

from typing import Iterable

import torch
import torch.fx as fx
from tqdm import tqdm

from fxquant import annotation
from fxquant.data import batch_inputs, input_tensors
from fxquant.errors import FxQuantError
from fxquant.padding import token_mask


def model_device(module) -> torch.device:
    """Where inputs must go: the device of the first parameter or buffer (CPU if none)."""
    if not isinstance(module, torch.nn.Module):
        return torch.device("cpu")
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")


def run_batch(module: torch.nn.Module, batch, index: int, what: str = "calibration"):
    """Forward one loader item, naming the batch and its shape if the model rejects it."""
    args, kwargs = batch_inputs(batch)
    device = model_device(module)
    for t in input_tensors(args, kwargs):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise FxQuantError(f"{what} batch {index} contains NaN or Inf values")
    args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)
    kwargs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    try:
        return module(*args, **kwargs)
    except FxQuantError:
        raise
    except Exception as e:
        shapes = [tuple(t.shape) for t in input_tensors(args, kwargs)]
        raise FxQuantError(f"the model cannot run {what} batch {index} with input shape(s) "
                           f"{shapes}: {e}") from e


@torch.no_grad()
def calibrate(gm: fx.GraphModule, loader: Iterable, max_batches: int | None = None) -> int:
    """Feed the loader through `gm` (observers record, padding tokens left out); returns the
    number of batches seen."""
    gm.eval()
    observers = [gm.get_submodule(n.target) for n in annotation.observer_nodes(gm)]
    kept_tokens = token_mask(gm) if observers else None
    seen = 0
    try:
        for index, batch in enumerate(tqdm(loader, desc="calibrating", leave=False)):
            if max_batches is not None and index >= max_batches:
                break
            keep = kept_tokens(graph_inputs(gm, [batch])) if kept_tokens else None
            for observer in observers:
                observer.keep = keep
            run_batch(gm, batch, index)
            seen += 1
    finally:
        for observer in observers:
            observer.keep = None
    if seen == 0:
        raise FxQuantError("the calibration loader is empty: give it at least one batch")
    return seen


def graph_inputs(gm: fx.GraphModule, loader: Iterable) -> dict[str, torch.Tensor]:
    """The calibration set as whole tensors, one per graph input it gives (by placeholder name)."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    name_of = {n.target: n.name for n in placeholders}  # keyword -> node name (they may differ)
    chunks: dict[str, list[torch.Tensor]] = {}
    for batch in loader:
        args, kwargs = batch_inputs(batch)
        named = {**{n.name: a for n, a in zip(placeholders, args)},
                 **{name_of.get(k, k): v for k, v in kwargs.items()}}
        for name, value in named.items():
            chunks.setdefault(name, []).append(value)
    if not chunks:
        raise FxQuantError("the calibration loader is empty: give it at least one batch")
    device = model_device(gm)
    return {name: torch.cat(values).to(device) for name, values in chunks.items()}
