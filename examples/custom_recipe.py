"""A recipe of your own: a RoleSpec (quantizer, observer, granularity, bits) per tensor role,
here RepQ-ViT's percentile-MSE ranges and LayerNorm fold with TanQ attention, run on the bundled
CIFAR-10 ViT. Add refine=("recon",) for block reconstruction (minutes, better at 3-4 bits)."""
from fxquant import QuantConfig, RoleSpec, convert, roles, zoo
from fxquant.data import image_loader, load_npz
from fxquant.evaluate import top1

RECIPE = QuantConfig(
    name="my-recipe",
    roles={roles.WEIGHT: RoleSpec(observer="mse", per_channel=True, bits="w"),
           roles.MODEL_INPUT: RoleSpec(observer="mse", bits="8"),
           roles.POST_LAYERNORM: RoleSpec(observer="mse", per_channel=True),
           roles.POST_GELU: RoleSpec(observer="mse"),
           roles.LINEAR_INPUT: RoleSpec(observer="mse"),
           roles.MATMUL_INPUT: RoleSpec(observer="mse"),
           roles.POST_SOFTMAX: RoleSpec(quantizer="tan", observer="mse", bits="attn")},
    passes=("reparameterize_layernorm",),       # fold per-channel LayerNorm grids (RepQ-ViT)
)


def main() -> None:
    ref = zoo.load_model(zoo.REFERENCE_NAME)
    x, y = load_npz(zoo.BUNDLED_CALIB, 32)
    calib = image_loader(x, y, ref.mean, ref.std, ref.input_size, batch_size=32)
    x, y = load_npz(zoo.BUNDLED_TEST, 256)
    test = image_loader(x, y, ref.mean, ref.std, ref.input_size, batch_size=128)
    qmodel = convert(ref.model, calib, RECIPE, bits="w4a4")
    print(f"{RECIPE.name} w4a4: top-1 {top1(qmodel, test):.3f} (float {top1(ref.model, test):.3f}) "
          f"on {len(y)} bundled test images")


if __name__ == "__main__":
    main()
