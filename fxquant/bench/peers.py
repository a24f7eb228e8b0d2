"""The quantizers a user would otherwise reach for, run on the same model and calibration images.

Each peer builds a model that `evaluate.top1` can run from `PeerInputs` (the float model, its FP32
ONNX export, the calibration batches fxquant calibrates on). onnxruntime's static peers quantize
the tensors fxquant quantizes (inputs and weights of Conv / MatMul / Gemm) unless named `-allops`,
which keeps onnxruntime's default of every operator it can quantize, or `-rr`, with `reduce_range`
(7-bit weights: onnxruntime's own guard against int16 saturation on x86 CPUs without VNNI).
NNCF quantizes the TorchScript export (it cannot read the dynamo export: the file it writes does
not load) and, as `nncf-torch`, the PyTorch model itself; torchao's PT2E flow quantizes the model
torch.export captures, for x86 Inductor. The PyTorch peers are scored in PyTorch.
"""
from __future__ import annotations

import contextlib
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

from fxquant.bench.fp32_onnx import export_torchscript_onnx
from fxquant.errors import FxQuantError
from fxquant.lowering.export import dynamic_batch, example_inputs
from fxquant.lowering.runtime import OnnxModule, session

try:  # the `bench` extra
    import nncf
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer, get_default_x86_inductor_quantization_config)
except ImportError as e:
    nncf = None
    _bench_extra_missing = e

try:  # not in an extra: amd-quark 0.13 pins onnx 1.22, fxquant needs 1.23 (pip install --no-deps)
    from quark.onnx import ModelQuantizer, QConfig, QLayerConfig, SmoothQuantConfig
    from quark.onnx.quantization.config.spec import CalibMethod, Int8Spec, QuantGranularity, UInt8Spec
except ImportError:
    ModelQuantizer = None

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
    runtime: str = "onnxruntime"     # where its model runs when scored


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


class _Reader(CalibrationDataReader):
    """The calibration batches as onnxruntime feeds of the FP32 ONNX (onnxruntime's and Quark's
    calibration read these)."""

    def __init__(self, inputs: PeerInputs):
        name = _input_name(inputs.fp32_onnx)
        self.items = iter([_feeds(name, x) for x in inputs.calib])

    def get_next(self):
        return next(self.items, None)


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
        out = inputs.workdir / (f"ort_static_{method}_{bits}_{'mm' if op_types else 'all'}"
                                f"{'_rr' if reduce_range else ''}.onnx")
        quantize_static(str(_preprocessed(inputs)), str(out), _Reader(inputs),
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


def _need_bench_extra(tool: str) -> None:
    if nncf is None:
        raise FxQuantError(f"{tool} needs the bench extra: pip install 'fxquant[bench]' "
                           f"({_bench_extra_missing})")


def _nncf_dataset(inputs: PeerInputs, feed: Callable) -> tuple:
    """NNCF's dataset of single-sample items, and their number (its subset size)."""
    items = [row for x in inputs.calib for row in _rows(x)]
    return nncf.Dataset(items, feed), len(items)


def _nncf(inputs: PeerInputs) -> OnnxModule:
    """NNCF post-training quantization, ONNX backend (TRANSFORMER: SmoothQuant, bias correction),
    on the TorchScript export."""
    _need_bench_extra("NNCF")
    fp32 = inputs.workdir / "fp32_torchscript.onnx"
    if not fp32.exists():
        export_torchscript_onnx(inputs.model, fp32, inputs.calib[0])
    name = _input_name(fp32)
    dataset, size = _nncf_dataset(inputs, lambda x: _feeds(name, x))
    quantized = nncf.quantize(onnx.load(str(fp32)), dataset,
                              model_type=nncf.ModelType.TRANSFORMER, subset_size=size)
    out = inputs.workdir / "nncf.onnx"
    onnx.save(quantized, str(out))
    return OnnxModule(out)


def _call(model: torch.nn.Module, x):
    return model(**x) if isinstance(x, dict) else model(x)


@torch.no_grad()
def _nncf_torch(inputs: PeerInputs) -> torch.nn.Module:
    """NNCF post-training quantization through its PyTorch backend (TRANSFORMER model type)."""
    _need_bench_extra("NNCF")
    model = copy.deepcopy(inputs.model).eval()
    dataset, size = _nncf_dataset(inputs, lambda x: x)
    return nncf.quantize(model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=size)


@torch.no_grad()
def _torchao_pt2e(inputs: PeerInputs) -> torch.nn.Module:
    """torchao PT2E: torch.export, X86InductorQuantizer's default static config (per-channel
    int8 weights, uint8 activations), calibration, convert_pt2e; the reference (q/dq) model."""
    _need_bench_extra("torchao")
    args, kwargs = example_inputs(inputs.calib[0])
    program = torch.export.export(copy.deepcopy(inputs.model).eval(), args, kwargs,
                                  dynamic_shapes=dynamic_batch(args, kwargs))
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(program.module(), quantizer)
    for x in inputs.calib:
        _call(prepared, x)
    return convert_pt2e(prepared)


def _quark(inputs: PeerInputs) -> OnnxModule:
    """AMD Quark's ONNX quantizer: uint8 activations on MinMSE ranges, per-channel int8 weights,
    SmoothQuant, on the FP32 ONNX onnxruntime's peers start from."""
    if ModelQuantizer is None:
        raise FxQuantError("AMD Quark is not installed: pip install --no-deps amd-quark==0.13 "
                           "(its onnx 1.22 pin conflicts with fxquant's onnx 1.23)")
    layer = QLayerConfig(activation=UInt8Spec(calibration_method=CalibMethod.MinMSE),
                         weight=Int8Spec(calibration_method=CalibMethod.MinMax,
                                         quant_granularity=QuantGranularity.Channel))
    config = QConfig(global_config=layer, algo_config=[SmoothQuantConfig(alpha=0.5)],
                     OpTypesToQuantize=FXQUANT_OPS)
    out = inputs.workdir / "quark.onnx"
    with contextlib.chdir(inputs.workdir):  # Quark writes its quantized_info.csv where it runs
        ModelQuantizer(config).quantize_model(str(_preprocessed(inputs)), str(out), _Reader(inputs))
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
    Peer("nncf-torch", "w8a8", _nncf_torch, "PyTorch"),
    Peer("torchao-pt2e-x86", "w8a8", _torchao_pt2e, "PyTorch"),
    Peer("quark-minmse-sq", "w8a8", _quark),
    Peer("torch-ao-fx-x86", "w8a8", _torch_ao_fx, "PyTorch"),
)
