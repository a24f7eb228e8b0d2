"""The roles a quantized tensor can play, found by `passes.annotate_roles`."""
POST_LAYERNORM = "post_layernorm"
POST_SOFTMAX = "post_softmax"
POST_GELU = "post_gelu"
LINEAR_INPUT = "linear_input"
MATMUL_INPUT = "matmul_input"
WEIGHT = "weight"
MODEL_INPUT = "model_input"  # a graph input fed straight to a quantized layer (the image)
# Inputs of the float-only ops, quantized when config.options["fully_quantized"] is on (FQ-ViT).
PRE_LAYERNORM = "pre_layernorm"  # the residual stream: every reader gets the quantized value
PRE_SOFTMAX = "pre_softmax"
PRE_GELU = "pre_gelu"
FULLY_QUANTIZED_ROLES = (PRE_LAYERNORM, PRE_SOFTMAX, PRE_GELU)

ACTIVATION_ROLES = (POST_LAYERNORM, POST_SOFTMAX, POST_GELU, LINEAR_INPUT, MATMUL_INPUT, MODEL_INPUT)
ALL_ROLES = ACTIVATION_ROLES + (WEIGHT,)
