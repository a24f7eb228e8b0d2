from collections import Counter
from dataclasses import replace

import torch
from torch import nn

import fxquant
from fxquant.config import FULLY_QUANTIZED, RECIPES
from fxquant.passes.rewrite import REPORTS_KEY

INT_LN = torch.ops.fxquant.int_layer_norm.default


class _Stream(nn.Module):
    """Residual stream -> LN -> Linear; the last LN reaches the head through a getitem;
    `side` adds a float reader of an LN output, which keeps that LN float."""

    def __init__(self, d=16, side=False):
        super().__init__()
        self.embed, self.ln1, self.fc, self.ln2, self.head = (
            nn.Linear(4, d), nn.LayerNorm(d), nn.Linear(d, d), nn.LayerNorm(d), nn.Linear(d, 3))
        self.side = side

    def forward(self, x):
        x = self.embed(x)
        h = self.ln1(x)
        x = x + self.fc(h) + (h if self.side else 0)
        return self.head(self.ln2(x)[:, 0])


def _ops(gm):
    return Counter(n.target for n in gm.graph.nodes if n.op in ("call_function", "call_module"))


def _convert(model, seed=0):
    """fq-vit with full-range 8-bit weights (target vnni), so the error measured is the integer
    LayerNorm's, not the portable target's 7-bit weights (tests/lowering/test_saturation.py)."""
    g = torch.Generator().manual_seed(seed)
    calib = [torch.randn(8, 5, 4, generator=g) * 3 for _ in range(2)]
    return (fxquant.convert(model, calib, "fq-vit", target="vnni"),
            torch.randn(4, 5, 4, generator=g) * 3)


def test_every_layernorm_becomes_integer_and_stays_close_to_float():
    model = _Stream().eval()
    qmodel, x = _convert(model)
    ops = _ops(qmodel)
    assert ops[INT_LN] == 2 and "ln1" not in ops and "ln2" not in ops
    assert ops[torch.ops.fxquant.ptf_quant.default] == 2          # residual stream quantized
    ref, out = model(x), qmodel(x)
    assert (out - ref).norm() / ref.norm() < 0.05


def test_a_layernorm_read_in_float_stays_float_and_the_report_says_why():
    qmodel, _ = _convert(_Stream(side=True).eval())
    ops = _ops(qmodel)
    assert ops[INT_LN] == 1 and "ln1" in ops
    report = qmodel.meta[REPORTS_KEY]["integer_layernorm"]
    assert report.rewritten == ["ln2"]
    assert report.rejected == {"ln1": "its output is not read by one uniform quantizer (per tensor, "
                                      "or per last-axis channel without layout ops in between)"}


def test_any_recipe_fully_quantized_gets_integer_layernorm_from_a_per_tensor_input():
    model = _Stream().eval()
    g = torch.Generator().manual_seed(0)
    calib = [torch.randn(8, 5, 4, generator=g) * 3 for _ in range(2)]
    qmodel = fxquant.convert(model, calib, replace(RECIPES["minmax"], options={FULLY_QUANTIZED: True}))
    ops = _ops(qmodel)
    assert ops[INT_LN] == 2 and ops[torch.ops.fxquant.ptf_quant.default] == 0
    x = torch.randn(4, 5, 4, generator=g) * 3
    assert (qmodel(x) - model(x)).norm() / model(x).norm() < 0.05
