"""Quantizer numerics, one file per kind; this registry maps recipe names to them.

A fitter turns an observer's statistics into parameters that know their graph call
(`op()`, `tensors()`, `constants()`); ONNX_TRANSLATIONS gathers every op's lowering.
"""
from __future__ import annotations

from typing import Callable

from fxquant.errors import FxQuantError
from fxquant.quantizers import int_layernorm, int_softmax, log2, pow2, tan, two_scale, uniform


def _fit_uniform(observer, spec, bits: int):
    from fxquant.observers import search
    return search.fit(spec.observer, observer.samples(), observer.min, observer.max, bits,
                      spec.symmetric)


ACTIVATION_FITTERS: dict[str, Callable] = {"uniform": _fit_uniform, "tan": tan.fit_observer,
                                           **log2.FITTERS, "two_scale": two_scale.fit_observer,
                                           "o2sf": two_scale.fit_outlier_observer,
                                           "ptf": pow2.fit_observer, "lis": int_softmax.fit_lis}


def _least_mse(*names: str) -> Callable:
    """A fitter keeping whichever of the named quantizers has the least MSE on the samples."""
    def fit(observer, spec, bits: int):
        samples = observer.samples()
        fits = [ACTIVATION_FITTERS[name](observer, spec, bits) for name in names]
        return min(fits, key=lambda p: (p.fake_quantize(samples) - samples).pow(2).mean().item())
    return fit


# log√2 wins on ViT attention at <= 4 bits, uniform at 6-8 bits (benchmarks/attention_quantizers.md).
ACTIVATION_FITTERS["logsqrt2_or_uniform"] = _least_mse("logsqrt2", "uniform")

ONNX_TRANSLATIONS = {**uniform.ONNX_TRANSLATIONS, **tan.ONNX_TRANSLATIONS,
                     **log2.ONNX_TRANSLATIONS, **two_scale.ONNX_TRANSLATIONS,
                     **pow2.ONNX_TRANSLATIONS, **int_layernorm.ONNX_TRANSLATIONS,
                     **int_softmax.ONNX_TRANSLATIONS}


def activation_fitter(name: str) -> Callable:
    """`fit(observer, spec, bits) -> params` for quantizer kind `name`."""
    if name not in ACTIVATION_FITTERS:
        raise FxQuantError(f"unknown quantizer {name!r}: available are {sorted(ACTIVATION_FITTERS)}")
    return ACTIVATION_FITTERS[name]
