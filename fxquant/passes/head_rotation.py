"""Rotate each attention head's values, V_h -> V_h R, folded into the weights: the value
Linear's rows of head h take Rᵀ W (b <- b R), the output projection's columns of head h take W R.
Attention mixes tokens, never channels, so the model computes the same function while the V
operand of A·V and the projection's input are rotated (QuaRot's per-head Hadamard on W_v, W_o).

Which rows and columns form a head (a fused qkv Linear, heads split by reshape / permute / unbind)
is read from the graph by one probe run, not from module names or a layout convention.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from fxquant import patterns
from fxquant.data import ModelInputs, batch_inputs
from fxquant.errors import FxQuantError
from fxquant.passes.buffers import own_copy
from fxquant.passes.orthogonal import ones_fixing_rotation


@dataclass(frozen=True)
class _Attention:
    """softmax(...) @ V, V from Linear `values` through layout ops, the product read by Linear
    `projection` through layout ops."""
    product: fx.Node
    values: fx.Node
    projection: fx.Node


def _attentions(gm: fx.GraphModule) -> list[_Attention]:
    found = []
    for node in gm.graph.nodes:
        if not patterns.is_matmul(gm, node) or not patterns.is_softmax(
                gm, patterns.trace_back(node.args[0]).source):
            continue
        values = patterns.trace_back(node.args[1]).source
        reader = node
        while reader is node or patterns.is_layout(reader):
            users = [u for u in reader.users if not patterns.reads_only_metadata(u)]
            if len(users) != 1:
                break
            reader = users[0]
        if patterns.is_linear(gm, values) and patterns.is_linear(gm, reader):
            found.append(_Attention(node, values, reader))
    return found


class _ChannelProbe(fx.Interpreter):
    """Runs the graph with the value Linears' outputs replaced by their channel index (1-based)
    and each attention product by its (head, channel) code, recording what reaches V and the
    output projections: the layouts the value rotation must follow."""

    def __init__(self, gm: fx.GraphModule, attentions: list[_Attention]):
        super().__init__(gm)
        self.index = {a.values for a in attentions}
        self.code = {a.product for a in attentions}
        self.watch = {a.product.args[1] for a in attentions} | {a.projection.args[0] for a in attentions}
        self.seen = {}

    def run_node(self, n):
        out = super().run_node(n)
        if n in self.index:
            out = torch.arange(1, out.shape[-1] + 1, dtype=out.dtype, device=out.device).expand_as(out)
        elif n in self.code:
            code = torch.arange(1, out[..., :1, :].numel() // out.shape[0] + 1, dtype=out.dtype,
                                device=out.device)
            out = code.reshape(1, *out.shape[1:-2], 1, out.shape[-1]).expand_as(out)
        if n in self.watch:
            self.seen[n] = out.detach()
        return out


def _per_head(table: torch.Tensor, what: str) -> torch.Tensor:
    """(heads, head_dim) of integer labels, each used once, from a probe value the same for
    every token (axis -2) and batch row."""
    heads = table[0, ..., :1, :].reshape(-1, table.shape[-1])
    if not torch.equal(table, heads.reshape(1, *table.shape[1:-2], 1, table.shape[-1]).expand_as(table)) \
            or heads.unique().numel() != heads.numel():
        raise FxQuantError(f"rotate: {what} does not map each head's channels to fixed channels: "
                           "set rotate_values=False")
    return heads.long() - 1


@torch.no_grad()
def rotate_values(gm: fx.GraphModule, sample: ModelInputs, seed: int) -> int:
    """V_h -> V_h R for every head h (R orthogonal, head_dim x head_dim): the value Linear's rows
    of head h take Rᵀ W, the output projection's columns of head h take W R. Attention mixes
    tokens, never channels, so softmax(...) V_h R Rᵀ W_o,hᵀ is unchanged."""
    attentions = _attentions(gm)
    if not attentions:
        return 0
    probe = _ChannelProbe(gm, attentions)
    args, kwargs = batch_inputs(sample)
    probe.run(*inspect.signature(gm.forward).bind(*args, **kwargs).args)
    for a in attentions:
        rows = _per_head(probe.seen[a.product.args[1]], f"the value path of {a.product.name}")
        codes = probe.seen[a.projection.args[0]][0, 0].long() - 1   # input column -> head code
        if codes.numel() != rows.numel() or codes.unique().numel() != codes.numel():
            raise FxQuantError(f"rotate: {a.projection.name} does not read each channel of "
                               f"{a.product.name} once: set rotate_values=False")
        columns = torch.argsort(codes).reshape(rows.shape)                 # head code -> column
        r, _ = ones_fixing_rotation(rows.shape[1], seed + 2)
        values, projection = own_copy(gm, a.values, "Linear"), own_copy(gm, a.projection, "Linear")
        r = r.to(values.weight.device)
        weight, out_weight = values.weight.double(), projection.weight.double()
        for head_rows, head_columns in zip(rows, columns):
            weight[head_rows] = r.T @ weight[head_rows]
            out_weight[:, head_columns] = out_weight[:, head_columns] @ r
            if values.bias is not None:
                values.bias[head_rows] = (values.bias[head_rows].double() @ r).to(values.bias.dtype)
        values.weight = nn.Parameter(weight.to(values.weight.dtype))
        projection.weight = nn.Parameter(out_weight.to(projection.weight.dtype))
    return len(attentions)
