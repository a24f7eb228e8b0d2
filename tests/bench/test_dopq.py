import json

from fxquant import zoo
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
    assert all(0 <= r["top1"] <= 1 and r["recon_seconds"] is None for r in result["rows"])
    assert all(r["parity"]["images"] == 8 and 0 <= r["parity"]["top1_agreement"] <= 1
               for r in result["rows"])
