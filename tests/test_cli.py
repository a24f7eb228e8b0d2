import json

from fxquant import config
from fxquant.cli import build_parser, main
from test_data import write_images


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


def _json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_an_image_folder_evaluates_as_the_npz_it_was_written_from(capsys, tmp_path):
    run = ["quantize", "--calib", "32", "--eval", "64", "--no-onnx", "--json"]
    assert main([*run, "--test-data", str(write_images(tmp_path, 64))]) == 0
    from_folder = _json(capsys)
    assert main(run) == 0
    from_npz = _json(capsys)
    assert from_folder["eval_images"] == 64 and from_folder["fp32_top1"] is not None
    assert (from_folder["fp32_top1"], from_folder["quant_top1"]) == (from_npz["fp32_top1"], from_npz["quant_top1"])


def test_a_flat_folder_calibrates_and_skips_evaluation(capsys, tmp_path):
    flat = str(write_images(tmp_path, 16, by_class=False))
    assert main(["--calib", "16", "--calib-data", flat, "--test-data", flat, "--no-onnx", "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out.strip().splitlines()[-1])
    assert result["calib_images"] == 16 and result["eval_images"] == 0
    assert result["fp32_top1"] is None and result["quant_top1"] is None
    assert f"{flat} has no class sub-folders, so no labels: evaluation skipped" in err


def test_recipes_json_lists_every_recipe_with_what_it_is_for_and_its_bits(capsys):
    assert main(["recipes", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == sorted(config.RECIPES)
    for row in rows:
        assert row["summary"] and "\n" not in row["summary"] and row["bits"]
        for bits in row["bits"]:
            config.resolve(row["name"], bits)
    assert main(["recipes"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in config.RECIPES) and "+" in text and "rotate" in text


def test_help_ends_with_examples():
    examples = build_parser(["--help"]).format_help().split("examples:")[1]
    assert "fxquant quantize" in examples and "fxquant recipes" in examples and "--calib-data DIR" in examples


def test_a_random_weight_model_is_not_scored_against_the_labels(capsys):
    assert main(["quantize", "--model", "vit_tiny_patch16_224", "--random-weights", "--calib", "4",
                 "--batch-size", "4", "--no-onnx", "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out.strip().splitlines()[-1])
    assert result["fp32_top1"] is None and result["eval_images"] == 0
    assert "random weights" in err
