from collections import Counter
from dataclasses import replace

import onnx
import onnx_ir as ir
import torch
from torch import nn

import fxquant
from fxquant import RoleSpec, config, roles
from fxquant.lowering.export import to_onnx_ir
from fxquant.lowering.runtime import OnnxModule, session
from fxquant.passes.rewrite import REPORTS_KEY
from fxquant.passes.split_two_scale import split_two_scale


class _Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 32), nn.Linear(32, 8)

    def forward(self, x):
        return self.fc2(nn.functional.gelu(self.fc1(x)))


def test_linear_after_v2sf_reads_two_uint8_parts_and_runs_on_integer_kernels(tmp_path):
    cfg = replace(config.RECIPES["minmax"], name="v2sf-mlp",
                  roles={**config.RECIPES["minmax"].roles,
                         roles.POST_GELU: RoleSpec(quantizer="two_scale")})
    g = torch.Generator().manual_seed(0)
    qmodel = fxquant.convert(_Mlp(), [torch.randn(32, 10, 8, generator=g) * 3], cfg)
    x = torch.randn(4, 10, 8, generator=g) * 3
    before = qmodel(x)
    split_two_scale(qmodel)
    targets = Counter(n.target for n in qmodel.graph.nodes if n.op == "call_function")
    assert targets[torch.ops.fxquant.two_scale_region.default] == 2
    assert targets[nn.functional.linear] == 3                      # fc1, fc2 on each part
    assert qmodel.meta[REPORTS_KEY]["split_two_scale"].rewritten == ["two_scale_quant_default"]
    torch.testing.assert_close(qmodel(x), before, rtol=0, atol=1e-5)

    path, optimized = tmp_path / "mlp.onnx", tmp_path / "optimized.onnx"
    ir.save(to_onnx_ir(qmodel, x[:1]), path)
    session(path, optimized_path=optimized)
    ops = Counter(n.op_type for n in onnx.load(optimized).graph.node)
    assert ops["MatMulIntegerToFloat"] == 3 and ops["MatMulNBits"] == ops["MatMul"] == 0, ops
    torch.testing.assert_close(OnnxModule(path)(x), before, rtol=0, atol=1e-4)
