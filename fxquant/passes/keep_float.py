"""Decide what stays float, and say so: the parts the user's IgnoredScope names, and every product
(a Conv1d, an einsum, a matmul with a weight operand) fxquant has no quantized form for.

Runs right after annotate_roles: it removes the ignored parts from the annotations (so no
observer, quantizer or export ever touches them) and lists every float part, with the reason, in
`gm.meta["float_parts"]`, which the QuantizedModel, the command line and its JSON report.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.fx as fx

from fxquant import annotation, patterns
from fxquant.errors import FxQuantError
from fxquant.ignored_scope import IgnoredScope
from fxquant.passes.contract import graph_pass, roles_annotated

NO_QUANTIZED_FORM = "no quantized form (fxquant quantizes Linear, Conv2d and products of two activations)"


@dataclass(frozen=True)
class FloatPart:
    """A part of the model that runs in float, where and why."""
    name: str      # the module path as model.named_modules() gives it (the node's name outside any)
    kind: str      # "Linear", "matmul", "Conv1d", "post_softmax tensor", ...
    reason: str    # "ignored_scope name 'blocks.0'", NO_QUANTIZED_FORM, ...

    def __str__(self) -> str:
        return f"{self.name} ({self.kind}): {self.reason}"


def _name(node: fx.Node) -> str:
    paths = patterns.scope_paths(node)
    return paths[-1] if paths else node.name


def _kind(gm: fx.GraphModule, node: fx.Node) -> str:
    return patterns.product_kind(gm, node) or node.name


def _ignore_nodes(gm: fx.GraphModule, scope: IgnoredScope, used: set[str],
                  ignored: set[fx.Node]) -> list[FloatPart]:
    parts = []
    for node in gm.graph.nodes:
        note = annotation.of(node)
        entries = scope.matches(gm, node) if note.weighted or note.quantized_inputs else []
        if entries:
            annotation.update(node, weighted=False, quantized_inputs=())
            parts.append(FloatPart(_name(node), _kind(gm, node), f"ignored_scope {entries[0]}"))
            used.update(entries)
            ignored.add(node)
    return parts


def _ignore_roles(gm: fx.GraphModule, scope: IgnoredScope, used: set[str]) -> list[FloatPart]:
    parts = []
    for node in gm.graph.nodes:
        role = annotation.of(node).role
        if role in scope.roles:
            parts.append(FloatPart(_name(node), f"{role} tensor", f"ignored_scope role {role!r}"))
            used.add(f"role {role!r}")
            for user in node.users:
                kept = tuple(v for v in annotation.of(user).quantized_inputs if v is not node)
                annotation.update(user, quantized_inputs=kept)
    return parts


def _drop_unread_roles(gm: fx.GraphModule) -> None:
    """A tensor no consumer quantizes any more has no role (no observer is inserted for it)."""
    read = {v for n in gm.graph.nodes for v in annotation.of(n).quantized_inputs}
    for node in gm.graph.nodes:
        if annotation.of(node).role is not None and node not in read:
            annotation.update(node, role=None)


def _unquantizable(gm: fx.GraphModule, ignored: set[fx.Node]) -> list[FloatPart]:
    return [FloatPart(_name(n), _kind(gm, n), NO_QUANTIZED_FORM) for n in gm.graph.nodes
            if patterns.product_kind(gm, n) and n not in ignored and not annotation.of(n).weighted
            and not annotation.of(n).quantized_inputs]


def _check_used(scope: IgnoredScope, used: set[str], gm: fx.GraphModule) -> None:
    unused = [label for label in scope.labels() if label not in used]
    if unused:
        paths = sorted({_name(n) for n in gm.graph.nodes if patterns.product_kind(gm, n)})
        raise FxQuantError(f"ignored_scope {unused[0]} matches nothing quantized in {type(gm).__name__}"
                           f" (its quantized parts are named e.g. {', '.join(paths[:3])})")


@graph_pass(requires=(roles_annotated,))
def keep_float(gm: fx.GraphModule, scope: IgnoredScope | None = None) -> fx.GraphModule:
    scope = scope or IgnoredScope()
    used: set[str] = set()
    ignored: set[fx.Node] = set()
    parts = _ignore_nodes(gm, scope, used, ignored) + _ignore_roles(gm, scope, used)
    _drop_unread_roles(gm)
    if scope.validate:
        _check_used(scope, used, gm)
    if not any(annotation.of(n).weighted for n in gm.graph.nodes):
        raise FxQuantError("ignored_scope leaves no Linear or Conv2d to quantize")
    gm.meta["float_parts"] = tuple(parts + _unquantizable(gm, ignored))
    return gm
