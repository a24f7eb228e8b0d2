"""Calibration and evaluation data: loaders over npz image arrays, and batch unpacking.

The npz layout is the one of `../shared/data/cifar10`: `x` uint8 (N, H, W, 3) RGB, `y` int64 (N,).
Images are resized to the model's input size and normalized with the model's mean/std.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from fxquant.errors import FxQuantError


def load_npz(path: str | Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 NHWC, labels) from an npz with arrays `x` and `y`."""
    path = Path(path)
    if not path.is_file():
        raise FxQuantError(f"data file {path} does not exist")
    try:
        with np.load(path) as data:
            x, y = data["x"], data["y"]
    except Exception as e:
        raise FxQuantError(f"cannot read {path} as an npz with arrays 'x' and 'y': {e}") from e
    if x.ndim != 4 or x.shape[-1] != 3 or len(x) != len(y):
        raise FxQuantError(f"{path}: expected x of shape (N, H, W, 3) and y of shape (N,), "
                           f"got {x.shape} and {y.shape}")
    if limit is not None:
        if limit > len(x):
            raise FxQuantError(f"{path} holds {len(x)} images, {limit} were asked for")
        x, y = x[:limit], y[:limit]
    return x, y


def to_model_input(images: np.ndarray, mean: Sequence[float], std: Sequence[float],
                   size: int | None = None) -> torch.Tensor:
    """uint8 NHWC -> normalized float NCHW, resized (bicubic) to `size` if given."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    if size is not None and x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def image_loader(images: np.ndarray, labels: np.ndarray, mean, std, size: int | None = None,
                 batch_size: int = 64) -> DataLoader:
    """(image, label) batches, in order (calibration stays deterministic)."""
    x = to_model_input(images, mean, std, size)
    return DataLoader(TensorDataset(x, torch.from_numpy(labels)), batch_size=batch_size)


def batch_inputs(batch: Any) -> tuple[tuple, dict]:
    """A loader item as (args, kwargs) for the model: tensor, (tensor, label...) or dict."""
    if isinstance(batch, torch.Tensor):
        return (batch,), {}
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return (batch[0],), {}
    if isinstance(batch, dict):
        return (), dict(batch)
    raise FxQuantError(f"cannot read a batch of type {type(batch).__name__}: loaders must yield "
                       "tensors, (tensor, label) tuples or dicts of tensors")


def input_tensors(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    return [t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)]
