"""MinMax: the baseline recipe ("minmax"); no paper of its own.

Every activation gets a uniform asymmetric grid per tensor over the min-max range calibration saw,
every weight a symmetric grid per output channel; the model input stays at 8 bits and the
post-Softmax values take the `attn` bits. It is the "MinMax" row of the papers' tables (FQ-ViT
runs it fully quantized: this recipe with the option fully_quantized=True, or
`fxquant quantize --fully-quantized`). fq_vit.py and tsptq_vit.py start from its roles.

Terms -> code
- uniform quantizer, q = clamp(round(x / s) + z) — quantizers/uniform.py: UniformQuantizer
- min-max range — observers/observer.py: Observer (running min / max); RoleSpec(observer="minmax")
- per-channel symmetric weights — passes/quantize.py: fit_weight
"""
from fxquant import roles
from fxquant.config import QuantConfig, RoleSpec, register_recipe

ACTIVATION = RoleSpec()
ROLES = {
    roles.WEIGHT: RoleSpec(per_channel=True, symmetric=True, bits="w"),
    roles.MODEL_INPUT: RoleSpec(bits="8"),
    roles.POST_LAYERNORM: ACTIVATION,
    roles.POST_GELU: ACTIVATION,
    roles.LINEAR_INPUT: ACTIVATION,
    roles.MATMUL_INPUT: ACTIVATION,
    roles.POST_SOFTMAX: RoleSpec(bits="attn"),
}

MINMAX = register_recipe(QuantConfig(
    name="minmax", roles=ROLES, suggested_bits=("w8a8", "w6a6"),
    summary="the baseline: min-max grids; within 0.3 pp of FP32 at 8 and 6 bits, not below"))
RECIPES = (MINMAX,)
