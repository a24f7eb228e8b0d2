import dataclasses
import operator

import pytest
import torch
from torch import nn

from fxquant import FxQuantError, annotation, config, convert, export_onnx, roles, trace
from fxquant.calibrate import calibrate
from fxquant.lowering.audit import audit, summary
from fxquant.passes.annotate_roles import annotate_roles
from fxquant.passes.insert_observers import insert_observers
from fxquant.passes.smooth_channels import smooth_channels

CFG = config.resolve("repq-vit-mlp", "w4a4")
X = torch.randn(8, 12, 16, generator=torch.Generator().manual_seed(0))


class _Mlp(nn.Module):
    """fc1 -> GELU -> fc2 where three hidden channels reach ranges about 30 times the others' and
    fc2 reads them with weights about 30 times smaller (what BERT's MLPs look like)."""

    def __init__(self, d=16, hidden=64):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)
        with torch.no_grad():
            self.fc1.weight[:3] *= 30
            self.fc2.weight[:, :3] /= 30

    def forward(self, x):
        return self.fc2(nn.functional.gelu(self.fc1(x)))


class _GeluAlsoInAMatMul(_Mlp):
    def forward(self, x):
        h = nn.functional.gelu(self.fc1(x))
        return self.fc2(h) + (h @ h.transpose(-1, -2)) @ x


def _calibrated(model, cfg=CFG):
    gm = annotate_roles(trace(model))
    insert_observers(gm, cfg)
    calibrate(gm, [X])
    return gm


def _gelu_quantizer(gm):
    return next(o for o in annotation.observer_nodes(gm) if annotation.of(o).role == roles.POST_GELU)


def test_smoothing_keeps_the_float_function_and_equalizes_the_channel_ranges():
    model = _Mlp()
    expected = model(X)
    gm = smooth_channels(_calibrated(model), CFG, [X])
    torch.testing.assert_close(gm(X), expected, rtol=1e-4, atol=1e-4)
    quantizer = _gelu_quantizer(gm)
    assert quantizer.args[0].target is operator.mul
    seen = {}
    hook = gm.get_submodule(quantizer.target).register_forward_hook(
        lambda module, args, out: seen.setdefault("x", args[0]))
    gm(X)
    hook.remove()
    ranges = seen["x"].abs().amax((0, 1))
    torch.testing.assert_close(ranges, torch.ones_like(ranges))   # smooth_alpha 1: every channel in [-1, 1]
    assert annotation.of(quantizer).fitted.scale.numel() == 1     # one grid for the tensor


def test_smoothing_lowers_the_4_bit_error_on_outlier_channels():
    model = _Mlp()
    expected = model(X)
    errors = {name: (convert(model, [X], name, "w4a4")(X) - expected).norm() / expected.norm()
              for name in ("repq-vit", "repq-vit-mlp")}
    assert errors["repq-vit-mlp"] < 0.5 * errors["repq-vit"]


def test_a_smoothed_value_read_by_something_else_than_a_linear_is_refused():
    with pytest.raises(FxQuantError,
                       match="post_gelu quantizer observer_gelu is read by matmul .* not only by Linears"):
        smooth_channels(_calibrated(_GeluAlsoInAMatMul()), CFG, [X])


def test_per_channel_smoothing_needs_a_uniform_grid():
    cfg = dataclasses.replace(CFG, roles={**CFG.roles, roles.POST_GELU: config.RoleSpec(
        quantizer="log2", observer="mse", per_channel=True)})
    with pytest.raises(FxQuantError, match="only a uniform grid can be smoothed"):
        smooth_channels(_calibrated(_Mlp(), cfg), cfg, [X])


def test_smooth_alpha_outside_0_1_is_refused_before_work():
    with pytest.raises(FxQuantError, match="smooth_alpha"):
        convert(_Mlp(), [X], dataclasses.replace(CFG, options={"smooth_alpha": 1.5}))


def test_the_export_adds_one_float_mul_and_keeps_fc2_on_an_integer_kernel(tmp_path):
    """export_onnx checks onnxruntime against PyTorch; against repq-vit the file has one more
    float node, the smoothing Mul."""
    float_ops = {name: summary(audit(export_onnx(convert(_Mlp(), [X], name, "w8a8"),
                                                 tmp_path / f"{name}.onnx", X)))
                 for name in ("repq-vit", "repq-vit-mlp")}
    extra = {op: float_ops["repq-vit-mlp"].get(op, 0) - float_ops["repq-vit"].get(op, 0)
             for op in set(float_ops["repq-vit-mlp"]) | set(float_ops["repq-vit"])}
    assert {op: n for op, n in extra.items() if n} == {"Mul": 1}
    assert not any(op.startswith("MatMul") or op == "Gemm" for op in float_ops["repq-vit-mlp"])
