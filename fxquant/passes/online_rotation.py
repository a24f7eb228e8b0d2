"""x -> x R in front of nodes whose value no weight can absorb R, with R folded into the Linears
that read them (W -> W R): QuaRot's online Hadamard, a constant float MatMul in the ONNX.

The Linears compute what they computed before, since (x R)(W R)ᵀ = x Wᵀ for an orthogonal R; the
value in between (a quantizer's input) has its outlier channels spread over all channels.
"""
from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

from fxquant import annotation
from fxquant.passes.buffers import buffer_node


@torch.no_grad()
def rotate_inputs(gm: fx.GraphModule, readers: list[fx.Node], linears: list[nn.Linear],
                  r: torch.Tensor, name: str) -> None:
    """Each node of `readers` reads x R in place of its first input x (an observer's annotation
    follows); each Linear of `linears` (the caller's own copies, at least one) takes W R, computed
    in float64. R is stored once, as buffer `name`: callers that share one R share the name."""
    for linear in linears:
        weight = linear.weight.double() @ r.to(linear.weight.device, torch.float64)
        linear.weight = nn.Parameter(weight.to(linear.weight.dtype))
    r = r.to(linears[0].weight)
    graph = gm.graph
    for reader in readers:
        value = reader.args[0]
        with graph.inserting_before(reader):
            matrix = graph.get_attr(name) if hasattr(gm, name) else buffer_node(gm, name, r)
            rotated = graph.call_function(torch.matmul, (value, matrix))
        reader.replace_input_with(value, rotated)
        if annotation.of(reader).observes is not None:
            annotation.update(reader, observes=rotated)
