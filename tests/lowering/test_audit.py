import onnx
import pytest
import torch
from onnx import helper
from torch import nn

import fxquant
from fxquant import FxQuantError
from fxquant.lowering import audit
from fxquant.lowering.audit import summary


class _Block(nn.Module):
    def __init__(self, d=16):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.o = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.act, self.fc2 = nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d)

    def forward(self, x):
        q, k, v = self.qkv(self.ln1(x)).chunk(3, -1)
        x = x + self.o((q @ k.transpose(-2, -1)).softmax(-1) @ v)
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


@pytest.fixture(scope="module")
def audits(tmp_path_factory):
    model = _Block().eval()
    calib = [torch.randn(4, 10, 16, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    found = {}
    for recipe in ("minmax", "fq-vit"):
        path = tmp_path_factory.mktemp("audit") / f"{recipe}.onnx"
        fxquant.export_onnx(fxquant.convert(model, calib, recipe), path, calib[0][:1])
        found[recipe] = summary(audit(path))
    return found


def test_plain_qdq_leaves_layernorm_softmax_and_gelu_in_float(audits):
    ops = audits["minmax"]
    assert ops["LayerNormalization"] == 2 and ops["Softmax"] == 1
    assert sum(n for op, n in ops.items() if "Gelu" in op) == 1   # Gelu or onnxruntime's BiasGelu


def test_fully_quantized_model_has_no_float_layernorm_or_softmax(audits):
    ops = audits["fq-vit"]
    assert "LayerNormalization" not in ops and "Softmax" not in ops and "Exp" not in ops
    assert ops["Sqrt"] == 2                  # the integer LayerNorm's per-token float rescale
    assert ops["Gelu"] == 1                  # GELU stays float (FQ-ViT too)


def test_a_float_model_is_audited_from_its_inputs(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), tmp_path / "relu.onnx")
    assert summary(audit(tmp_path / "relu.onnx", optimized=False)) == {"Relu": 1}


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(FxQuantError, match="no such file"):
        audit(tmp_path / "missing.onnx")
