"""Quantize a timm ViT to 8-bit integer ONNX and check onnxruntime agrees with fxquant.

Random weights here (no download); with real weights use `timm.create_model(name, pretrained=True)`
and a few hundred real images as calibration batches.
"""
import tempfile
from pathlib import Path

import timm
import torch

import fxquant
from fxquant.lowering.parity import agreement
from fxquant.lowering.runtime import OnnxModule


def main() -> None:
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4,
                              depth=2, num_classes=10).eval()
    calibration = [torch.randn(8, 3, 32, 32) for _ in range(4)]   # any iterable of batches
    qmodel = fxquant.convert(model, calibration, "repq-vit", bits="w8a8")
    with tempfile.TemporaryDirectory() as tmp:
        path = fxquant.export_onnx(qmodel, Path(tmp) / "vit_w8a8.onnx", calibration[0])
        x = torch.randn(16, 3, 32, 32)
        stats = agreement(qmodel(x).detach(), OnnxModule(path)(x))
    print(f"repq-vit w8a8: onnxruntime picks fxquant's class on {stats['top1_agreement']:.0%} of "
          f"{len(x)} images")


if __name__ == "__main__":
    main()
