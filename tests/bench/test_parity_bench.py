import json

from fxquant import zoo
from fxquant.cli import main


def test_parity_agrees_on_the_reference_model(capsys):
    assert main(["bench", "parity", "--models", "ref-vit", "--recipes", "minmax", "repq-vit",
                 "--bits", "w8a8", "--calib", "8", "--eval", "16",
                 "--test-data", str(zoo.BUNDLED_TEST), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]
    assert [(r["recipe"], r["images"]) for r in rows] == [("minmax", 16), ("repq-vit", 16)]
    for r in rows:
        assert r["top1_agreement"] == 1.0 and r["max_abs_diff"] < 0.1
