import json

import torch

from fxquant.bench.fp32_onnx import export_float_onnx
from fxquant.cli import main


def test_latency_times_each_file_and_rejects_a_missing_one(tmp_path, capsys):
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval()
    path = export_float_onnx(model, tmp_path / "m.onnx", torch.randn(1, 8))
    assert main(["bench", "latency", str(path), str(path), "--repeats", "3", "--warmup", "1",
                 "--threads", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]
    assert len(rows) == 2 and all(r["ms"] > 0 for r in rows)
    assert main(["bench", "latency", str(tmp_path / "nope.onnx")]) != 0
    assert "no such ONNX file" in capsys.readouterr().err


class _TinyEncoder(torch.nn.Module):
    """Token ids, a mask and token types in, like a Hugging Face encoder."""

    def __init__(self):
        super().__init__()
        self.embed, self.linear = torch.nn.Embedding(2048, 16), torch.nn.Linear(16, 16)

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.linear(self.embed(input_ids + token_type_ids)) * attention_mask[..., None]


def test_latency_feeds_a_token_model_and_times_its_int8_ceiling(tmp_path, capsys):
    example = {"input_ids": torch.ones(2, 5, dtype=torch.long),
               "attention_mask": torch.ones(2, 5, dtype=torch.long),
               "token_type_ids": torch.zeros(2, 5, dtype=torch.long)}
    path = export_float_onnx(_TinyEncoder().eval(), tmp_path / "m.onnx", example)
    assert main(["bench", "latency", str(path), "--sequence", "5", "--ceiling", "--repeats", "2",
                 "--warmup", "1", "--threads", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["sequence"] == 5 and result["results"][0]["ms"] > 0
    assert [(s["m"], s["k"], s["n"]) for s in result["int8_ceiling"]["shapes"]] == [(8 * 5, 16, 16)]  # batch 8 x 5 tokens
