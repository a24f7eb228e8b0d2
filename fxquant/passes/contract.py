"""What a pass needs of the graph it is given and promises of the graph it returns (torch.fx
PassBase's requires / ensures), checked around every call: a recipe or a new pass that runs passes
out of order fails at once, naming the pass and the condition, not later in a confusing way.

A condition returns the reason it does not hold, or None.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch.fx as fx

from fxquant import annotation
from fxquant.errors import FxQuantError

Condition = Callable[[fx.GraphModule], "str | None"]


def roles_annotated(gm: fx.GraphModule) -> str | None:
    if not any(annotation.of(n).weighted for n in gm.graph.nodes):
        return "no Linear/Conv is annotated: run annotate_roles first"
    return None


def observed(gm: fx.GraphModule) -> str | None:
    if not annotation.observer_nodes(gm):
        return "the graph has no observers: run insert_observers first"
    return None


def calibrated(gm: fx.GraphModule) -> str | None:
    observers = annotation.observer_nodes(gm)
    idle = [n.name for n in observers if gm.get_submodule(n.target).min is None]
    if not observers or idle:
        return f"observers saw no data ({', '.join(idle) or 'none inserted'}): calibrate first"
    return None


def no_observers(gm: fx.GraphModule) -> str | None:
    left = [n.name for n in annotation.observer_nodes(gm)]
    return f"observers remain: {', '.join(left)}" if left else None


def quantized(gm: fx.GraphModule) -> str | None:
    if not any(annotation.of(n).float_weight is not None for n in gm.graph.nodes):
        return "no quantized Linear/Conv: run the quantize pass first"
    return None


def graph_pass(requires: tuple[Condition, ...] = (), ensures: tuple[Condition, ...] = ()):
    """Decorate a pass `fn(gm, ...) -> gm` with the conditions it requires and ensures."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(gm: fx.GraphModule, *args, **kwargs) -> fx.GraphModule:
            _hold(fn.__name__, "requires", requires, gm)
            out = fn(gm, *args, **kwargs)
            _hold(fn.__name__, "ensures", ensures, out)
            return out
        run.requires, run.ensures = requires, ensures
        return run
    return wrap


def _hold(name: str, kind: str, conditions: tuple[Condition, ...], gm: fx.GraphModule) -> None:
    for condition in conditions:
        reason = condition(gm)
        if reason is not None:
            raise FxQuantError(f"pass {name} {kind} {condition.__name__}: {reason}")
