import functools

import pytest
import timm
import torch.fx as fx
from torch import nn

from fxquant import FxQuantError, roles, trace
from fxquant.passes.annotate_roles import annotate_roles, role_table


class _Block(nn.Module):
    """LN -> (q, k, v as separate Linears) -> softmax(q k^T) v -> proj; LN -> fc1 -> GELU -> fc2."""

    def __init__(self, d=8):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.fc1, self.act, self.fc2 = nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d)

    def forward(self, x):
        h = self.ln1(x)
        attn = (self.q(h) @ self.k(h).transpose(-2, -1)).softmax(-1)
        x = x + self.o(attn @ self.v(h))
        return x + self.fc2(self.act(self.fc1(self.ln2(x).reshape(x.shape))))


def test_roles_on_a_toy_block():
    gm = annotate_roles(trace(_Block()))
    table = dict(role_table(gm))
    assert table["ln1"] == roles.POST_LAYERNORM          # one tensor for q, k and v
    assert table["reshape"] == roles.POST_LAYERNORM      # through a layout op
    assert table["softmax"] == roles.POST_SOFTMAX
    assert table["act"] == roles.POST_GELU
    assert table["q"] == roles.MATMUL_INPUT and table["transpose"] == roles.MATMUL_INPUT
    assert table["v"] == roles.MATMUL_INPUT
    assert table["matmul_1"] == roles.LINEAR_INPUT
    assert sum(r == roles.WEIGHT for r in table.values()) == 6


def _renamed(gm: fx.GraphModule) -> fx.GraphModule:
    """The same graph with every submodule under a meaningless name."""
    root = nn.Module()
    mapping = {}
    for i, node in enumerate(n for n in gm.graph.nodes if n.op == "call_module"):
        mapping[node.target] = f"m{i}"
        root.add_module(f"m{i}", gm.get_submodule(node.target))
    graph = fx.Graph()
    env = {}
    for i, node in enumerate(gm.graph.nodes):
        target = node.target
        if node.op == "call_module":
            target = mapping[node.target]
        if node.op == "get_attr":
            target = f"a{i}"
            setattr(root, target, functools.reduce(getattr, node.target.split("."), gm))
        args, kwargs = fx.map_arg((node.args, node.kwargs), lambda n: env[n])
        env[node] = graph.create_node(node.op, target, args, kwargs, name=f"n{i}")
    return fx.GraphModule(root, graph)


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "swin_tiny_patch4_window7_224"])
def test_roles_do_not_depend_on_module_names(name):
    gm = trace(timm.create_model(name, pretrained=False))
    expected = [role for _, role in role_table(annotate_roles(gm))]
    renamed = _renamed(gm)
    assert "norm1" not in str(renamed.code) and "qkv" not in str(renamed.code)
    assert [role for _, role in role_table(annotate_roles(renamed))] == expected


def test_model_input_fed_to_a_layer_has_its_own_role():
    table = dict(role_table(annotate_roles(trace(nn.Sequential(nn.Linear(4, 4))))))
    assert table == {"input_1": roles.MODEL_INPUT, "_0.weight": roles.WEIGHT}


def test_model_without_linear_is_refused():
    with pytest.raises(FxQuantError, match="no Linear"):
        annotate_roles(trace(nn.Sequential(nn.LayerNorm(4), nn.GELU())))


def test_fully_quantized_marks_the_inputs_of_layernorm_softmax_and_gelu():
    table = dict(role_table(annotate_roles(trace(_Block()), fully_quantized=True)))
    assert table["x"] == roles.PRE_LAYERNORM and table["add"] == roles.PRE_LAYERNORM
    assert table["matmul"] == roles.PRE_SOFTMAX and table["fc1"] == roles.PRE_GELU
    assert table["softmax"] == roles.POST_SOFTMAX                  # the other roles are unchanged
    default = dict(role_table(annotate_roles(trace(_Block()))))
    assert not set(default.values()) & set(roles.FULLY_QUANTIZED_ROLES)
