"""GPTQ: a refinement, not a recipe — `+gptq` after any recipe ("repq-vit+gptq").

Paper: Frantar, Ashkboos, Hoefler, Alistarh, "GPTQ: Accurate Post-Training Quantization for
Generative Pre-trained Transformers", ICLR 2023 (arXiv 2210.17323); official code IST-DASLab/gptq.
It builds on Optimal Brain Quantization (OBQ, Frantar & Alistarh, NeurIPS 2022). Page:
docs/methods/gptq.md; one recorded run: benchmarks/gptq.md.

It takes a quantized model and re-chooses each weight's integer codes on the grid the recipe
fitted: input columns are rounded one at a time and each rounding error is pushed onto the columns
not yet rounded, weighted by the inverse Hessian of the layer's calibration inputs, so the
layer's output, not each weight, stays close to the float one. `pipeline.REFINEMENTS["gptq"]`
runs it after quantization.

Terms -> code
- layer-wise objective ||XWᵀ - XŴᵀ||², Hessian H = 2XᵀX — passes/gptq.py: gptq_codes
- error compensation from the Cholesky factor of the inverse Hessian, dampening λ = 1 % of
  mean diag H, lazy batch updates, act-order (columns of largest diag H first) —
  passes/gptq.py: gptq_codes, GptqOptions
- sequential quantization (each layer sees the inputs the already quantized layers before it
  produce) — passes/gptq.py: gptq
- block — blocks.py: split_blocks (only to cache the inputs a layer's block reads)

Options (GptqOptions; the paper's names and defaults in brackets)
- gptq_damp [percdamp 0.01], gptq_block_size [blocksize 128], gptq_act_order [act-order; the
  official code's default is off, ours is on]

Where fxquant differs
- The grid is the recipe's: per-output-channel scale and zero point are fitted before GPTQ (by the
  recipe's weight observer) and not refitted, so the export keeps the same QDQ operators.
- H is averaged over every input row the calibration set gives (padding tokens of a text model
  left out with gptq_skip_padding); the factor 2 is left out (it cancels).
- Conv2d layers with groups = 1 (the patch embedding) are rounded too, on their im2col patches.
"""
from fxquant.passes.gptq import GptqOptions, gptq

REFINEMENT = "gptq"      # the name a recipe chains with "+"
PASS = gptq
OPTIONS = GptqOptions
RECIPES = ()
