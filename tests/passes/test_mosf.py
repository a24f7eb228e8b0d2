"""MOSF (DopQ-ViT): the LayerNorm fold with the median of the channel scales as target."""
from dataclasses import replace

import torch
from torch import nn

from fxquant import config, trace
from fxquant.calibrate import calibrate
from fxquant.passes.annotate_roles import annotate_roles
from fxquant.passes.insert_observers import insert_observers
from fxquant.passes.reparameterize_layernorm import fold_factors, reparameterize_layernorm
from fxquant.quantizers.uniform import UniformQuantizer


def test_worked_example_of_the_spec():
    scale = torch.tensor([0.10, 0.12, 0.11, 0.09, 2.0])
    params = UniformQuantizer(scale, torch.tensor([8, 7, 8, 9, 3], dtype=torch.int32), 0, 15)
    r, t, per_tensor = fold_factors(params, "median")
    assert per_tensor.scale.item() == torch.tensor(0.11).item() and per_tensor.zero_point.item() == 8
    torch.testing.assert_close(r, torch.tensor([0.9091, 1.0909, 1.0, 0.8182, 18.1818]), atol=1e-4, rtol=0)
    r_mean, _, _ = fold_factors(params, "mean")
    torch.testing.assert_close(r / r_mean, torch.full((5,), r[0] / r_mean[0]))  # only a global factor


def test_median_fold_keeps_the_float_function():
    torch.manual_seed(0)
    model = nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 8))
    with torch.no_grad():
        model[0].weight.copy_(torch.logspace(-1, 1, 16))
    x = torch.randn(4, 5, 16)
    cfg = replace(config.resolve("repq-vit", "w4a4"), options={"fold_target": "median"})
    gm = annotate_roles(trace(model))
    insert_observers(gm, cfg)
    calibrate(gm, [x])
    expected = gm(x)
    torch.testing.assert_close(reparameterize_layernorm(gm, cfg, [x])(x), expected, atol=1e-5, rtol=1e-5)
