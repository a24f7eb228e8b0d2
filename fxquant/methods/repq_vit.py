"""RepQ-ViT: the base recipe of the reparameterization family ("repq-vit", "repq-vit-sym",
"repq-vit-mlp", "repq-vit-rot").

Paper: Li, Xiao, Yang, Gu, "RepQ-ViT: Scale Reparameterization for Post-Training Quantization of
Vision Transformers", ICCV 2023 (arXiv 2212.08254); official code zkkli/RepQ-ViT.
Spec: shared/methods/repq-vit.md.

Recipe: every grid is fitted by the percentile-MSE search; the post-LayerNorm activations are
calibrated with one grid per channel, which the fold then turns into one grid per tensor; the
post-Softmax values get the log√2 quantizer. LayerNorm, Softmax and GELU compute in float.

Terms -> code
- scale reparameterization (post-LayerNorm: channel-wise grids (s_c, z_c) -> one per-tensor grid
  (s̃, z̃), r = s / s̃ absorbed by LayerNorm γ, β and the next Linear's W, b)
  — passes/reparameterize_layernorm.py: reparameterize_layernorm, fold_factors;
  s̃ = mean of s_c is FOLD_TARGETS["mean"], the default of the option fold_target (FoldOptions)
- LayerNorm -> [reshape/permute/pad/roll]* -> Linear(s), the pairs the fold rewrites — patterns.py
- channel-wise post-LayerNorm quantizer — RoleSpec(per_channel=True) on roles.POST_LAYERNORM
- log√2 quantizer (post-Softmax, levels Δ·2^(−q/2)) — quantizers/log2.py: LogSqrt2Quantizer; the
  recipe names "logsqrt2_or_uniform" (LogSqrt2OrUniform)
- log√2 A·V as shifts plus one √2 — quantizers/log2.py: log_quant_onnx (at ≤ 4 bits an even-q and
  an odd-q uint8 branch, which lowering/ort_rules.py runs as two integer MatMuls)
- percentile-MSE calibration (percentiles 0.999, 0.9999, 0.99999) — observers/search.py:
  PERCENTILES, least_error; RoleSpec(observer="mse")
- channel-wise weights (one grid per output row) — passes/quantize.py: fit_weight

Where fxquant differs
- At 6 to 8 attention bits uniform has the lower MSE on ViT attention, and "logsqrt2_or_uniform"
  then takes it (benchmarks/attention_quantizers.md); log√2 is kept at 4 bits and below.
- z̃ is rounded to an integer, so the folded grid is an ONNX zero point and the export is exact.
- The pairs are found by graph structure, not module names; a LayerNorm whose output is also read
  unquantized (post-LN BERT) keeps γ, β, and the factors become an explicit per-channel affine in
  front of the quantizer on the Linear's branch.
- "repq-vit-sym" (not in the paper) keeps weight zero points at 0, the form onnxruntime's integer
  kernels handle best.
- "repq-vit-mlp" (not in the paper) also keeps the MLP's hidden activations per channel and smooths
  them into fc2 (SmoothQuant's factors with α = 1, a float Mul before the quantizer) —
  passes/smooth_channels.py; what BERT-style encoders need at low bits (docs/methods/repq-vit.md).
- "repq-vit-rot" (not in the paper) is repq-vit-mlp with each folded LayerNorm branch rotated by a
  Hadamard matrix (fold_rotate, passes/online_rotation.py): the fold's channel spread leaves the
  weight columns of q, k, v and fc1. On MiniLM it is ahead of repq-vit-mlp at 4 bits on the dev
  split and behind it on test (three calibration draws), worse at 3 bits on both
  (benchmarks/stsb.md).
"""
from dataclasses import replace

from fxquant import roles
from fxquant.config import QuantConfig, RoleSpec, register_recipe

MSE = RoleSpec(observer="mse")
ROLES = {
    roles.WEIGHT: RoleSpec(observer="mse", per_channel=True, bits="w"),
    roles.MODEL_INPUT: RoleSpec(observer="mse", bits="8"),
    roles.POST_LAYERNORM: RoleSpec(observer="mse", per_channel=True),
    roles.POST_GELU: MSE,
    roles.LINEAR_INPUT: MSE,
    roles.MATMUL_INPUT: MSE,
    roles.POST_SOFTMAX: RoleSpec(quantizer="logsqrt2_or_uniform", observer="mse", bits="attn"),
}

REPQ_VIT = register_recipe(QuantConfig(
    name="repq-vit", roles=ROLES, passes=("reparameterize_layernorm",), suggested_bits=("w4a4", "w6a6"),
    summary="the one to use at 4 bits, in seconds: percentile-MSE grids, LayerNorm fold, log√2 attention"))
REPQ_VIT_SYM = register_recipe(replace(
    REPQ_VIT, name="repq-vit-sym", summary="repq-vit with zero-point-0 weights, what onnxruntime's "
                                           "integer kernels prefer (-0.2 pp at 4 bits)",
    roles={**ROLES, roles.WEIGHT: RoleSpec(observer="mse", per_channel=True, symmetric=True, bits="w")}))
REPQ_VIT_MLP = register_recipe(replace(
    REPQ_VIT, name="repq-vit-mlp", passes=("reparameterize_layernorm", "smooth_channels"),
    roles={**ROLES, roles.POST_GELU: RoleSpec(observer="mse", per_channel=True)},
    options={"smooth_alpha": 1.0},  # chosen on the STS-B dev split (benchmarks/stsb.md)
    summary="repq-vit with the MLP's hidden activations smoothed channel by channel into fc2 (a "
            "float Mul before the quantizer): BERT-style encoders, at 3-4 bits with +recon"))
REPQ_VIT_ROT = register_recipe(replace(
    REPQ_VIT_MLP, name="repq-vit-rot", options={**REPQ_VIT_MLP.options, "fold_rotate": True},
    summary="repq-vit-mlp with each folded post-LayerNorm quantizer input rotated by a Hadamard "
            "matrix (a float MatMul before the quantizer): ahead of repq-vit-mlp on MiniLM's dev "
            "split at 4 bits, behind it on test"))
RECIPES = (REPQ_VIT, REPQ_VIT_SYM, REPQ_VIT_MLP, REPQ_VIT_ROT)
