"""The quantizers a user would otherwise reach for, run on the same model and calibration images.

Each peer builds a model that `evaluate.top1` can run from `PeerInputs` (the float model, its FP32
ONNX export, the calibration batches fxquant calibrates on). onnxruntime's static peers quantize
the tensors fxquant quantizes (inputs and weights of Conv / MatMul / Gemm) unless named `-allops`,
which keeps onnxruntime's default of every operator it can quantize, or `-rr`, with `reduce_range`
(7-bit weights: onnxruntime's own guard against int16 saturation on x86 CPUs without VNNI).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_dynamic, quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

from fxquant.errors import FxQuantError
from fxquant.lowering.runtime import OnnxModule, session

try:  # the `bench` extra
    import nncf
except ImportError:
    nncf = None

FXQUANT_OPS = ["Conv", "MatMul", "Gemm"]


@dataclass
class PeerInputs:
    model: torch.nn.Module          # the float model
    fp32_onnx: Path                 # its ONNX export (bench.fp32_onnx)
    calib: list                     # calibration batches fxquant calibrates on: images or dicts
    workdir: Path                   # where a peer may write its files


@dataclass(frozen=True)
class Peer:
    name: str
    bits: str
    build: Callable[[PeerInputs], Callable]


def _input_name(path: Path) -> str:
    return session(path).get_inputs()[0].name


def _feeds(name: str, x) -> dict[str, np.ndarray]:
    """An onnxruntime feed from a batch: one tensor (the image input) or a dict of named inputs."""
    items = x.items() if isinstance(x, dict) else [(name, x)]
    return {k: np.ascontiguousarray(v.numpy()) for k, v in items}


def _rows(x) -> list:
    """A batch as single-item batches (NNCF counts items)."""
    if isinstance(x, dict):
        return [{k: v[i:i + 1] for k, v in x.items()} for i in range(len(next(iter(x.values()))))]
    return [x[i:i + 1] for i in range(len(x))]


def _preprocessed(inputs: PeerInputs) -> Path:
    """onnxruntime's recommended pre-processing (shape inference, graph optimization), once."""
    out = inputs.workdir / "fp32_preprocessed.onnx"
    if not out.exists():
        quant_pre_process(str(inputs.fp32_onnx), str(out))
    return out


def _ort_static(method: str, bits: str, op_types: list[str] | None,
                reduce_range: bool = False) -> Callable:
    def build(inputs: PeerInputs) -> OnnxModule:
        act, weight = {"w8a8": (QuantType.QUInt8, QuantType.QInt8),
                       "w4a8": (QuantType.QUInt8, QuantType.QInt4),
                       "w4a4": (QuantType.QUInt4, QuantType.QInt4)}[bits]
        name = _input_name(inputs.fp32_onnx)

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.items = iter([_feeds(name, x) for x in inputs.calib])

            def get_next(self):
                return next(self.items, None)

        out = inputs.workdir / (f"ort_static_{method}_{bits}_{'mm' if op_types else 'all'}"
                                f"{'_rr' if reduce_range else ''}.onnx")
        quantize_static(str(_preprocessed(inputs)), str(out), Reader(),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=act,
                        weight_type=weight, op_types_to_quantize=op_types,
                        calibrate_method=getattr(CalibrationMethod, method),
                        reduce_range=reduce_range)
        return OnnxModule(out)
    return build


def _ort_dynamic(inputs: PeerInputs) -> OnnxModule:
    out = inputs.workdir / "ort_dynamic.onnx"
    quantize_dynamic(str(_preprocessed(inputs)), str(out), per_channel=True,
                     weight_type=QuantType.QInt8)
    return OnnxModule(out)


def _nncf(inputs: PeerInputs) -> OnnxModule:
    """NNCF post-training quantization, ONNX backend (TRANSFORMER: SmoothQuant, bias correction)."""
    if nncf is None:
        raise FxQuantError("NNCF is not installed: pip install 'fxquant[bench]'")
    name = _input_name(inputs.fp32_onnx)
    items = [row for x in inputs.calib for row in _rows(x)]
    dataset = nncf.Dataset(items, lambda x: _feeds(name, x))
    quantized = nncf.quantize(onnx.load(str(inputs.fp32_onnx)), dataset,
                              model_type=nncf.ModelType.TRANSFORMER, subset_size=len(items))
    out = inputs.workdir / "nncf.onnx"
    onnx.save(quantized, str(out))
    return OnnxModule(out)


@torch.no_grad()
def _torch_ao_fx(inputs: PeerInputs) -> torch.nn.Module:
    """torch.ao FX graph mode: x86 default qconfig (per-channel int8 weights, uint8 activations)."""
    torch.backends.quantized.engine = "x86"
    prepared = prepare_fx(copy.deepcopy(inputs.model).eval(), get_default_qconfig_mapping("x86"),
                          (inputs.calib[0][:1],))
    for x in inputs.calib:
        prepared(x)
    return convert_fx(prepared)


PEERS: tuple[Peer, ...] = (
    *(Peer(f"ort-static-{m.lower()}", bits, _ort_static(m, bits, FXQUANT_OPS))
      for m in ("MinMax", "Entropy", "Percentile") for bits in ("w8a8", "w4a8", "w4a4")),
    *(Peer("ort-static-minmax-allops", bits, _ort_static("MinMax", bits, None))
      for bits in ("w8a8", "w4a4")),
    Peer("ort-static-minmax-rr", "w8a8",
         _ort_static("MinMax", "w8a8", FXQUANT_OPS, reduce_range=True)),
    Peer("ort-dynamic", "w8a8", _ort_dynamic),
    Peer("nncf", "w8a8", _nncf),
    Peer("torch-ao-fx-x86", "w8a8", _torch_ao_fx),
)
