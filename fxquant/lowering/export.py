"""QuantizedModel -> integer ONNX file that onnxruntime loads, written all-or-nothing."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import onnx
import onnx_ir as ir
import onnxruntime as ort
import torch

from fxquant.calibrate import run_batch
from fxquant.errors import FxQuantError
from fxquant.lowering.ort_rules import optimize_for_onnxruntime
from fxquant.quantizers import ONNX_TRANSLATIONS

OPSET = 21  # int4 initializers and block-wise DequantizeLinear


def example_inputs(example) -> tuple[tuple, dict]:
    if isinstance(example, torch.Tensor):
        return (example,), {}
    if isinstance(example, dict):
        return (), dict(example)
    if isinstance(example, (tuple, list)):
        return tuple(example), {}
    raise FxQuantError(f"example_input must be a tensor, a tuple or a dict, not {type(example).__name__}")


def dynamic_batch(args: tuple, kwargs: dict):
    batch = torch.export.Dim("batch")
    return ({**{k: {0: batch} for k in kwargs}} if kwargs
            else tuple({0: batch} for _ in args))


def _check_destination(path: Path) -> None:
    if not path.parent.is_dir():
        raise FxQuantError(f"cannot write {path}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise FxQuantError(f"cannot write {path}: directory {path.parent} is not writable")


def _unwrap_fxquant_error(error: BaseException) -> FxQuantError | None:
    while error is not None:
        if isinstance(error, FxQuantError):
            return error
        error = error.__cause__ or error.__context__
    return None


def to_onnx_ir(qmodel: torch.nn.Module, example_input) -> ir.Model:
    """Export through torch.onnx (dynamo) with fxquant's translations, then ORT clean-up."""
    args, kwargs = example_inputs(example_input)
    try:
        program = torch.onnx.export(
            qmodel, args, kwargs=kwargs or None, dynamo=True, opset_version=OPSET,
            custom_translation_table=ONNX_TRANSLATIONS,
            dynamic_shapes=dynamic_batch(args, kwargs), verbose=False)
    except Exception as e:
        cause = _unwrap_fxquant_error(e)
        if cause is not None:
            raise FxQuantError(f"cannot lower to ONNX: {cause}") from e
        raise
    model = optimize_for_onnxruntime(program.model)
    for node in model.graph.all_nodes():
        node.metadata_props.clear()  # exporter debug info (stack traces): a fifth of a 4-bit file
    return model


def export_onnx(qmodel, path: str | Path, example_input) -> Path:
    """Write `qmodel` as integer ONNX at `path`; on any failure nothing is left there."""
    from fxquant.api import QuantizedModel
    if not isinstance(qmodel, QuantizedModel):
        raise FxQuantError(f"export_onnx needs a calibrated QuantizedModel from fxquant.convert, "
                           f"got {type(qmodel).__name__}")
    path = Path(path)
    _check_destination(path)
    run_batch(qmodel, example_input if not isinstance(example_input, tuple) else list(example_input),
              0, what="export example")
    model = to_onnx_ir(qmodel, example_input)
    fd, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=path.parent)
    os.close(fd)
    try:
        ir.save(model, tmp)
        onnx.checker.check_model(tmp, full_check=True)
        ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
    return path
