"""`fxquant sweep` on a local Ray instance: every cell is `fxquant quantize` run alone, a failed
cell is listed while the others finish, and a sweep killed half-way and restarted redoes no
finished cell."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from fxquant import quantize_command
from fxquant.cli import build_parser, main
from fxquant.sweep.command import run as sweep

DATA = ["--calib", "32", "--eval", "64"]
RECIPES = ["minmax", "repq-vit"]
BITS = ["w8a8", "w4a4"]
MEASURED = ("_seconds", "_mb", "_path")  # time, memory and file names differ between any two runs


def _sweep_args(*argv):
    argv = ["sweep", *argv]
    return build_parser(argv).parse_args(argv)


def _files(folder):
    """Each finished cell's file and its (inode, mtime): a redone cell gets a new file."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("*.json")}


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    threads = torch.get_num_threads()  # `fxquant quantize --threads 1` sets them for the process
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """2 recipes x 2 bit-widths and a recipe that does not exist, on 2 local workers: killed (the
    process group, Ray included) once its first cell is kept, then restarted to the end."""
    folder = tmp_path_factory.mktemp("sweep")
    argv = ["--recipes", *RECIPES, "nope", "--bits", *BITS, "--workers", "2",
            "--results", str(folder), *DATA]
    killed_sweep = subprocess.Popen([sys.executable, "-m", "fxquant.cli", "sweep", *argv],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
    deadline = time.monotonic() + 600
    while not _files(folder) and killed_sweep.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if killed_sweep.poll() is None:
        os.killpg(killed_sweep.pid, signal.SIGKILL)
    killed_sweep.wait()
    killed = _files(folder)
    return folder, killed, sweep(_sweep_args(*argv))


def _cells():
    """Every cell; the two whose recipe and bit-width both differ run by default, the other two
    (the same code paths) with `-m slow`."""
    for recipe in RECIPES:
        for bits in BITS:
            slow = (recipe, bits) not in {("minmax", "w8a8"), ("repq-vit", "w4a4")}
            yield pytest.param(recipe, bits, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("recipe,bits", _cells())
def test_every_cell_equals_fxquant_quantize_run_alone(swept, tmp_path, recipe, bits):
    _, _, result = swept
    (cell,) = [r for r in result["results"] if (r["recipe"], r["bits"]) == (recipe, bits)]
    argv = ["--recipe", recipe, "--bits", bits, *DATA, "--threads", "1",
            "--out", str(tmp_path / "alone.onnx")]
    q = build_parser(["quantize", *argv]).parse_args(["quantize", *argv])
    alone = quantize_command.run(q)
    assert cell.keys() == alone.keys()
    assert {k: v for k, v in cell.items() if not k.endswith(MEASURED)} == \
           {k: v for k, v in alone.items() if not k.endswith(MEASURED)}
    assert cell["onnx_top1"] is not None and os.path.isfile(cell["onnx_path"])


def test_a_failed_cell_is_listed_and_the_others_finish(swept):
    folder, _, result = swept
    assert sorted((r["recipe"], r["bits"]) for r in result["results"]) == \
           sorted((r, b) for r in RECIPES for b in BITS)
    assert [(e["recipe"], e["bits"]) for e in result["errors"]] == [("nope", b) for b in BITS]
    assert all("unknown recipe 'nope'" in e["error"] for e in result["errors"])
    assert len(_files(folder)) == 4  # a failed cell is not kept: a restart tries it again


def test_a_finished_sweep_rerun_prints_its_table_and_json_without_redoing_a_cell(swept, capsys):
    folder, _, result = swept
    before = _files(folder)
    assert main(["sweep", "--recipes", *RECIPES, "--bits", *BITS, "--workers", "2",
                 "--results", str(folder), *DATA, "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1]) == {"results": result["results"], "errors": []}
    assert out[0].startswith("| model | recipe | bits |") and len(out) == 2 + 4 + 1
    assert _files(folder) == before


def test_a_sweep_killed_half_way_and_restarted_redoes_no_finished_cell(swept):
    folder, killed, result = swept
    assert 0 < len(killed) < 4, "the sweep was not killed half-way"
    after = _files(folder)
    assert len(after) == 4 and {k: after[k] for k in killed} == killed
