import argparse
import json

import pytest

from fxquant import workload, zoo
from fxquant.bench import cpt_v
from fxquant.cli import main
from fxquant.errors import FxQuantError


class _Guarded:
    """A loader that refuses to be read while `armed`."""

    def __init__(self, loader):
        self.loader, self.armed = loader, False

    def __iter__(self):
        assert not self.armed, "the search read the evaluation loader"
        return iter(self.loader)


def test_bench_searches_without_the_test_images(tmp_path, capsys, monkeypatch):
    guards, searched = [], []
    from_args, search = workload.from_args, cpt_v.contrastive_search

    def guarded_workload(args):
        work = from_args(args)
        work.test = _Guarded(work.test)
        guards.append(work.test)
        return work

    def guarded_search(gm, cfg, calib):
        assert calib is not guards[0] and calib is not guards[0].loader
        guards[0].armed = True
        try:
            searched.append(search(gm, cfg, calib))
        finally:
            guards[0].armed = False
        return searched[-1]

    monkeypatch.setattr(workload, "from_args", guarded_workload)
    monkeypatch.setattr(cpt_v, "contrastive_search", guarded_search)
    argv = ["bench", "cpt-v", "--recipes", "minmax", "--bits", "w4a4", "--seeds", "0", "--max-seconds", "0",
            "--calib", "32", "--eval", "32", "--parity-images", "16", "--calib-data", str(zoo.BUNDLED_CALIB),
            "--test-data", str(zoo.BUNDLED_TEST), "--out-dir", str(tmp_path), "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    [row] = result["results"]
    [run] = row["runs"]
    assert len(searched) == 1 and run["images"] == {"search": 26, "holdout": 6}
    assert run["stopped_by_budget"] and run["evaluations"] == 0   # no budget: the model as it was
    assert run["after_top1"] == row["before_top1"] and row["gain_pp_mean"] == run["gain_pp"] == 0
    assert run["parity"]["images"] == 32  # whole batches: the one batch of 32
    assert run["parity"]["top1_agreement"] >= 31 / 32   # onnxruntime agrees on all but one image
    assert (tmp_path / "cpt_v_loss.png").stat().st_size > 0
    assert json.loads((tmp_path / "cpt_v.json").read_text())["results"][0]["before_top1"] == row["before_top1"]
    assert "| minmax | W4A4 |" in (tmp_path / "cpt_v.md").read_text()


def test_configs_name_recipe_bits_pairs():
    parser = argparse.ArgumentParser()
    cpt_v.add_arguments(parser)
    pairs = cpt_v._pairs(parser.parse_args(["--configs", "repq-vit:w4a4", "fq-vit:w8a8attn4"]))
    assert pairs == [("repq-vit", "w4a4"), ("fq-vit", "w8a8attn4")]
    assert cpt_v._pairs(parser.parse_args(["--bits", "w3a3"])) == [("repq-vit", "w3a3"), ("fq-vit", "w3a3")]
    with pytest.raises(FxQuantError, match="recipe:bits"):
        cpt_v._pairs(parser.parse_args(["--configs", "repq-vit-w4a4"]))
    with pytest.raises(FxQuantError, match="unknown recipe"):
        cpt_v._pairs(parser.parse_args(["--configs", "nope:w4a4"]))
