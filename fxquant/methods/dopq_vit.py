"""DopQ-ViT: RepQ-ViT with TanQ attention, the MOSF fold target and block reconstruction ("dopq-vit").

Paper: Lianwei Yang, Haisong Gong, Haokun Lin, Yichen Wu, Zhenan Sun, Qingyi Gu, "DopQ-ViT: Towards
Distribution-Friendly and Outlier-Aware Post-Training Quantization for Vision Transformers",
arXiv 2408.03291 (2024, v3 2025); no official code. Spec: shared/methods/dopq-vit.md.

Recipe: repq_vit.py's roles and fold with two substitutions, TanQ for the post-Softmax values and
the median as fold target (option fold_target="median"), then block reconstruction (refinement
"recon"). benchmarks/dopq.md (`fxquant bench dopq`) switches the three parts on one at a time.

Terms -> code
- TanQ (tangent quantizer: levels dense near 0 and near 1) — quantizers/tanq.py: TanQuantizer
  ("tan"), level_table, tan_quant
- MOSF (the median of the channel scales as the per-tensor scale; v3 of the paper: "MAD-guided
  optimal scaling factor") — passes/reparameterize_layernorm.py: FOLD_TARGETS["median"], chosen by
  the option fold_target (FoldOptions)
- post-LayerNorm reparameterization — as RepQ-ViT (repq_vit.py)
- block reconstruction — passes/reconstruct.py: reconstruct, ReconOptions (the options recon_*);
  blocks.py: split_blocks cuts the graph at its residual adds

Where fxquant differs (the paper body was not readable: the formulas are fxquant's)
- TanQ is a tangent-companded codebook with a shape θ and a crossover c; Δ, θ and c are the MSE-best
  of a grid on the calibration samples; the levels are snapped to the grid Δ/65535 so that the
  ONNX (two Gathers, two uint8 branches) is exact.
- MOSF takes the plain median of the channel scales and of the zero points (rounded); outlier
  channels are not bounded before the ratios are formed.
- Reconstruction follows QDrop (AdaRound rounding of the weights, learned activation step sizes,
  random dropping of quantization); the paper's schedule is unknown, fxquant's is 20 times shorter
  than QDrop's with learning rates 10 times larger.
"""
from dataclasses import replace

from fxquant import roles
from fxquant.config import RoleSpec, register_recipe
from fxquant.methods import repq_vit

DOPQ_VIT = register_recipe(replace(
    repq_vit.REPQ_VIT, name="dopq-vit", refine=("recon",), options={"fold_target": "median"},
    suggested_bits=("w3a3",), summary="the one to use at 3 bits on ViTs: repq-vit with TanQ attention, "
                                      "MOSF and minutes of block reconstruction",
    roles={**repq_vit.ROLES, roles.POST_SOFTMAX: RoleSpec(quantizer="tan", observer="mse", bits="attn")}))
RECIPES = (DOPQ_VIT,)
