"""Uniform affine quantization: q = clamp(round(x / s) + z, qmin, qmax), x^ = (q - z) * s.

`UniformQuantizer` ("uniform") fits it from calibration statistics; two custom ops carry it
through the graph and into ONNX:
- `fxquant::fake_quant(x, scale, zero_point, qmin, qmax, axis)` for activations
  -> QuantizeLinear / DequantizeLinear (a Clip first when the range is narrower than the type);
- `fxquant::dequantize(codes, scale, zero_point, axis)` for weights stored as integer codes
  -> DequantizeLinear on an integer initializer.
`axis` is the channel axis of per-channel parameters (ignored when scale has one element).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from onnxscript import ir
from onnxscript import opset21 as op

from fxquant.config import RoleSpec
from fxquant.errors import FxQuantError
from fxquant.observers import search
from fxquant.observers.observer import Observer
from fxquant.quantizers.base import Quantizer, register
from fxquant.quantizers.custom_op import quant_op

MIN_SCALE = 1e-8
PERCENTILE = 0.9999   # the `percentile` observer's clipping range
OBSERVER_METHODS = ("minmax", "percentile", "mse")   # what RoleSpec.observer may name


def qrange(bits: int, signed: bool, narrow: bool = False) -> tuple[int, int]:
    """Integer range of a `bits`-bit code; `narrow` drops the most negative signed code."""
    if not 2 <= bits <= 8:
        raise FxQuantError(f"bit-width {bits} is not supported: use 2 to 8 bits")
    if signed:
        return -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


def broadcast_shape(param: torch.Tensor, ndim: int, axis: int) -> torch.Tensor:
    """Reshape a per-channel vector so it broadcasts along `axis` of an ndim tensor."""
    if param.numel() == 1:
        return param.reshape(())
    shape = [1] * ndim
    shape[axis] = -1
    return param.reshape(shape)


def quantize_codes(x, scale, zero_point, qmin: int, qmax: int, axis: int = -1) -> torch.Tensor:
    """Integer codes (int32) of `x` on the grid (scale, zero_point)."""
    s = broadcast_shape(scale, x.ndim, axis)
    z = broadcast_shape(zero_point, x.ndim, axis)
    return torch.clamp(torch.round(x / s) + z, qmin, qmax).to(torch.int32)


def fake_quantize(x, scale, zero_point, qmin: int, qmax: int, axis: int = -1) -> torch.Tensor:
    """Differentiable-free reference numerics shared by the op and the calibration search."""
    s = broadcast_shape(scale, x.ndim, axis)
    z = broadcast_shape(zero_point, x.ndim, axis).to(x.dtype)
    return (torch.clamp(torch.round(x / s) + z, qmin, qmax) - z) * s


@quant_op("fake_quant")
def fake_quant(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
               qmin: int, qmax: int, axis: int) -> torch.Tensor:
    return fake_quantize(x, scale, zero_point, qmin, qmax, axis)


def _dequantized_like_scale(codes, scale, zero_point, axis):
    return torch.empty(codes.shape, dtype=scale.dtype, device=codes.device)


@quant_op("dequantize", fake=_dequantized_like_scale)
def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
               axis: int) -> torch.Tensor:
    s = broadcast_shape(scale, codes.ndim, axis)
    z = broadcast_shape(zero_point, codes.ndim, axis)
    return (codes.to(torch.int32) - z).to(scale.dtype) * s


@register("uniform")
@dataclass(frozen=True)
class UniformQuantizer(Quantizer):
    """A fitted uniform quantizer (per channel along `axis` when scale is a vector)."""
    scale: torch.Tensor
    zero_point: torch.Tensor
    qmin: int
    qmax: int
    axis: int = -1
    op = fake_quant

    @classmethod
    def fit(cls, observer: Observer, spec: RoleSpec, bits: int) -> UniformQuantizer:
        return cls.from_samples(spec.observer, observer.samples(), observer.min, observer.max, bits,
                                spec.symmetric)

    @classmethod
    def from_range(cls, lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool,
                   axis: int = -1, narrow: bool = False) -> UniformQuantizer:
        """Grid covering [lo, hi] (per channel when lo/hi are vectors) to within half a step.

        An asymmetric range is first widened to contain 0, as runtimes expect of a zero point: a
        range away from 0 (e.g. [100, 101]) would otherwise clamp the zero point and the grid miss
        the range.
        """
        lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
        if symmetric:
            qmin, qmax = qrange(bits, signed=True, narrow=narrow)
            scale = (torch.maximum(lo.abs(), hi.abs()) / qmax).clamp_min(MIN_SCALE)
            zero_point = torch.zeros_like(scale, dtype=torch.int32)
        else:
            qmin, qmax = qrange(bits, signed=False)
            lo, hi = lo.clamp_max(0), hi.clamp_min(0)
            scale = ((hi - lo) / (qmax - qmin)).clamp_min(MIN_SCALE)
            zero_point = (qmin - torch.round(lo / scale)).to(torch.int32)
        return cls(scale.float(), zero_point, qmin, qmax, axis)

    @classmethod
    def from_samples(cls, method: str, samples: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                     bits: int, symmetric: bool, axis: int = -1) -> UniformQuantizer:
        """The range a recipe's observer method names: `minmax` (lo, hi), `percentile` (the 99.99 %
        range) or `mse` (RepQ-ViT's search: the percentile range of least MSE, per channel)."""
        if method == "minmax":
            return cls.from_range(lo, hi, bits, symmetric, axis)
        if method == "percentile":
            (low, high), = search.percentile_ranges(samples, (PERCENTILE,))
            return cls.from_range(low, high, bits, symmetric, axis)
        if method == "mse":
            candidates = [cls.from_range(low, high, bits, symmetric)
                          for low, high in search.percentile_ranges(samples)]
            index = search.least_error_per_channel(candidates, samples).unsqueeze(0)
            scale, zero_point = (torch.take_along_dim(torch.stack(values), index, 0).squeeze(0)
                                 for values in zip(*(c.tensors().values() for c in candidates)))
            return cls(scale, zero_point, candidates[0].qmin, candidates[0].qmax, axis)
        raise FxQuantError(f"unknown observer method {method!r}: use one of {', '.join(OBSERVER_METHODS)}")

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"scale": self.scale, "zero_point": self.zero_point}

    def constants(self) -> tuple:
        return (self.qmin, self.qmax, self.axis)


