"""The bundled reference model (a real CIFAR-10 ViT) and the loading path for user checkpoints.

A checkpoint is a dict with `arch` and `kwargs` (for `timm.create_model`), `mean`, `std` and
`state_dict`; `train.py` beside this file reproduces the bundled one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch

from fxquant.errors import FxQuantError

HERE = Path(__file__).parent
REFERENCE_NAME = "ref-vit"
REFERENCE_CHECKPOINT = HERE / "vit_tiny6_p4_cifar10.pth"
BUNDLED_CALIB = HERE / "cifar10_calib256.npz"
BUNDLED_TEST = HERE / "cifar10_test1000.npz"


@dataclass
class LoadedModel:
    model: torch.nn.Module
    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: int


def load_checkpoint(path: str | Path) -> LoadedModel:
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise FxQuantError(f"cannot read checkpoint {path}: {e}") from e
    missing = {"arch", "kwargs", "state_dict"} - set(ckpt if isinstance(ckpt, dict) else ())
    if missing:
        raise FxQuantError(f"checkpoint {path} lacks {sorted(missing)}: fxquant expects a dict with "
                           "arch, kwargs (for timm.create_model), mean, std and state_dict")
    try:
        model = timm.create_model(ckpt["arch"], pretrained=False, **ckpt["kwargs"])
    except (RuntimeError, TypeError) as e:
        raise FxQuantError(f"checkpoint {path}: timm cannot build {ckpt['arch']!r} with kwargs "
                           f"{ckpt['kwargs']}: {e}") from e
    mismatch = state_dict_mismatch(model.state_dict(), ckpt["state_dict"])
    if mismatch:
        raise FxQuantError(f"checkpoint {path} does not fit {ckpt['arch']} {ckpt['kwargs']}: {mismatch}")
    model.load_state_dict(ckpt["state_dict"])
    cfg = model.pretrained_cfg
    return LoadedModel(model.eval(), path.stem, tuple(ckpt.get("mean", cfg["mean"])),
                       tuple(ckpt.get("std", cfg["std"])), input_size(model))


def state_dict_mismatch(expected: dict, given: dict) -> str | None:
    """The first key, in the model's order, where a checkpoint's state_dict does not fit the model's
    (torch's own error lists every key over many lines)."""
    for key, value in expected.items():
        if key not in given:
            return f"{key} is missing"
        if tuple(given[key].shape) != tuple(value.shape):
            return f"{key} has shape {tuple(given[key].shape)}, the model's is {tuple(value.shape)}"
    extra = [key for key in given if key not in expected]
    return f"{extra[0]} is not in the model" if extra else None


def input_size(model: torch.nn.Module) -> int:
    """The image side `model` takes: a ViT's patch embedding knows it (checkpoint kwargs may set
    it), other timm models (a ResNet) name it in their pretrained_cfg."""
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    return img_size[0] if img_size else model.pretrained_cfg["input_size"][-1]


def load_timm(name: str, random_weights: bool) -> LoadedModel:
    """A timm architecture; weights cannot be downloaded here, so random ones only on request."""
    if name not in timm.list_models():
        raise FxQuantError(f"unknown model {name!r}: give ref-vit, a timm model name or a .pth "
                           "checkpoint path")
    if not random_weights:
        raise FxQuantError(f"weights for {name} cannot be downloaded here: pass a checkpoint with "
                           "--model PATH.pth (a dict with arch, kwargs, mean, std, state_dict) or "
                           "add --random-weights to measure structure and speed only")
    model = timm.create_model(name, pretrained=False).eval()
    cfg = model.pretrained_cfg
    return LoadedModel(model, name, tuple(cfg["mean"]), tuple(cfg["std"]), input_size(model))


def load_model(spec: str = REFERENCE_NAME, random_weights: bool = False) -> LoadedModel:
    """`ref-vit`, a path to a .pth checkpoint, or a timm model name."""
    if spec == REFERENCE_NAME:
        loaded = load_checkpoint(REFERENCE_CHECKPOINT)
        loaded.name = REFERENCE_NAME
        return loaded
    if spec.endswith((".pth", ".pt")) or Path(spec).exists():
        if not Path(spec).is_file():
            raise FxQuantError(f"checkpoint {spec} does not exist")
        return load_checkpoint(spec)
    return load_timm(spec, random_weights)


def write_bundle(shared_data: str | Path, n_test: int = 1000, n_calib: int = 256) -> None:
    """Make the bundled image files from `../shared/data/cifar10` (how they were made)."""
    shared_data = Path(shared_data)
    with np.load(shared_data / "test.npz") as test:   # already shuffled: a prefix is fair
        np.savez_compressed(BUNDLED_TEST, x=test["x"][:n_test], y=test["y"][:n_test])
    with np.load(shared_data / "train5k.npz") as train:
        idx = np.random.default_rng(0).permutation(len(train["y"]))[:n_calib]
        np.savez_compressed(BUNDLED_CALIB, x=train["x"][idx], y=train["y"][idx])
