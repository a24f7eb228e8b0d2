"""Golden outputs of every recipe on the bundled model: the quantized PyTorch logits and the
exported file's onnxruntime logits, for a fixed calibration batch and fixed test images.

Float kernels round differently per instruction set, so a recording belongs to one kind of CPU
(its int8 features and the kernels PyTorch dispatches to); `python -m tests.golden.outputs`
records this CPU's kind. Redesigns must leave these bit-identical.
"""
from __future__ import annotations

import re
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import fxquant
from fxquant import cpu, zoo
from fxquant.config import resolve
from fxquant.data import image_loader, load_npz
from fxquant.lowering.runtime import OnnxModule

HERE = Path(__file__).parent
CASES = [(recipe, bits) for recipe in ("minmax", "repq-vit", "repq-vit-sym", "dopq-vit", "fq-vit",
                                       "tsptq-vit", "repq-vit+cpt-v")
         for bits in ("w8a8", "w4a4")]
N_CALIB, N_TEST = 32, 16
# Refinements stop after a fixed, small amount of work, never on a clock.
OPTIONS = {"recon_iters": 10, "recon_max_seconds": 10 ** 6, "cptv_passes": 1, "cptv_cycles": 1,
           "cptv_population": 4, "cptv_max_seconds": 10 ** 6}


def path_for_this_cpu() -> Path:
    kind = f"{cpu.current().kind} {torch.backends.cpu.get_cpu_capability()}"
    return HERE / (re.sub(r"[^a-z0-9]+", "_", kind.lower()) + ".npz")


def compute(recipe: str, bits: str, workdir: Path) -> dict[str, np.ndarray]:
    """{"torch": logits, "onnx": logits} on one thread in each runtime."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = zoo.load_model(zoo.REFERENCE_NAME)
        x, y = load_npz(zoo.BUNDLED_CALIB, N_CALIB)
        calib = image_loader(x, y, ref.mean, ref.std, ref.input_size, batch_size=N_CALIB)
        x, y = load_npz(zoo.BUNDLED_TEST, N_TEST)
        images = next(iter(image_loader(x, y, ref.mean, ref.std, ref.input_size, N_TEST)))[0]
        torch.manual_seed(0)
        config = resolve(recipe, bits)
        config = replace(config, options={**config.options, **OPTIONS})
        qmodel = fxquant.convert(ref.model, calib, config)
        with torch.no_grad():
            logits = qmodel(images)
        path = fxquant.export_onnx(qmodel, workdir / "model.onnx", images[:2])
        return {"torch": logits.numpy(), "onnx": OnnxModule(path, threads=1, warn=False)(images).numpy()}
    finally:
        torch.set_num_threads(threads)


def key(recipe: str, bits: str, runtime: str) -> str:
    return f"{recipe}/{bits}/{runtime}"


def record() -> Path:
    arrays = {}
    with tempfile.TemporaryDirectory() as tmp:
        for recipe, bits in CASES:
            for runtime, values in compute(recipe, bits, Path(tmp)).items():
                arrays[key(recipe, bits, runtime)] = values
            print(recipe, bits, "recorded", file=sys.stderr, flush=True)
    path = path_for_this_cpu()
    np.savez_compressed(path, **arrays)
    return path


if __name__ == "__main__":
    print(record())
