import json

from fxquant.cli import main


def test_quantize_json_reports_fp32_quantized_and_onnx_top1(capsys, tmp_path):
    out = tmp_path / "ref.onnx"
    assert main(["quantize", "--calib", "32", "--eval", "64", "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["model"] == "ref-vit" and result["recipe"] == "minmax"
    assert result["calib_images"] == 32 and result["eval_images"] == 64
    assert 0.3 < result["fp32_top1"] <= 1 and 0.3 < result["quant_top1"] <= 1
    assert result["convert_seconds"] > 0
    assert result["onnx_path"] == str(out) and out.is_file()
    assert abs(result["onnx_top1"] - result["quant_top1"]) <= 2 / 64


def test_eval_zero_skips_evaluation(capsys):
    assert main(["--calib", "16", "--eval", "0", "--no-onnx", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["eval_images"] == 0 and result["quant_top1"] is None


def test_bad_input_exits_with_a_message(capsys, tmp_path):
    assert main(["--recipe", "nope", "--eval", "0", "--no-onnx"]) == 2
    assert "unknown recipe" in capsys.readouterr().err
    assert main(["--calib-data", str(tmp_path / "none.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
