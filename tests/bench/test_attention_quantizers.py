import json

from fxquant import zoo
from fxquant.cli import main


def test_every_quantizer_is_measured_on_every_attention_layer(capsys):
    assert main(["bench", "attention-quantizers", "--quantizers", "uniform", "logsqrt2",
                 "--bits", "4", "--calib", "4", "--eval", "4",
                 "--calib-data", str(zoo.BUNDLED_CALIB), "--test-data", str(zoo.BUNDLED_TEST),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = {r["quantizer"]: r for r in result["rows"]}
    assert result["layers"] == 6 and all(len(r["layers"]) == 6 for r in rows.values())
    # attention maps are mostly tiny values: a log grid beats a uniform one at 4 bits
    assert rows["logsqrt2"]["mse"] < rows["uniform"]["mse"]
