"""Run a module's ONNX lowering in onnxruntime next to its PyTorch numerics.

Parity tests of every quantizer op and the whole-model parity report use this one path:
export with fxquant's translations and clean-up, run in onnxruntime, compare.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx_ir as ir
import torch

from fxquant.lowering.export import to_onnx_ir
from fxquant.lowering.runtime import OnnxModule


def onnx_output(module: torch.nn.Module, example: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Export `module` (traced with `example`) and run `inputs` through it in onnxruntime."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "module.onnx"
        ir.save(to_onnx_ir(module.eval(), example), path)
        return OnnxModule(path)(inputs)


def agreement(reference: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    """Top-1 agreement, the largest absolute logit difference, and the reference's median gap
    between its two largest logits (a random-weight model's near-ties flip on tiny differences)."""
    top2 = reference.topk(2, dim=-1).values
    return {"top1_agreement": (reference.argmax(-1) == other.argmax(-1)).float().mean().item(),
            "max_abs_diff": (reference - other).abs().max().item(),
            "median_top2_gap": (top2[..., 0] - top2[..., 1]).median().item()}


def tie_and_edge_values(scale: float, zero_point: int, qmin: int, qmax: int) -> np.ndarray:
    """Adversarial inputs for a uniform grid: exact .5 ties, the clip edges and beyond, zeros."""
    codes = np.arange(qmin, qmax + 1, dtype=np.float32) - zero_point
    ties = (codes[:-1] + 0.5) * scale
    edges = np.array([(qmin - zero_point) * scale, (qmax - zero_point) * scale,
                      (qmin - zero_point - 3) * scale, (qmax - zero_point + 3) * scale, 0.0, -0.0],
                     dtype=np.float32)
    return np.concatenate([ties, codes * scale, edges]).astype(np.float32)
