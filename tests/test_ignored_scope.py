"""Parts kept in float on request (by module name, pattern, type, role), honoured by the export,
and parts fxquant cannot quantize reported by name."""
from collections import Counter

import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxquant
from fxquant import FxQuantError, IgnoredScope, annotation, roles
from fxquant.cli import main
from fxquant.lowering.audit import INTEGER_KERNELS
from fxquant.lowering.runtime import session
from fxquant.passes.keep_float import NO_QUANTIZED_FORM

N_LINEARS = 25             # the reference ViT: 4 per block x 6 blocks + head
N_ATTENTION_MATMULS = 12   # q k^T and attn v per block


def _quantized_linears(qmodel) -> set[str]:
    return {p for n in qmodel.graph.nodes if annotation.of(n).weighted
            for p, _ in fxquant.patterns.scope(n)[-1:]}


def _quantized_roles(qmodel) -> Counter:
    return Counter(annotation.of(n).role for n in qmodel.graph.nodes if annotation.of(n).role)


@pytest.fixture(scope="module")
def baseline(ref, calib_loader):
    return fxquant.convert(ref.model, calib_loader, "minmax")


def test_by_name_keeps_that_module_and_everything_inside_float(ref, calib_loader, baseline, tmp_path):
    qmodel = fxquant.convert(ref.model, calib_loader, "minmax",
                             ignored_scope=IgnoredScope(names=["blocks.5", "head"]))
    ignored = {"blocks.5.attn.qkv", "blocks.5.attn.proj", "blocks.5.mlp.fc1", "blocks.5.mlp.fc2", "head"}
    assert _quantized_linears(qmodel) == _quantized_linears(baseline) - ignored
    assert {p.name for p in qmodel.float_parts} == ignored | {"blocks.5.attn"}  # and its two matmuls
    path = fxquant.export_onnx(qmodel, tmp_path / "q.onnx", torch.randn(1, 3, 32, 32))
    session(path, optimized_path=tmp_path / "optimized.onnx")
    ops = Counter(n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node)
    integer = sum(ops[k] for k in INTEGER_KERNELS)
    assert integer == N_LINEARS + N_ATTENTION_MATMULS - len(ignored) - 2  # exactly those stay float


def test_by_pattern_matches_whole_paths(ref, calib_loader, baseline):
    qmodel = fxquant.convert(ref.model, calib_loader, "minmax",
                             ignored_scope=IgnoredScope(patterns=[r"blocks\.[0-2]\.mlp\.fc2"]))
    assert _quantized_linears(baseline) - _quantized_linears(qmodel) == {
        f"blocks.{i}.mlp.fc2" for i in range(3)}


def test_by_type_keeps_that_class_and_what_is_inside_it(ref, calib_loader, baseline):
    qmodel = fxquant.convert(ref.model, calib_loader, "minmax", ignored_scope=IgnoredScope(types=["Mlp"]))
    assert _quantized_linears(baseline) - _quantized_linears(qmodel) == {
        f"blocks.{i}.mlp.fc{j}" for i in range(6) for j in (1, 2)}
    matmuls = fxquant.convert(ref.model, calib_loader, "minmax", ignored_scope=IgnoredScope(types=["matmul"]))
    assert _quantized_linears(matmuls) == _quantized_linears(baseline)
    assert _quantized_roles(matmuls)[roles.POST_SOFTMAX] == 0
    assert [p.kind for p in matmuls.float_parts] == ["matmul"] * 12


def test_by_role_leaves_every_tensor_of_that_role_float(ref, calib_loader, baseline):
    qmodel = fxquant.convert(ref.model, calib_loader, "minmax",
                             ignored_scope=IgnoredScope(roles=[roles.POST_SOFTMAX]))
    before, after = _quantized_roles(baseline), _quantized_roles(qmodel)
    assert before[roles.POST_SOFTMAX] > 0 and after[roles.POST_SOFTMAX] == 0
    assert after == before - Counter({roles.POST_SOFTMAX: before[roles.POST_SOFTMAX]})
    assert [p.kind for p in qmodel.float_parts] == ["post_softmax tensor"] * 6
    assert _quantized_linears(qmodel) == _quantized_linears(baseline)


@pytest.mark.parametrize("scope,message", [
    (dict(names=["block.5"]), "name 'block.5' matches nothing"),
    (dict(types=["Conv1d"]), "type 'Conv1d' matches nothing"),
    (dict(types=["Linear", "Conv2d"]), "leaves no Linear or Conv2d"),
])
def test_a_scope_that_matches_nothing_fails_before_calibration(ref, scope, message, monkeypatch):
    def calibrate(*args):
        raise AssertionError("calibration started")
    monkeypatch.setattr(fxquant.api, "calibrate", calibrate)
    with pytest.raises(FxQuantError, match=message):
        fxquant.convert(ref.model, [torch.randn(2, 3, 32, 32)], "minmax", ignored_scope=IgnoredScope(**scope))


@pytest.mark.parametrize("scope,message", [
    (dict(roles=["softmax"]), "role 'softmax' is not a role"),
    (dict(patterns=["blocks.("]), "is not a regular expression"),
    (dict(names="blocks.0"), "must be a list of strings"),
])
def test_a_malformed_scope_is_refused_in_one_line(scope, message):
    with pytest.raises(FxQuantError, match=message):
        IgnoredScope(**scope)


def test_the_command_line_keeps_parts_float_and_reports_them(tmp_path, capsys):
    assert main(["quantize", "--calib", "8", "--eval", "0", "--no-onnx", "--json",
                 "--ignore-names", "head", "--ignore-roles", "post_gelu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "kept float: head (Linear): ignored_scope name 'head'" in lines
    assert main(["quantize", "--calib", "8", "--eval", "0", "--no-onnx", "--ignore-types", "Attn"]) == 2
    assert "type 'Attn' matches nothing" in capsys.readouterr().err


class _Unquantizable(nn.Module):
    """An einsum with a weight and a Conv1d: products fxquant has no quantized form for."""

    def __init__(self):
        super().__init__()
        self.mix = nn.Parameter(torch.randn(8, 8))
        self.conv = nn.Conv1d(4, 4, 1)
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(self.conv(torch.einsum("bld,de->ble", x, self.mix)))


def test_parts_without_a_quantized_form_are_reported_and_warned_about():
    with pytest.warns(UserWarning, match="2 part"):
        qmodel = fxquant.convert(_Unquantizable().eval(), [torch.randn(2, 4, 8)], "minmax")
    assert [(p.kind, p.reason) for p in qmodel.float_parts] == [
        ("einsum", NO_QUANTIZED_FORM), ("Conv1d", NO_QUANTIZED_FORM)]


@torch.fx.wrap
def _linear_of(x, weight, bias):
    return F.linear(x, weight, bias) * 2


class _FunctionalLinear(nn.Module):
    """A Linear's weight handed to a wrapped function (torchvision's Swin attention does this)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        return _linear_of(x, self.proj.weight, self.proj.bias)


def test_a_weight_handed_to_a_function_is_traced_into_and_quantized():
    model = _FunctionalLinear().eval()
    qmodel = fxquant.convert(model, [torch.randn(2, 8)], "minmax")
    assert qmodel.float_parts == () and sum(annotation.of(n).weighted for n in qmodel.graph.nodes) == 1
