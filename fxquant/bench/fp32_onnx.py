"""The float model as ONNX: the baseline every speed and peer comparison starts from."""
from __future__ import annotations

from pathlib import Path

import torch

from fxquant.data import output_tensors
from fxquant.lowering.export import OPSET, dynamic_batch, example_inputs

TORCHSCRIPT_OPSET = 17  # what torch.onnx's TorchScript exporter and the tools built on it default to


def export_float_onnx(model: torch.nn.Module, path: str | Path, example_input,
                      opset: int = OPSET) -> Path:
    """FP32 ONNX with a dynamic batch axis (the same exporter settings as fxquant's own export)."""
    args, kwargs = example_inputs(example_input)
    program = torch.onnx.export(model.eval(), args, kwargs=kwargs or None, dynamo=True,
                                opset_version=opset, dynamic_shapes=dynamic_batch(args, kwargs),
                                verbose=False)
    program.save(str(path))
    return Path(path)


class _Positional(torch.nn.Module):
    """`model` called with its named inputs given in order, returning its output tensors: the
    TorchScript exporter takes positional tensors and flat outputs."""

    def __init__(self, model: torch.nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors):
        return tuple(output_tensors(self.model(**dict(zip(self.names, tensors)))))


def export_torchscript_onnx(model: torch.nn.Module, path: str | Path, example_input) -> Path:
    """FP32 ONNX from torch.onnx's TorchScript exporter at opset 17, batch axis free: the export
    NNCF's and onnxruntime's own ONNX tutorials start from. Named inputs (a dict example) keep
    their names."""
    args, kwargs = example_inputs(example_input)
    if kwargs:
        model, names, args = _Positional(model, list(kwargs)), list(kwargs), tuple(kwargs.values())
    else:
        names = [f"input_{i}" for i in range(len(args))]
    with torch.no_grad():
        torch.onnx.export(model.eval(), args, str(path), dynamo=False,
                          opset_version=TORCHSCRIPT_OPSET, input_names=names,
                          dynamic_axes={name: {0: "batch"} for name in names})
    return Path(path)
