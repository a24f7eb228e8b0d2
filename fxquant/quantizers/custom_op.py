"""One helper declares each fxquant op: its PyTorch reference numerics, its fake (what export
traces with) and its ONNX translation, which the lowering reads from ONNX_TRANSLATIONS.

    @quant_op("my_quant")
    def my_quant(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor: ...

    @my_quant.onnx
    def my_quant_onnx(x, scale): ...   # onnxscript ops

The op is then `torch.ops.fxquant.my_quant.default` (`my_quant.overload`) in graphs, and passes
read a call's arguments by name: `my_quant.arguments(node).scale`.
"""
from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Callable

import torch
import torch.fx as fx

NAMESPACE = "fxquant"
ONNX_TRANSLATIONS: dict[Callable, Callable] = {}   # op overload -> onnxscript function
DECLARED: set[Callable] = set()                    # the overload of every declared op


def empty_like_input(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """The fake of an elementwise op: an output shaped and typed like its first input."""
    return torch.empty_like(x)


class QuantOp:
    """A declared custom op: call it like its reference function; `.overload` is the graph target."""

    def __init__(self, name: str, reference: Callable, fake: Callable = empty_like_input):
        self.name = name
        self._op = torch.library.custom_op(f"{NAMESPACE}::{name}", reference, mutates_args=())
        self._op.register_fake(fake)
        self.overload = getattr(getattr(torch.ops, NAMESPACE), name).default
        DECLARED.add(self.overload)
        self.__doc__ = reference.__doc__
        self._signature = inspect.signature(reference)

    def __call__(self, *args, **kwargs):
        return self._op(*args, **kwargs)

    def arguments(self, node: fx.Node) -> SimpleNamespace:
        """A graph call's arguments by the reference function's parameter names (defaults filled)."""
        if node.target is not self.overload:
            raise ValueError(f"{node.name} calls {node.target}, not {self.overload}")
        bound = self._signature.bind(*node.args, **node.kwargs)
        bound.apply_defaults()
        return SimpleNamespace(**bound.arguments)

    def onnx(self, translation: Callable) -> Callable:
        """Register `translation` (onnxscript ops, same arguments) as this op's ONNX lowering."""
        ONNX_TRANSLATIONS[self.overload] = translation
        return translation


def is_quant_op(target) -> bool:
    """Whether a graph node's target is one of the ops declared here."""
    return target in DECLARED


def quantized_value(node: fx.Node) -> fx.Node:
    """The tensor a declared op's graph call quantizes: by convention its first argument."""
    return split_call(node)[0]


def split_call(node: fx.Node) -> tuple[fx.Node, tuple]:
    """(quantized value, the call's other arguments in order) of a declared op's graph call."""
    if not is_quant_op(node.target):
        raise ValueError(f"{node.name} is not a call of an fxquant op")
    x, *rest = node.args
    return x, tuple(rest)


def quant_op(name: str, fake: Callable = empty_like_input) -> Callable[[Callable], QuantOp]:
    """Decorator declaring `fxquant::name` from its reference function (types annotated)."""
    return lambda reference: QuantOp(name, reference, fake)
