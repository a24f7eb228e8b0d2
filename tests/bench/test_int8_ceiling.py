from collections import Counter

import torch

from fxquant.bench.fp32_onnx import export_float_onnx
from fxquant.bench.int8_ceiling import gemm_shapes, time_shapes


class Tokens(torch.nn.Module):
    """A Linear on tokens (MatMul), a product of activations (no weight), a Linear head (Gemm)."""

    def __init__(self):
        super().__init__()
        self.tokens = torch.nn.Linear(16, 12)
        self.head = torch.nn.Linear(12, 5)

    def forward(self, x):
        t = self.tokens(x)
        return self.head((t @ t.transpose(1, 2) @ t).mean(1))


def test_gemm_shapes_counts_the_gemms_with_a_constant_weight(tmp_path):
    path = export_float_onnx(Tokens().eval(), tmp_path / "tokens.onnx", torch.randn(1, 4, 16))
    assert gemm_shapes(path, 3) == Counter({(3 * 4, 16, 12): 1, (3, 12, 5): 1})


def test_time_shapes_times_every_shape_and_kind():
    result = time_shapes(Counter({(8, 16, 4): 2, (1, 8, 8): 1}), threads=1, repeats=2, warmup=1)
    assert [(r["m"], r["k"], r["n"], r["count"]) for r in result["shapes"]] == \
        [(8, 16, 4, 2), (1, 8, 8, 1)]
    for kind in ("fp32", "u8s8", "u8u8"):
        assert all(r[f"{kind}_ms"] > 0 for r in result["shapes"])
        assert result[f"{kind}_ms"] == sum(r["count"] * r[f"{kind}_ms"] for r in result["shapes"])
    assert result["u8s8_speedup"] == result["fp32_ms"] / result["u8s8_ms"] > 0
    assert result["u8u8_speedup"] == result["fp32_ms"] / result["u8u8_ms"] > 0
