import onnxruntime as ort
import torch

from fxquant.bench.fp32_onnx import export_torchscript_onnx


class TinyEncoder(torch.nn.Module):
    """Named token inputs and a dict output, as a Hugging Face encoder takes and returns them."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 8)

    def forward(self, input_ids, attention_mask, use_cache=None, **kwargs):
        hidden = self.embed(input_ids) * attention_mask.unsqueeze(-1)
        return {"last_hidden_state": hidden, "pooled": hidden.mean(1)}


def test_torchscript_export_keeps_input_names_and_a_free_batch_axis(tmp_path):
    model = TinyEncoder().eval()
    example = {"input_ids": torch.randint(0, 50, (2, 5)), "attention_mask": torch.ones(2, 5, dtype=torch.long)}
    path = export_torchscript_onnx(model, tmp_path / "fp32.onnx", example)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    batch = {"input_ids": torch.randint(0, 50, (3, 5)), "attention_mask": torch.ones(3, 5, dtype=torch.long)}
    hidden, pooled = session.run(None, {k: v.numpy() for k, v in batch.items()})
    expected = model(**batch)
    assert torch.allclose(torch.from_numpy(hidden), expected["last_hidden_state"], atol=1e-6)
    assert torch.allclose(torch.from_numpy(pooled), expected["pooled"], atol=1e-6)
