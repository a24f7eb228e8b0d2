"""TSPTQ-ViT: FQ-ViT's fully quantized setting with two-scaled scaling factors ("tsptq-vit").

Paper: Yu-Shan Tai, Ming-Guang Lin, An-Yeu (Andy) Wu, "TSPTQ-ViT: Two-scaled post-training
quantization for vision transformer", ICASSP 2023 (arXiv 2305.12901); no official code.
Spec: shared/methods/tsptq-vit.md; what was built and measured: benchmarks/tsptq_vit.md.

Recipe: minmax.py's roles, fully quantized as in fq_vit.py, with V-2SF on the post-Softmax and
post-GELU values and O-2SF on the LayerNorm inputs (in place of PTF). The paper's setting is 8 bits
everywhere (bits "w8a8").

Terms -> code
- V-2SF (value-aware two-scaled scaling factors: a fine region for the many small values and a
  coarse one, 2^m times wider, for the few large ones) — quantizers/two_scale.py: TwoScaleQuantizer
  ("two_scale"), two_scale_quant
- bit sparsity (a code is a region bit plus b − 1 magnitude bits: small values keep the low bits
  of the fine code, large values its high bits) — quantizers/two_scale.py: region_ranges,
  shift_range
- O-2SF (outlier-aware two-scaled scaling factors: LayerNorm-input channels whose range exceeds λ
  times the median range get a 2^k larger scale) — quantizers/two_scale.py:
  OutlierTwoScaleQuantizer ("o2sf"), λ = OUTLIER_RATIO; a two-level PTF, so
  passes/integer_layernorm.py reads its codes as it reads PTF's
- V-2SF into a Linear on integer kernels (A = A_S + A_L) — passes/split_two_scale.py,
  quantizers/two_scale.py: two_scale_region
- fully quantized — the option fully_quantized, as in fq_vit.py

Where fxquant differs (the paper body was not readable: the formulas are fxquant's)
- The coarse scale and the ratio m are the MSE-best on the tensor's calibration samples; the
  paper's Hessian-guided metric is not implemented.
- O-2SF gives the normal and the outlier channels a zero point each (one shared zero point clips
  channels offset from each other) and sets the normal scale from the normal group's whole range.
- The Softmax itself stays float: passes/integer_softmax.py takes only LIS or uniform attention.
"""
from fxquant import roles
from fxquant.config import FULLY_QUANTIZED, QuantConfig, RoleSpec, register_recipe
from fxquant.methods import minmax

TSPTQ_VIT = register_recipe(QuantConfig(
    name="tsptq-vit", options={FULLY_QUANTIZED: True}, suggested_bits=("w8a8", "w6a6"),
    summary="fully quantized with two-scale quantizers (V-2SF, O-2SF) at 8 or 6 bits (-14 pp at 4)",
    roles={**minmax.ROLES,
           roles.PRE_LAYERNORM: RoleSpec(quantizer="o2sf", per_channel=True),
           roles.PRE_SOFTMAX: minmax.ACTIVATION, roles.PRE_GELU: minmax.ACTIVATION,
           roles.POST_SOFTMAX: RoleSpec(quantizer="two_scale", bits="attn"),
           roles.POST_GELU: RoleSpec(quantizer="two_scale")}))
RECIPES = (TSPTQ_VIT,)
