"""ONNX emission, onnxruntime clean-up, parity and the integer-only audit."""
from fxquant.lowering.audit import audit

__all__ = ["audit"]
