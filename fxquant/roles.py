"""The roles a quantized tensor can play, found by `passes.annotate_roles`."""
POST_LAYERNORM = "post_layernorm"
POST_SOFTMAX = "post_softmax"
POST_GELU = "post_gelu"
LINEAR_INPUT = "linear_input"
MATMUL_INPUT = "matmul_input"
WEIGHT = "weight"
MODEL_INPUT = "model_input"  # a graph input fed straight to a quantized layer (the image)

ACTIVATION_ROLES = (POST_LAYERNORM, POST_SOFTMAX, POST_GELU, LINEAR_INPUT, MATMUL_INPUT, MODEL_INPUT)
ALL_ROLES = ACTIVATION_ROLES + (WEIGHT,)

META_KEY = "fxquant_role"          # role of the tensor a node outputs
WEIGHT_KEY = "fxquant_weight"      # True on a Linear/Conv whose weight is quantized
