"""A Hugging Face image classifier fed the dict batches a `datasets` loader yields, labels included:
`transform_fn` picks the model's inputs, so the labels stay out of the model and of the file."""
import tempfile
from pathlib import Path

import onnx
import torch
from transformers import ViTConfig, ViTForImageClassification

import fxquant


def pixels_only(batch: dict) -> dict:
    return {"pixel_values": batch["pixel_values"]}


def main() -> None:
    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                       num_attention_heads=4, intermediate_size=128, num_labels=10)
    model = ViTForImageClassification(config).eval()   # from_pretrained(...) with real weights
    batches = ({"pixel_values": torch.randn(8, 3, 32, 32), "labels": torch.randint(0, 10, (8,))}
               for _ in range(4))                       # a one-shot generator is fine
    qmodel = fxquant.convert(model, batches, "minmax", bits="w8a8", transform_fn=pixels_only)
    example = {"pixel_values": torch.randn(2, 3, 32, 32), "labels": torch.zeros(2, dtype=torch.long)}
    with tempfile.TemporaryDirectory() as tmp:
        path = fxquant.export_onnx(qmodel, Path(tmp) / "hf_vit.onnx", example, transform_fn=pixels_only)
        inputs = [i.name for i in onnx.load(path).graph.input]
    print(f"exported with inputs {inputs} (no labels)")


if __name__ == "__main__":
    main()
