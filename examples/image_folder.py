"""Calibrate and evaluate from folders of images, as most users hold them: a flat folder for
calibration (no labels needed) and an ImageFolder layout (one sub-folder per class, classes in
sorted order) for evaluation. The same as on the command line:

    fxquant quantize --calib-data calib/ --test-data test/ --recipe repq-vit --bits w8a8

Here the folders are written from the bundled CIFAR-10 images, for the bundled model.
"""
import tempfile
from pathlib import Path

from PIL import Image

from fxquant import cli, zoo
from fxquant.data import load_npz


def write_pngs(folder: Path, npz: Path, n: int, by_class: bool) -> Path:
    images, labels = load_npz(npz, n)
    for i, (image, label) in enumerate(zip(images, labels)):
        where = folder / f"{label:02d}" if by_class else folder
        where.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(where / f"{i:04d}.png")
    return folder


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        calib = write_pngs(Path(tmp) / "calib", zoo.BUNDLED_CALIB, 32, by_class=False)
        test = write_pngs(Path(tmp) / "test", zoo.BUNDLED_TEST, 64, by_class=True)
        cli.main(["quantize", "--calib-data", str(calib), "--calib", "32", "--test-data", str(test),
                  "--recipe", "repq-vit", "--bits", "w8a8", "--no-onnx"])


if __name__ == "__main__":
    main()
