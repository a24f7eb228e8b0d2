"""log2 and log√2 quantizers for post-Softmax values (RepQ-ViT), root k = 1 or 2, b bits:

    q = round(−k·log2(x/Δ)) clipped to [0, 2^b − 1],   x̂ = Δ·2^(−q/k),   x̂ = 0 where unclipped q ≥ 2^b

Values above Δ saturate to Δ; 0 (and anything below the last rounding boundary) goes to 0.
The numerics are written so that ONNX reproduces them bit for bit:
- the code is m = #{T_i ≤ x} over the 2^b ascending rounding boundaries T_i = Δ·2^(−(2^b − ½ − i)/k)
  (m = 0 is the masked region, q = 2^b − m otherwise); boundaries below the smallest normal float32
  are dropped (their codes join the masked region), so the table only holds normal numbers;
- each level is an exact power-of-two code times a float32 branch scale: levels of one base
  (Δ, or Δ·√2 for odd q of log√2) and 8 consecutive exponents share a uint8 branch, code
  2^(7 − e + e0) in {1, …, 128}, scale base·2^−(e0 + 7). With b ≤ 4 there are at most two
  branches, lowered as uint8 DequantizeLinear pairs (for log√2 the spec's re-encoding
  x̂ = DQ(E, Δ/128) + DQ(O, Δ√2/256)); with more, ONNX gathers the float32 levels (exact too, but
  A·V then has no integer kernel).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from onnxscript import ir
from onnxscript import opset21 as op

from fxquant.config import RoleSpec
from fxquant.errors import FxQuantError
from fxquant.observers import search
from fxquant.observers.observer import Observer
from fxquant.quantizers.base import Quantizer, per_tensor_samples, register
from fxquant.quantizers.custom_op import quant_op
from fxquant.quantizers.uniform import UniformQuantizer

MIN_BITS, MAX_BITS = 3, 8
ROOTS = {"log2": 1, "logsqrt2": 2}
BRANCH_BITS = 8           # codes of one branch are uint8 powers of two
MAX_UINT8_BRANCHES = 2    # beyond this the ONNX lowering gathers float levels instead
_TINY = torch.finfo(torch.float32).tiny


@quant_op("log_quant")
def log_quant(x: torch.Tensor, thresholds: torch.Tensor, codes: torch.Tensor,
              scales: torch.Tensor, root: int) -> torch.Tensor:
    """x -> Σ_branch codes[branch, #{T_i ≤ x}] · scales[branch] (one branch is non-zero per code);
    `root` only tells the ONNX lowering how the thresholds were spaced."""
    m = torch.bucketize(x, thresholds, right=True)
    return levels(codes, scales)[m]


def levels(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Float32 level of each code m: the sum is exact, all branches but one hold 0."""
    return (codes.to(scales.dtype) * scales[:, None]).sum(0)


@register("log2")
@dataclass(frozen=True)
class LogQuantizer(Quantizer):
    """A fitted log2 / log√2 quantizer (`root` 1 or 2) with its rounding and level tables; "log2"
    fits root 1, its subclass "logsqrt2" root 2."""
    thresholds: torch.Tensor   # (n,) float32 ascending, normal numbers
    codes: torch.Tensor        # (branches, n + 1) uint8 powers of two (0 where another branch holds it)
    scales: torch.Tensor       # (branches,) float32
    delta: float
    root: int
    bits: int
    op = log_quant
    ROOT: ClassVar[int] = ROOTS["log2"]

    @classmethod
    def fit(cls, observer: Observer, spec: RoleSpec, bits: int) -> LogQuantizer:
        """Δ = the MSE-best of RepQ-ViT's percentiles of all post-Softmax values."""
        samples = per_tensor_samples("a log quantizer", observer, spec)
        deltas = search.positive_highs(samples)
        if not deltas:
            raise FxQuantError(f"the {observer.role} values are not positive: a log quantizer "
                               "needs softmax-like inputs")
        return search.least_error((cls.make(bits, d, cls.ROOT) for d in deltas), samples)

    @classmethod
    def make(cls, bits: int, delta: float, root: int) -> LogQuantizer:
        if not MIN_BITS <= bits <= MAX_BITS:
            raise FxQuantError(f"log quantizers support {MIN_BITS} to {MAX_BITS} bits, not {bits}")
        if root not in ROOTS.values():
            raise FxQuantError(f"log quantizer root must be 1 (log2) or 2 (log√2), not {root}")
        if not delta > 0 or not math.isfinite(delta):
            raise FxQuantError(f"log quantizer needs a positive finite Δ, got {delta}")
        n = 2 ** bits
        i = torch.arange(n, dtype=torch.float64)
        thresholds = (delta * torch.exp2(-(n - 0.5 - i) / root)).float()
        kept = thresholds >= _TINY
        if not kept.any():
            raise FxQuantError(f"Δ = {delta} is too small for float32 log quantization")
        thresholds = thresholds[kept]
        n_kept = thresholds.numel()
        q = n_kept - torch.arange(1, n_kept + 1)              # code of m = 1 … n'
        odd = (q % 2 == 1) & (root == 2)
        exponent = torch.where(odd, (q + 1) // 2, q // root)  # level = base · 2^−exponent
        bases = (delta, delta * math.sqrt(2)) if root == 2 else (delta,)
        rows, scales = [], []
        for base_index, base in enumerate(bases):
            mine = odd if base_index == 1 else ~odd
            if not mine.any():
                continue
            e0 = int(exponent[mine].min())
            group = torch.where(mine, (exponent - e0) // BRANCH_BITS, -1)
            for g in range(int(group.max()) + 1):
                top = e0 + BRANCH_BITS * g + BRANCH_BITS - 1
                row = torch.zeros(n_kept + 1, dtype=torch.uint8)
                row[1:] = torch.where(group == g, torch.exp2(top - exponent.double()), 0).to(torch.uint8)
                rows.append(row)
                scales.append(base * 2.0 ** -top)
        return cls(thresholds, torch.stack(rows), torch.tensor(scales, dtype=torch.float32),
                   float(delta), root, bits)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"thresholds": self.thresholds, "codes": self.codes, "scales": self.scales}

    def constants(self) -> tuple:
        return (self.root,)


@register("logsqrt2")
class LogSqrt2Quantizer(LogQuantizer):
    """log√2: levels Δ·2^(−q/2)."""
    ROOT = ROOTS["logsqrt2"]


@register("logsqrt2_or_uniform")
class LogSqrt2OrUniform(Quantizer):
    """Whichever of log√2 and uniform has the least MSE on the samples: log√2 wins on ViT
    attention at <= 4 bits, uniform at 6-8 bits (benchmarks/attention_quantizers.md)."""

    @classmethod
    def fit(cls, observer: Observer, spec: RoleSpec, bits: int) -> Quantizer:
        return search.least_error((kind.fit(observer, spec, bits)
                                   for kind in (LogSqrt2Quantizer, UniformQuantizer)),
                                  observer.samples())


@log_quant.onnx
def log_quant_onnx(x, thresholds, codes, scales, root: int):
    """m from log2 (one Floor) corrected by one comparison on each side against the exact
    thresholds, then uint8 branches (DequantizeLinear each, summed) or a float level Gather."""
    n = thresholds.shape[0]
    branches = codes.shape[0]
    top = op.Gather(thresholds, op.Constant(value_int=n - 1))
    ratio = op.Div(op.Max(x, op.Constant(value_float=0.0)), top)
    approx = op.Add(op.Floor(op.Mul(op.Log(ratio), op.Constant(value_float=root / math.log(2)))),
                    op.Constant(value_float=float(n)))
    m = op.Cast(op.Clip(approx, op.Constant(value_float=0.0), op.Constant(value_float=float(n))),
                to=ir.DataType.INT64)
    padded = op.Concat(op.Constant(value_floats=[-math.inf]), thresholds,
                       op.Constant(value_floats=[math.inf]), axis=0)
    up = op.Cast(op.GreaterOrEqual(x, op.Gather(padded, op.Add(m, op.Constant(value_int=1)))),
                 to=ir.DataType.INT64)
    down = op.Cast(op.Less(x, op.Gather(padded, m)), to=ir.DataType.INT64)
    m = op.Clip(op.Sub(op.Add(m, up), down), op.Constant(value_int=0), op.Constant(value_int=n))
    if branches > MAX_UINT8_BRANCHES:
        table = op.ReduceSum(op.Mul(op.Cast(codes, to=ir.DataType.FLOAT), op.Unsqueeze(scales, [1])),
                             op.Constant(value_ints=[0]), keepdims=0)
        return op.Gather(table, m)
    out = None
    for b in range(branches):
        index = op.Constant(value_int=b)
        branch = op.DequantizeLinear(op.Gather(op.Gather(codes, index), m), op.Gather(scales, index))
        out = branch if out is None else op.Add(out, branch)
    return out

