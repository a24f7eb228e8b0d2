"""Passes check what they require and ensure: run out of order, they fail naming the condition."""
import pytest
import torch
from torch import nn

import fxquant
from fxquant import FxQuantError, config, trace
from fxquant.passes.annotate_roles import annotate_roles
from fxquant.passes.insert_observers import insert_observers
from fxquant.passes.integer_layernorm import integer_layernorm
from fxquant.passes.quantize import quantize


class _Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln, self.fc = nn.LayerNorm(8), nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(self.ln(x))


def test_quantize_before_calibration_names_the_missing_step():
    gm = insert_observers(annotate_roles(trace(_Mlp())), config.RECIPES["minmax"])
    with pytest.raises(FxQuantError, match="pass quantize requires calibrated: observers saw no "
                                           "data .*calibrate first"):
        quantize(gm, config.RECIPES["minmax"])


def test_observers_need_annotated_roles():
    with pytest.raises(FxQuantError, match="insert_observers requires roles_annotated"):
        insert_observers(trace(_Mlp()), config.RECIPES["minmax"])


def test_an_integer_pass_needs_a_quantized_graph():
    with pytest.raises(FxQuantError, match="integer_layernorm requires quantized"):
        integer_layernorm(trace(_Mlp()))


def test_the_conditions_hold_along_convert():
    qmodel = fxquant.convert(_Mlp(), [torch.randn(4, 3, 8)], "fq-vit")
    assert integer_layernorm.requires and quantize.ensures
    assert all(c(qmodel) is None for c in quantize.ensures)
