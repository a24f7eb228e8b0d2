import json

import pytest

from fxquant import zoo
from fxquant.bench import accuracy
from fxquant.bench.peers import Peer
from fxquant.cli import main

SMALL = ["bench", "accuracy", "--recipes", "minmax", "--bits", "w8a8", "--calib", "16",
         "--eval", "64", "--calib-data", str(zoo.BUNDLED_CALIB),
         "--test-data", str(zoo.BUNDLED_TEST), "--json"]


def _broken(inputs):
    raise RuntimeError("this peer cannot quantize")


def test_bench_accuracy_lists_recipes_peers_and_failures(capsys, monkeypatch):
    monkeypatch.setattr(accuracy, "PEERS", (*accuracy.PEERS, Peer("broken", "w8a8", _broken)))
    assert main([*SMALL, "--peers", "ort-dynamic", "broken"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert (result["model"], result["eval_images"], result["calib_images"]) == ("ref-vit", 64, 16)
    assert abs(result["fp32_onnx_top1"] - result["fp32_top1"]) <= 1 / 64
    [row] = result["results"]
    assert (row["recipe"], row["bits"]) == ("minmax", "w8a8") and row["convert_seconds"] > 0
    assert abs(row["torch_top1"] - result["fp32_top1"]) <= 3 / 64
    assert abs(row["onnx_top1"] - row["torch_top1"]) <= 2 / 64
    dynamic, broken = result["peers"]
    assert dynamic["name"] == "ort-dynamic" and abs(dynamic["top1"] - result["fp32_top1"]) <= 3 / 64
    assert broken == {"name": "broken", "bits": "w8a8", "runtime": "onnxruntime",
                      "error": "RuntimeError: this peer cannot quantize"}
    assert "| fxquant | minmax | onnxruntime |" in out and "- broken w8a8: RuntimeError" in out


def test_a_failing_recipe_is_listed_not_fatal(capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("calibration exploded")
    monkeypatch.setattr(accuracy, "convert", fail)
    assert main([*SMALL, "--peers"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["results"][0]["error"] == "RuntimeError: calibration exploded"
    assert result["results"][0]["torch_top1"] is None and result["peers"] == []


@pytest.mark.parametrize("flag, message", [("--peers", "unknown peer 'nope'"),
                                           ("--recipes", "unknown recipe 'nope'"),
                                           ("--bits", "cannot read bit-widths 'nope'")])
def test_bad_selection_is_refused(capsys, flag, message):
    assert main(["bench", "accuracy", flag, "nope"]) == 2
    assert message in capsys.readouterr().err


def test_peers_are_chosen_by_bits():
    chosen = accuracy.select_peers(None, ["w4a4"])
    assert chosen and all(p.bits == "w4a4" for p in chosen)


def test_no_onnx_skips_the_export(capsys, monkeypatch):
    def no_export(*args, **kwargs):
        raise AssertionError("exported despite --no-onnx")
    monkeypatch.setattr(accuracy, "export_onnx", no_export)
    assert main([*SMALL, "--peers", "--no-onnx"]) == 0
    [row] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]
    assert row["torch_top1"] is not None and row["onnx_top1"] is None and "onnx_error" not in row
