"""A BERT-style text encoder (keyword inputs, padding masks) to integer ONNX that runs at any batch
size and sequence length. Random weights and token ids here; use a tokenizer's output as batches for real."""
import tempfile
from pathlib import Path

import onnx
import torch
from transformers import BertConfig, BertModel

import fxquant
from fxquant.lowering.runtime import OnnxModule


def tokens(batch: int, length: int) -> dict:
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, length // 2:] = 0                                  # one padded sentence
    return {"input_ids": torch.randint(0, 100, (batch, length)), "attention_mask": mask,
            "token_type_ids": torch.zeros(batch, length, dtype=torch.long)}


def main() -> None:
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64),
                      add_pooling_layer=False).eval()
    qmodel = fxquant.convert(model, [tokens(4, 12) for _ in range(4)], "repq-vit", bits="w8a8")
    with tempfile.TemporaryDirectory() as tmp:
        # token inputs: the batch and sequence axes stay free by default
        path = fxquant.export_onnx(qmodel, Path(tmp) / "bert.onnx", tokens(2, 12))
        longer = tokens(3, 20)                                  # another batch and length
        out = OnnxModule(path)(**longer)
        names = [o.name for o in onnx.load(path).graph.output]
    print(f"onnxruntime ran a {tuple(longer['input_ids'].shape)} batch: {names[0]} {tuple(out.shape)}")


if __name__ == "__main__":
    main()
