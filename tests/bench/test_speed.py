import json

from fxquant.cli import main


def test_speed_times_every_model_of_the_table(capsys):
    assert main(["bench", "speed", "--calib", "4", "--batch", "2", "--repeats", "2",
                 "--warmup", "1", "--threads", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["model"] == "ref-vit" and result["threads"] == 1
    for key in ("fp32_ms", "fxquant_w8a8_ms", "ort_static_ms", "fxquant_w4_ms"):
        assert result[key] > 0
    # int8 weights: about a quarter of the float file; int4 weights: smaller still
    assert result["fxquant_w8_mb"] < 0.4 * result["fp32_mb"]
    assert result["fxquant_w4_mb"] < result["fxquant_w8_mb"]