@fake_quant.onnx
def fake_quant_onnx(x, scale, zero_point, qmin: int, qmax: int, axis: int):
    """QuantizeLinear -> DequantizeLinear on 8-bit codes (the type onnxruntime's integer kernels
    take), clipped first when [qmin, qmax] is narrower than the 8-bit range."""
    dtype = ir.DataType.INT8 if qmin < 0 else ir.DataType.UINT8
    zp = op.Cast(zero_point, to=dtype)
    if (qmin, qmax) not in ((-128, 127), (0, 255)):
        zf = op.Cast(zero_point, to=ir.DataType.FLOAT)
        lo = op.Mul(op.Sub(op.Constant(value_float=float(qmin)), zf), scale)
        hi = op.Mul(op.Sub(op.Constant(value_float=float(qmax)), zf), scale)
        x = op.Min(op.Max(x, lo), hi)
    return op.DequantizeLinear(op.QuantizeLinear(x, scale, zp, axis=axis), scale, zp, axis=axis)


@dequantize.onnx
def dequantize_onnx(codes, scale, zero_point, axis: int):
    """DequantizeLinear on the int8 codes (the lowering stores <= 4-bit codes as int4)."""
    return op.DequantizeLinear(codes, scale, op.Cast(zero_point, to=codes.dtype), axis=axis)

