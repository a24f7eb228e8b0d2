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
