"""Run an ONNX file in onnxruntime as if it were a torch module (for evaluation and parity)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch


def session(path: str | Path, threads: int | None = None,
            optimized_path: str | Path | None = None) -> ort.InferenceSession:
    """A CPU session with a fixed thread count (speed numbers must say how many)."""
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

    def __init__(self, path: str | Path, threads: int | None = None):
        self.path = Path(path)
        self.session = session(path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        feeds = dict(zip(self.input_names, args))
        feeds.update(kwargs)
        outputs = self.session.run(None, {k: np.ascontiguousarray(v.cpu().numpy())
                                          for k, v in feeds.items()})
        return torch.from_numpy(outputs[0])
