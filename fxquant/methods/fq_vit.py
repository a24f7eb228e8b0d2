"""FQ-ViT: the fully quantized ViT, PTF on LayerNorm inputs and Log-Int-Softmax ("fq-vit").

Paper: Lin, Zhang, Sun, Li, Zhou, "FQ-ViT: Post-Training Quantization for Fully Quantized Vision
Transformer", IJCAI 2022 (arXiv 2111.13824); official code megvii-research/FQ-ViT.
Spec: shared/methods/fq-vit.md.

Recipe: minmax.py's roles (MinMax uint8 activations, int8 symmetric per-channel weights), fully
quantized: the inputs of LayerNorm, Softmax and GELU are quantized too, the LayerNorm inputs with
PTF, and LayerNorm and Softmax then compute from integer codes. Post-Softmax: LIS at ≤ 4 attention
bits (the recipe's default attn_bits=4, the paper's 8/8/4; bits "w8a8attn4"), uniform above (its
8/8/8; bits "w8a8").

Terms -> code
- fully quantized — the option fully_quantized (config.PipelineOptions): roles.PRE_LAYERNORM,
  PRE_SOFTMAX, PRE_GELU marked by passes/annotate_roles.py, then the passes of pipeline.INTEGER
- PTF (Power-of-Two Factor: per-channel 2^α_c on one layer scale s and one zero point, α_c ≤ K = 3)
  — quantizers/ptf.py: PTFQuantizer ("ptf"), K
- integer LayerNorm (the code's QIntLayerNorm) — quantizers/int_layernorm.py: int_layer_norm;
  passes/integer_layernorm.py puts it in the graph
- LIS (Log-Int-Softmax: integer exp, then 4-bit log2 attention 2^−code) — quantizers/int_softmax.py:
  LISQuantizer ("lis"), lis_attention; passes/integer_softmax.py fuses Softmax, LIS and A·V
- i-exp (I-BERT's integer exponential, second-order polynomial) — quantizers/int_softmax.py:
  exp_int, int_softmax (the Softmax in front of a uniform attention quantizer)
- A·V by bit shifts — lis_attention: the powers of two as uint8 branches, each an exact integer
  MatMul in ONNX (no BitShift)
- MinMax observer — RoleSpec(observer="minmax"), minmax.py

Where fxquant differs
- PTF scores α_c on the samples of every calibration batch (FQ-ViT: the last batch only) and
  widens the layer range to contain 0, so the zero point is a code.
- LIS rounds to the nearest power of two with exact integer thresholds on Σe / e; FQ-ViT rounds
  Σe / e first, which can move a value to the next code.
- The integer LayerNorm subtracts the mean with the rounded multiplier M / 2^N rather than A, and a
  token whose channels are all equal gets LayerNorm's limit β (FQ-ViT: NaN).
- GELU's input is quantized too (roles.PRE_GELU); FQ-ViT's code leaves it float.
"""
from fxquant import roles
from fxquant.config import FULLY_QUANTIZED, QuantConfig, RoleSpec, register_recipe
from fxquant.methods import minmax

FQ_VIT = register_recipe(QuantConfig(
    name="fq-vit", attn_bits=4, options={FULLY_QUANTIZED: True},
    suggested_bits=("w8a8attn4", "w8a8", "w6a6"),
    summary="fully quantized (integer LayerNorm and Softmax, PTF, LIS attention) at 8 or 6 bits",
    roles={**minmax.ROLES,
           roles.PRE_LAYERNORM: RoleSpec(quantizer="ptf", per_channel=True),
           roles.PRE_SOFTMAX: minmax.ACTIVATION, roles.PRE_GELU: minmax.ACTIVATION,
           roles.POST_SOFTMAX: RoleSpec(quantizer="lis", bits="attn")}))
RECIPES = (FQ_VIT,)
