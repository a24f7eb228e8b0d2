import json

from fxquant import roles, zoo
from fxquant.bench.dopq import VARIANTS, variant
from fxquant.cli import main


def test_ablation_rows_follow_the_variants(tmp_path, capsys):
    rows_file = tmp_path / "rows.jsonl"
    assert main(["bench", "dopq", "--variants", "repq-vit", "tanq", "--bits", "w4a4",
                 "--calib", "8", "--eval", "8", "--recon-iters", "2",
                 "--calib-data", str(zoo.BUNDLED_CALIB), "--test-data", str(zoo.BUNDLED_TEST),
                 "--parity-images", "8", "--rows-to", str(rows_file), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(r["variant"], r["bits"]) for r in result["rows"]] == [("repq-vit", "w4a4"),
                                                                   ("tanq", "w4a4")]
    assert len(rows_file.read_text().splitlines()) == 2
    for r in result["rows"]:
        assert (r["top1"] * 8).is_integer() and r["recon_seconds"] is None   # k of the 8 images
        # onnxruntime and PyTorch pick the same class on at least 7 of the 8 images
        assert r["parity"]["images"] == 8 and r["parity"]["top1_agreement"] >= 7 / 8
        # the check covered every test image: its PyTorch top-1 is the row's, and onnxruntime's
        # differs by at most the one image the runtimes may disagree on
        assert r["parity"]["pytorch_top1"] == r["top1"]
        assert abs(r["parity"]["onnxruntime_top1"] - r["top1"]) <= 1 / 8


def test_pass_options_are_applied_and_recorded(capsys):
    args = ["bench", "dopq", "--variants", "recon", "--bits", "w4a4", "--calib", "8", "--eval", "8",
            "--recon-iters", "2", "--calib-data", str(zoo.BUNDLED_CALIB),
            "--test-data", str(zoo.BUNDLED_TEST), "--parity-images", "0", "--json"]
    assert main(args + ["--option", "recon_weight_step_lr=4e-4"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["options"] == {"recon_weight_step_lr": 4e-4}
    assert result["rows"][0]["recon_iters"] == [2] * 7   # six layers and the head
    assert main(args + ["--option", "recon_weight_step=4e-4"]) != 0
    assert "did you mean 'recon_weight_step_lr'" in capsys.readouterr().err


def test_smooth_part_adds_the_pass_and_exports(capsys):
    cfg = variant(VARIANTS["tanq+mosf+smooth+recon"])
    assert cfg.passes == ("reparameterize_layernorm", "smooth_channels") and cfg.refine == ("recon",)
    assert cfg.roles[roles.POST_GELU].per_channel and cfg.options == {"fold_target": "median"}
    args = ["bench", "dopq", "--variants", "tanq+mosf+smooth+recon", "--bits", "w4a4", "--calib", "8",
            "--eval", "8", "--recon-iters", "2", "--calib-data", str(zoo.BUNDLED_CALIB),
            "--test-data", str(zoo.BUNDLED_TEST), "--parity-images", "8", "--json"]
    assert main(args) == 0
    row, = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]
    assert row["recon_iters"] == [2] * 7 and row["parity"]["top1_agreement"] >= 7 / 8
