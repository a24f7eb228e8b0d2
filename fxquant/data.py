"""Calibration and evaluation data: loaders over npz image arrays or folders of images, and batch
unpacking.

The npz layout is the one of `../shared/data/cifar10`: `x` uint8 (N, H, W, 3) RGB, `y` int64 (N,).
A folder is an ImageFolder layout (one sub-folder per class) or a flat folder of images (no labels).
Images are resized to the model's input size and normalized with the model's mean/std.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension, make_dataset, pil_loader

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
    n = taken(len(x), limit, path)
    return x[:n], y[:n]


def taken(held: int, limit: int | None, path: Path) -> int:
    """How many of the `held` images at `path` to use: all, or `limit` when there are that many."""
    if limit is None:
        return held
    if limit > held:
        raise FxQuantError(f"{path} holds {held} images, {limit} were asked for")
    return limit


def folder_images(folder: Path) -> tuple[list[str], list[int] | None]:
    """(files, labels) of an ImageFolder layout, classes numbered in sorted name order as
    torchvision's ImageFolder numbers them; (files, None) for a flat folder, whose labels are unknown."""
    flat = sorted(str(p) for p in folder.iterdir()
                  if p.is_file() and has_file_allowed_extension(p.name, IMG_EXTENSIONS))
    if flat:
        return flat, None
    classes = {c: i for i, c in enumerate(sorted(p.name for p in folder.iterdir() if p.is_dir()))}
    samples = make_dataset(folder, classes, IMG_EXTENSIONS, allow_empty=True) if classes else []
    if not samples:
        raise FxQuantError(f"folder {folder} holds no images ({' '.join(IMG_EXTENSIONS)}), neither "
                           "directly nor in class sub-folders")
    files, labels = zip(*samples)
    return list(files), list(labels)


def to_model_input(images: np.ndarray, mean: Sequence[float], std: Sequence[float],
                   size: int | None = None) -> torch.Tensor:
    """uint8 NHWC -> normalized float NCHW, resized (bicubic) to `size` if given."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    if size is not None and x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def image_loader(images: np.ndarray, labels: np.ndarray, mean, std, size: int | None = None,
                 batch_size: int = 64) -> DataLoader:
    """(image, label) batches, in order (calibration stays deterministic)."""
    x = to_model_input(images, mean, std, size)
    return DataLoader(TensorDataset(x, torch.from_numpy(labels)), batch_size=batch_size)


@dataclass
class ImageFiles(Dataset):
    """Image files decoded when read (a folder need not fit in memory), each preprocessed as the npz
    images are; items are (image, label), or (image,) when the labels are unknown."""
    files: list[str]
    labels: list[int] | None
    mean: Sequence[float]
    std: Sequence[float]
    size: int | None = None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple:
        try:
            pixels = np.array(pil_loader(self.files[i]))  # RGB uint8 HWC, as in the npz
        except OSError as e:
            raise FxQuantError(f"cannot read image {self.files[i]}: {e}") from e
        x = to_model_input(pixels[None], self.mean, self.std, self.size)[0]
        return (x,) if self.labels is None else (x, self.labels[i])


def image_data(path: str | Path, mean, std, size: int | None = None, batch_size: int = 64,
               limit: int | None = None) -> tuple[DataLoader, bool]:
    """Batches of the first `limit` images of an npz, an ImageFolder layout or a flat folder, and
    whether they carry labels (a flat folder's do not)."""
    path = Path(path)
    if not path.is_dir():
        x, y = load_npz(path, limit)
        return image_loader(x, y, mean, std, size, batch_size), True
    files, labels = folder_images(path)
    n = taken(len(files), limit, path)
    dataset = ImageFiles(files[:n], None if labels is None else labels[:n], mean, std, size)
    return DataLoader(dataset, batch_size=batch_size), labels is not None


@dataclass(frozen=True)
class ModelInputs:
    """One batch as the model's positional and keyword inputs: what `transform_fn` makes of a
    loader item (NNCF's meaning), or the default reading of one (`batch_inputs`)."""
    args: tuple
    kwargs: Mapping[str, Any]

    def map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> ModelInputs:
        """The same inputs with `fn` applied to each tensor among them."""
        def apply(value):
            return fn(value) if isinstance(value, torch.Tensor) else value
        return ModelInputs(tuple(map(apply, self.args)), {k: apply(v) for k, v in self.kwargs.items()})

    def tensors(self) -> list[torch.Tensor]:
        return input_tensors(tuple(self.args), dict(self.kwargs))


TransformFn = Callable[[Any], Any]


def as_model_inputs(value: Any, what: str) -> ModelInputs:
    """Inputs given as the model takes them: a tensor, a tuple of positional inputs or a dict of
    keyword inputs (`what` names the value in the error)."""
    if isinstance(value, ModelInputs):
        return value
    if isinstance(value, torch.Tensor):
        return ModelInputs((value,), {})
    if isinstance(value, (tuple, list)):
        return ModelInputs(tuple(value), {})
    if isinstance(value, Mapping):
        return ModelInputs((), dict(value))
    raise FxQuantError(f"{what} must be a tensor, a tuple of positional inputs or a dict of keyword "
                       f"inputs, not {type(value).__name__}")


def model_inputs(item: Any, transform_fn: TransformFn | None = None) -> ModelInputs:
    """A loader item as model inputs: what `transform_fn(item)` returns or, without one, the
    loader conventions of batch_inputs."""
    if transform_fn is None:
        return ModelInputs(*batch_inputs(item))
    return as_model_inputs(transform_fn(item), "transform_fn's result")


def read_batches(loader: Iterable, transform_fn: TransformFn | None = None,
                 what: str = "calibration") -> list[ModelInputs]:
    """Every item of `loader` as model inputs, read exactly once: any iterable works, one-shot
    generators included, and the passes that read the calibration set again see the same batches."""
    batches = [model_inputs(item, transform_fn) for item in loader]
    if not batches:
        raise FxQuantError(f"the {what} loader is empty: give it at least one batch")
    return batches


def first_sample(batch: Any) -> ModelInputs:
    """The first sample of a batch (every tensor input cut to its first row), as model inputs."""
    return ModelInputs(*batch_inputs(batch)).map_tensors(lambda t: t[:1])


def batch_inputs(batch: Any) -> tuple[tuple, dict]:
    """A loader item as (args, kwargs) for the model: ModelInputs, a tensor, (tensor, label...) or
    a dict."""
    if isinstance(batch, ModelInputs):
        return tuple(batch.args), dict(batch.kwargs)
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


def output_tensors(output) -> list[torch.Tensor]:
    """A model's outputs in the order the exporter flattens them (a tensor, tuples, dicts)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in output_tensors(item)]
    return []
