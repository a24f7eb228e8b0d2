"""The one annotation fxquant keeps on a graph node, under `node.meta[KEY]` (in the spirit of
PT2E's QuantizationAnnotation): what the passes decided about the node, typed.

Annotations are frozen and replaced on update, because copying a graph shares `node.meta`
values between the copies: a pass on the copy must not change the original.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.fx as fx

from fxquant.quantizers.base import Quantizer

KEY = "fxquant"


@dataclass(frozen=True)
class Annotation:
    # Set by passes.annotate_roles:
    role: str | None = None                    # role of the tensor this node outputs, if quantized
    weighted: bool = False                     # a Linear/Conv (node) whose weight is quantized
    quantized_inputs: tuple[fx.Node, ...] = () # the inputs of this node that get quantized
    # Set by passes.insert_observers, on an observer node:
    observes: fx.Node | None = None            # the value it observes
    fitted: Quantizer | None = None            # parameters a pass fitted before the quantize pass
    # Set by passes.quantize, on a quantized F.linear / conv node (for refinements, never exported):
    float_weight: torch.Tensor | None = None   # the float weight its integer codes were rounded from
    weight_range: tuple[int, int] | None = None  # (qmin, qmax) of those codes


EMPTY = Annotation()


def of(node: fx.Node) -> Annotation:
    """The node's annotation (an empty one if no pass annotated it)."""
    return node.meta.get(KEY, EMPTY)


def update(node: fx.Node, **fields) -> Annotation:
    """Replace the named fields of the node's annotation."""
    node.meta[KEY] = replace(of(node), **fields)
    return node.meta[KEY]


def observer_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    """The observer nodes of the graph, in graph order."""
    return [n for n in gm.graph.nodes if of(n).observes is not None]


def release_float_weights(gm: fx.GraphModule) -> None:
    """Forget the float weights the quantized nodes keep for refinements and reports: a caller
    that needs neither (the export of a large model) can then let the float model go."""
    for node in gm.graph.nodes:
        if of(node).float_weight is not None:
            update(node, float_weight=None)


def copy(source: fx.Node, node: fx.Node) -> None:
    """Give `node` the annotation of `source` (a rewrite's replacement of it)."""
    node.meta[KEY] = of(source)


def clear(node: fx.Node) -> None:
    node.meta.pop(KEY, None)
