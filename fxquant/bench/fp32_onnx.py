"""The float model as ONNX: the baseline every speed and peer comparison starts from."""
from __future__ import annotations

from pathlib import Path

import torch

from fxquant.lowering.export import OPSET, dynamic_batch, example_inputs


def export_float_onnx(model: torch.nn.Module, path: str | Path, example_input,
                      opset: int = OPSET) -> Path:
    """FP32 ONNX with a dynamic batch axis (the same exporter settings as fxquant's own export)."""
    args, kwargs = example_inputs(example_input)
    program = torch.onnx.export(model.eval(), args, kwargs=kwargs or None, dynamo=True,
                                opset_version=opset, dynamic_shapes=dynamic_batch(args, kwargs),
                                verbose=False)
    program.save(str(path))
    return Path(path)
