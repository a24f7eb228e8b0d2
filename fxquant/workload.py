"""Model + calibration data + test data, as the command line names them (shared by every command)."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from torch.utils.data import DataLoader

from fxquant import zoo
from fxquant.data import image_data
from fxquant.errors import FxQuantError


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
    add_data_arguments(p)


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """The options besides --model: what a sweep over several models shares."""
    p.add_argument("--random-weights", action="store_true",
                   help="allow a timm model with random weights (structure and speed only)")
    p.add_argument("--calib", type=int, default=256, help="number of calibration images")
    p.add_argument("--eval", type=int, default=None,
                   help="number of test images (default: all in the test file; 0 skips evaluation)")
    p.add_argument("--calib-data", default=str(zoo.BUNDLED_CALIB),
                   help="npz with x (N,H,W,3) uint8 and y (N,), or a folder of images: one sub-folder "
                        "per class, or flat (default: 256 bundled CIFAR-10 train images)")
    p.add_argument("--test-data", default=str(zoo.BUNDLED_TEST),
                   help="npz like --calib-data, or a folder with one sub-folder per class (labels from "
                        "the sorted names) (default: 1,000 bundled CIFAR-10 test images)")
    p.add_argument("--batch-size", type=int, default=64)


def check_counts(args: argparse.Namespace) -> None:
    """Refuse counts no run can use, before a model or an image is loaded."""
    if args.batch_size < 1:
        raise FxQuantError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.calib < 1:
        raise FxQuantError(f"--calib must be at least 1, got {args.calib}")
    if args.eval is not None and args.eval < 0:
        raise FxQuantError(f"--eval must be 0 (no evaluation) or more, got {args.eval}")


def from_args(args: argparse.Namespace) -> Workload:
    check_counts(args)
    loaded = zoo.load_model(args.model, args.random_weights)
    data = (loaded.mean, loaded.std, loaded.input_size, args.batch_size)
    calib, _ = image_data(args.calib_data, *data, limit=args.calib)
    test = None
    if args.eval != 0 and args.random_weights:
        print("fxquant: note: a model with random weights has no meaningful top-1 against the "
              "test labels: evaluation skipped (structure and speed only)", file=sys.stderr)
    elif args.eval != 0:
        test, labeled = image_data(args.test_data, *data, limit=args.eval)
        if not labeled:
            print(f"fxquant: note: {args.test_data} has no class sub-folders, so no labels: "
                  "evaluation skipped", file=sys.stderr)
            test = None
    return Workload(loaded, calib, test, len(calib.dataset), 0 if test is None else len(test.dataset))
