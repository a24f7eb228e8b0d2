"""fxquant calibrates and quantizes in float32: the scales, the quantizer ops' reference numerics
and onnxruntime's QuantizeLinear / DequantizeLinear kernels are float32. A float16, bfloat16 or
float64 model is therefore converted as a float32 copy, fed float32 calibration batches; its
QuantizedModel and ONNX file take float32 inputs. The user's model is left as it is.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable

import torch
from torch import nn

from fxquant.data import ModelInputs


def floating_dtypes(model: nn.Module) -> set[torch.dtype]:
    """The dtypes of the model's floating-point parameters and buffers."""
    return {t.dtype for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()}


def as_float32(model: nn.Module, calib_loader: Iterable) -> tuple[nn.Module, Iterable]:
    """(model, calib_loader) unchanged for a float32 model; else a float32 copy of the model and
    the loader with its floating tensors cast to float32 (so the result takes float32 inputs)."""
    if floating_dtypes(model) <= {torch.float32}:
        return model, calib_loader
    return copy.deepcopy(model).float(), Float32Batches(calib_loader)


def to_float32(batch: Any) -> Any:
    """A loader item (tensor, tuple / list, dict, ModelInputs) with its floating tensors cast to
    float32."""
    if isinstance(batch, ModelInputs):
        return ModelInputs(to_float32(tuple(batch.args)), to_float32(dict(batch.kwargs)))
    if isinstance(batch, torch.Tensor):
        return batch.float() if batch.is_floating_point() else batch
    if isinstance(batch, (tuple, list)):
        return (list if isinstance(batch, list) else tuple)(to_float32(b) for b in batch)
    if isinstance(batch, dict):
        return {k: to_float32(v) for k, v in batch.items()}
    return batch


class Float32Batches:
    """A loader's items cast by `to_float32`, as often as it is iterated (passes re-read it)."""

    def __init__(self, loader: Iterable):
        self.loader = loader

    def __iter__(self):
        return (to_float32(batch) for batch in self.loader)

    def __len__(self) -> int:
        return len(self.loader)  # TypeError for loaders without a length, as tqdm expects
