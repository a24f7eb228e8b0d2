"""The quantizer contract and the registry recipes name quantizers from.

A quantizer is a frozen dataclass of fitted parameters that
- is fitted from an observer's statistics (`fit(observer, spec, bits)`, a classmethod; it may hand
  back another kind when that is the better one, e.g. LIS above 4 bits is uniform);
- enters the graph as one call `op(x, *tensors(), *constants())` of a custom op declared with
  `custom_op.quant_op`, whose reference function is its PyTorch numerics and whose `.onnx`
  translation is its ONNX numerics;
- fake-quantizes a tensor with that same op (`fake_quantize`), which is what the range search scores.

A new quantizer is one class decorated with `@register("name")`, anywhere; recipes then name it in
`RoleSpec(quantizer="name")`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, ClassVar

import torch

from fxquant.config import RoleSpec
from fxquant.errors import FxQuantError
from fxquant.observers.observer import Observer
from fxquant.quantizers.custom_op import QuantOp


class Quantizer(ABC):
    """Fitted parameters of one quantizer kind and how they enter the graph."""
    name: ClassVar[str]    # the recipe name, set by @register
    op: ClassVar[QuantOp]  # the custom op of the graph call

    @classmethod
    @abstractmethod
    def fit(cls, observer: Observer, spec: RoleSpec, bits: int) -> Quantizer:
        """Parameters from `observer`'s statistics (samples, min, max) as `spec` says."""

    @abstractmethod
    def tensors(self) -> dict[str, torch.Tensor]:
        """The op's tensor arguments after x, by buffer name."""

    def constants(self) -> tuple:
        """The op's non-tensor arguments after the tensors."""
        return ()

    def fake_quantize(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x, *(t.to(x.device) for t in self.tensors().values()), *self.constants())


def per_tensor_samples(kind: str, observer: Observer, spec: RoleSpec) -> torch.Tensor:
    """The samples a per-tensor quantizer fits on; a per-channel role is a recipe error."""
    if spec.per_channel:
        raise FxQuantError(f"{kind} is per tensor: set per_channel=False for the {observer.role} role")
    return observer.samples()


QUANTIZERS: dict[str, type[Quantizer]] = {}


def register(name: str) -> Callable[[type[Quantizer]], type[Quantizer]]:
    """Class decorator: recipes may name the quantizer `name` from now on."""
    def add(cls: type[Quantizer]) -> type[Quantizer]:
        if name in QUANTIZERS:
            raise FxQuantError(f"a quantizer named {name!r} is already registered "
                               f"({QUANTIZERS[name].__qualname__})")
        cls.name = name
        QUANTIZERS[name] = cls
        return cls
    return add


def get(name: str) -> type[Quantizer]:
    """The quantizer class registered as `name`."""
    if name not in QUANTIZERS:
        raise FxQuantError(f"unknown quantizer {name!r}: available are {sorted(QUANTIZERS)}")
    return QUANTIZERS[name]
