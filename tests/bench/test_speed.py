import json

from fxquant.bench.speed import LABELS
from fxquant.cli import main


def test_speed_times_every_model_of_the_table_at_each_batch(capsys):
    assert main(["bench", "speed", "--calib", "4", "--batches", "1", "2", "--repeats", "2",
                 "--warmup", "1", "--threads", "1", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert result["model"] == "ref-vit" and result["threads"] == 1
    assert result["cpu_model"] and isinstance(result["full_range_int8_exact"], bool)
    assert [row["batch"] for row in result["batches"]] == [1, 2]
    for row in result["batches"]:
        assert all(row[f"{key}_ms"] > 0 for key in LABELS)
        assert row["speedup_vs_fp32"] == row["fp32_ms"] / row["fxquant_w8a8_ms"]
        ceiling = row["int8_ceiling"]
        assert ceiling["batch"] == row["batch"] and ceiling["u8s8_speedup"] > 0
        assert ceiling["shapes"][0]["m"] == row["batch"] * 65  # ref-vit: 64 patches + class token
    # int8 weights: about a quarter of the float file; int4 weights: smaller still
    assert result["fxquant_w8a8_mb"] < 0.4 * result["fp32_mb"]
    assert result["fxquant_w4a8_mb"] < result["fxquant_w8a8_mb"]
    assert f"CPU: {result['cpu_model']}" in "\n".join(out)
