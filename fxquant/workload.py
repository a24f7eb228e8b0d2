"""Model + calibration data + test data, as the command line names them (shared by every command)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from torch.utils.data import DataLoader

from fxquant import zoo
from fxquant.data import image_loader, load_npz


@dataclass
class Workload:
    loaded: zoo.LoadedModel
    calib: DataLoader
    test: DataLoader | None
    calib_images: int
    eval_images: int


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=zoo.REFERENCE_NAME,
                   help="ref-vit (bundled), a timm model name, or a checkpoint .pth")
    p.add_argument("--random-weights", action="store_true",
                   help="allow a timm model with random weights (structure and speed only)")
    p.add_argument("--calib", type=int, default=256, help="number of calibration images")
    p.add_argument("--eval", type=int, default=None,
                   help="number of test images (default: all in the test file; 0 skips evaluation)")
    p.add_argument("--calib-data", default=str(zoo.BUNDLED_CALIB),
                   help="npz with x (N,H,W,3) uint8 and y (N,) (default: 256 bundled CIFAR-10 train images)")
    p.add_argument("--test-data", default=str(zoo.BUNDLED_TEST),
                   help="npz like --calib-data (default: 1,000 bundled CIFAR-10 test images)")
    p.add_argument("--batch-size", type=int, default=64)


def from_args(args: argparse.Namespace) -> Workload:
    loaded = zoo.load_model(args.model, args.random_weights)
    cx, cy = load_npz(args.calib_data, args.calib)
    calib = image_loader(cx, cy, loaded.mean, loaded.std, loaded.input_size, args.batch_size)
    test = None
    n_eval = 0
    if args.eval != 0:
        tx, ty = load_npz(args.test_data, args.eval)
        test = image_loader(tx, ty, loaded.mean, loaded.std, loaded.input_size, args.batch_size)
        n_eval = len(ty)
    return Workload(loaded, calib, test, len(cy), n_eval)
