import json

from fxquant import zoo
from fxquant.bench import two_scale_error
from fxquant.cli import main


def test_two_scale_error_covers_every_softmax_and_gelu_tensor(capsys, monkeypatch):
    monkeypatch.setattr(two_scale_error, "METHODS", (("uniform", "minmax"), ("two_scale", "mse")))
    assert main(["bench", "two-scale-error", "--calib", "2", "--eval", "2", "--bits", "4",
                 "--calib-data", str(zoo.BUNDLED_CALIB), "--test-data", str(zoo.BUNDLED_TEST),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = {(r["role"], r["quantizer"]): r for r in result["rows"]}
    assert len(rows) == 4 and all(len(r["layers"]) == 6 for r in rows.values())  # 6 blocks
    softmax = rows["post_softmax", "two_scale"]
    assert all(layer["settings"].startswith("m=") for layer in softmax["layers"])
    # attention is mostly tiny values: the fine region must beat one grid (+8 dB measured)
    assert softmax["sqnr_db"] > rows["post_softmax", "uniform"]["sqnr_db"]
