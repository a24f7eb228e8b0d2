import json

import pytest

import fxquant
from fxquant import roles
from fxquant.cli import main
from fxquant.plots import plot_accuracy, plot_sqnr

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def reports(ref, calib_loader):
    return {bits: fxquant.report(fxquant.convert(ref.model, calib_loader, "minmax", bits),
                                 calib_loader, max_batches=1) for bits in ("w8a8", "w4a4")}


def test_every_quantized_tensor_is_reported(reports):
    rows = reports["w4a4"].rows
    weights = [r for r in rows if r["role"] == roles.WEIGHT]
    assert len(weights) == 26 and weights[0]["tensor"] == "patch_embed_proj.weight"
    assert {r["role"] for r in rows} == set(roles.ALL_ROLES)
    assert all(r["bits"] == (8 if r["role"] == roles.MODEL_INPUT else 4) for r in rows)
    assert all(r["min"] <= r["max"] and r["sqnr_db"] is not None for r in rows)
    assert all((r["sqnr_vs_float_db"] is None) == (r["role"] == roles.WEIGHT) for r in rows)


def test_sqnr_is_worst_first_and_falls_with_bits(reports):
    worst = [r["sqnr_db"] for r in reports["w4a4"].worst_first()]
    assert worst == sorted(worst)
    eight = {r["tensor"]: r["sqnr_db"] for r in reports["w8a8"].rows}
    for r in reports["w4a4"].rows:
        if r["bits"] == 4:
            assert eight[r["tensor"]] > r["sqnr_db"] + 6  # about 6 dB per bit
    first = reports["w4a4"].rows[0]  # the image: no error carried in yet
    assert first["role"] == roles.MODEL_INPUT
    assert first["sqnr_vs_float_db"] == pytest.approx(first["sqnr_db"])
    assert "| SQNR dB (quantizer) |" in reports["w4a4"].table()


def test_plots_are_pngs(reports, tmp_path):
    rep = reports["w4a4"]
    assert plot_sqnr(rep.rows, tmp_path / "sqnr.png", rep.title).read_bytes().startswith(PNG)
    result = {"model": "m", "eval_images": 8, "calib_images": 4, "fp32_top1": 0.7,
              "results": [{"recipe": "minmax", "bits": b, "torch_top1": t, "onnx_top1": None}
                          for b, t in (("w8a8", 0.7), ("w4a4", 0.5))],
              "peers": [{"name": "p", "bits": "w8a8", "top1": 0.69},
                        {"name": "q", "bits": "w8a8", "error": "failed"}]}
    assert plot_accuracy(result, tmp_path / "acc.png").read_bytes().startswith(PNG)
    with pytest.raises(fxquant.FxQuantError, match="does not exist"):
        plot_accuracy(result, tmp_path / "missing" / "acc.png")


def test_report_needs_a_quantized_model(ref, calib_loader):
    with pytest.raises(fxquant.FxQuantError, match="QuantizedModel"):
        fxquant.report(ref.model, calib_loader)


def test_report_cli(capsys, tmp_path):
    png = tmp_path / "sqnr.png"
    assert main(["report", "--bits", "w6a6", "--calib", "16", "--eval", "32", "--png", str(png),
                 "--json"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["bits"] == "w6a6" and result["images"] == 32 and png.is_file()
    assert result["tensors"][0]["sqnr_db"] == min(r["sqnr_db"] for r in result["tensors"])
    assert "worst first" in out
    bench = tmp_path / "accuracy.json"
    bench.write_text(json.dumps({"model": "m", "eval_images": 8, "calib_images": 4,
                                 "fp32_top1": 0.7, "results": [], "peers": []}))
    assert main(["report", "--accuracy-json", str(bench), "--png", str(tmp_path / "a.png")]) == 0
    assert (tmp_path / "a.png").is_file()
    assert main(["report", "--accuracy-json", str(tmp_path / "none.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
