"""The rewrite-rule driver on a toy graph: accepted matches are rewritten, rejected ones are left
and reported with their reason, nodes that do not match the pattern are not mentioned."""
import operator

import torch
import torch.fx as fx
from torch import nn

from fxquant.passes.rewrite import REPORTS_KEY, RewriteRule, apply


class _Toy(nn.Module):
    def forward(self, x):
        return torch.relu(torch.relu(x) * 2) + torch.tanh(x)


def _relu_of_placeholder(gm, node):
    return "its input is a graph input" if node.args[0].op == "placeholder" else None


def _to_sigmoid(gm, node):
    node.target = torch.sigmoid


RELU_TO_SIGMOID = RewriteRule("relu_to_sigmoid",
                              lambda gm, n: n if n.target is torch.relu else None,
                              _relu_of_placeholder, _to_sigmoid)


def test_accepted_matches_are_rewritten_and_rejected_ones_reported():
    gm = fx.symbolic_trace(_Toy())
    x = torch.randn(5)
    report = apply(gm, RELU_TO_SIGMOID)
    assert report.rewritten == ["relu_1"]
    assert report.rejected == {"relu": "its input is a graph input"}   # must not match: kept
    assert [n.target for n in gm.graph.nodes if n.op == "call_function"] == [
        torch.relu, operator.mul, torch.sigmoid, torch.tanh, operator.add]
    torch.testing.assert_close(gm(x), torch.sigmoid(torch.relu(x) * 2) + torch.tanh(x))
    assert gm.meta[REPORTS_KEY]["relu_to_sigmoid"] is report
