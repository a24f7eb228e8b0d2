"""Quantizer numerics, one file per kind, each a registered `Quantizer` (`base.py`) whose custom
ops carry their ONNX translation (`custom_op.py`). Importing the package registers the built-ins.
"""
from fxquant.quantizers import int_layernorm, int_softmax, log2, ptf, tanq, two_scale, uniform
from fxquant.quantizers.base import QUANTIZERS, Quantizer, get, register
from fxquant.quantizers.custom_op import ONNX_TRANSLATIONS, quant_op

__all__ = ["ONNX_TRANSLATIONS", "QUANTIZERS", "Quantizer", "get", "quant_op", "register",
           "int_layernorm", "int_softmax", "log2", "ptf", "tanq", "two_scale", "uniform"]
