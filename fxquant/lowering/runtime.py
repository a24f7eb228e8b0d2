"""Run an ONNX file in onnxruntime as if it were a torch module (for evaluation and parity).

Loading a file warns when this CPU would compute it differently from fxquant: an integer GEMM
that can saturate here (x86 without VNNI), in a file exported for the `vnni` target or by
another tool (a file without fxquant's target metadata is checked as full range).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import torch

from fxquant import cpu, target
from fxquant.lowering import saturation

TARGET_KEY = "fxquant.target"  # metadata: the CPUs the file is exact on (fxquant/target.py)


def _target_of(model: ir.Model) -> str | None:
    return model.metadata_props.get(TARGET_KEY)


def file_target(path: str | Path) -> str | None:
    """The target recorded in a file's metadata, None for files fxquant did not write."""
    return _target_of(ir.load(str(path)))


def saturation_warning(path: str | Path) -> str | None:
    """Why onnxruntime on this CPU may not compute `path` as fxquant measured it, or None.
    The file is read once, and only on a CPU where full-range files are not exact."""
    here = cpu.current()
    if here.full_range_int8_exact:
        return None
    model = ir.load(str(path))
    risky = [] if _target_of(model) == target.PORTABLE else saturation.saturating(model)
    if not risky:
        return None
    return (f"{path}: {len(risky)} integer GEMMs can saturate on this CPU ({here.kind}: its int8 "
            f"GEMM adds pairs of products in int16), so onnxruntime's results will differ from "
            f"fxquant's; re-export it with target='{target.PORTABLE}' (fxquant quantize "
            f"--target {target.PORTABLE}) or run it on a CPU with VNNI, AMX or on ARM64")


def session(path: str | Path, threads: int | None = None,
            optimized_path: str | Path | None = None, warn: bool = True) -> ort.InferenceSession:
    """A CPU session with a fixed thread count (speed numbers must say how many)."""
    if warn and (message := saturation_warning(path)):
        warnings.warn(message, stacklevel=2)
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModule:
    """Callable with torch tensors in and out, positional inputs in the file's order."""

    def __init__(self, path: str | Path, threads: int | None = None, warn: bool = True):
        self.path = Path(path)
        self.session = session(path, threads, warn=warn)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        feeds = dict(zip(self.input_names, args))
        feeds.update(kwargs)
        outputs = self.session.run(None, {k: np.ascontiguousarray(v.cpu().numpy())
                                          for k, v in feeds.items()})
        return torch.from_numpy(outputs[0])
