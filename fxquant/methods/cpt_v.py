"""CPT-V (Evol-Q): a refinement, not a recipe — `+cpt-v` after any recipe ("fq-vit+cpt-v").

Paper: Frumkin, Gope, Marculescu, "CPT-V: A Contrastive Approach to Post-Training Quantization of
Vision Transformers", arXiv 2211.09643 (2022); republished as Evol-Q, "Jumping through Local Minima:
Quantization in the Loss Landscape of Vision Transformers", ICCV 2023 (arXiv 2308.10814); official
code enyac-group/evol-q. Spec: shared/methods/cpt-v.md; one recorded run: benchmarks/cpt_v.md.

It takes a quantized model and searches its quantization scales, one block at a time, for the
lowest contrastive loss between the quantized and the float model's outputs on the calibration
images. Zero points, integer ranges and the graph stay; a weight's codes are re-rounded under each
new scale. `pipeline.REFINEMENTS["cpt-v"]` runs it after quantization.

Terms -> code
- contrastive loss (InfoNCE: the float output of the same image is the positive, those of the
  other images in the batch the negatives; temperature τ) — passes/contrastive_search.py:
  contrastive_loss
- block-wise evolutionary search (blocks visited last first, a population per visit, tournament
  selection, mutation of the fittest) — passes/contrastive_search.py: contrastive_search
- block — blocks.py: split_blocks (cut at residual adds: attention and MLP are two blocks)
- full-precision reference — passes/float_reference.py: float_reference
- the scales searched — option cptv_scales: "attention" (the official code: weight scales of the
  Linears on residual branches holding a Softmax), "weights", "all" (SCALE_SETS)

Options (CptvOptions; the paper's names and defaults in brackets)
- cptv_passes [passes P = 10], cptv_cycles [cycles per visit K = 3], cptv_population [15],
  cptv_tournament [tournament sample 10]
- cptv_noise, cptv_act_noise: relative mutation size of weight / activation scales [absolute ρ]
- cptv_temperature [τ = 3], cptv_batch_size [batch 100: 99 negatives per positive]
- cptv_holdout (fraction of calibration images that picks the returned state), cptv_seed,
  cptv_max_seconds (budget of the whole pass; None = none)

Where fxquant differs
- Mutations are relative, s·(1 + U(−ε, ε)), not an absolute ±ρ that ignores the scale's size.
- The returned state is picked by the loss on held-out calibration images; the official code keeps
  the checkpoint with the best ImageNet validation accuracy.
- The default searches activation scales too ("all"), not only attention weights.
- The reference is the untouched float model (the code's keeps its integer LayerNorm on).
"""
from fxquant.passes.contrastive_search import CptvOptions, contrastive_search

REFINEMENT = "cpt-v"      # the name a recipe chains with "+"
PASS = contrastive_search
OPTIONS = CptvOptions
RECIPES = ()
