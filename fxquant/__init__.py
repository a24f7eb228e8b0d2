"""fxquant: post-training quantization of vision transformers as torch.fx passes, lowered to ONNX."""
from fxquant.api import IgnoredScope, QuantizedModel, convert
from fxquant.config import QuantConfig, RoleSpec
from fxquant.errors import ExportMismatch, FxQuantError
from fxquant.lowering.export import export_onnx
from fxquant.sqnr import report
from fxquant.tracing import trace

__all__ = ["convert", "export_onnx", "report", "trace", "IgnoredScope", "QuantizedModel", "QuantConfig", "RoleSpec", "FxQuantError",
           "ExportMismatch"]
