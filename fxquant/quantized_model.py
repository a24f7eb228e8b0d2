"""What convert returns; its own module so export and report can check for it without the pipeline."""
from __future__ import annotations

import torch.fx as fx

from fxquant.config import QuantConfig


class QuantizedModel(fx.GraphModule):
    """A GraphModule running the quantized numerics, with the config that made it."""

    def __init__(self, gm: fx.GraphModule, config: QuantConfig, convert_seconds: float):
        super().__init__(gm, gm.graph, f"Quantized{type(gm).__name__}")
        self.config = config
        self.convert_seconds = convert_seconds
        self.meta.update(gm.meta)  # what refinements recorded (search curves, times)

    @property
    def float_parts(self) -> tuple:
        """The parts that run in float, each with where and why (passes/keep_float.py)."""
        return self.meta.get("float_parts", ())

    def __deepcopy__(self, memo):
        """GraphModule's deepcopy keeps the graph and buffers only: keep the config too."""
        return QuantizedModel(super().__deepcopy__(memo), self.config, self.convert_seconds)
