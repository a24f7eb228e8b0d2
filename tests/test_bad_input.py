"""Bad input to the command line or to convert: one line naming the problem, exit code 2, nothing
written, and no minutes spent first."""
from dataclasses import replace

import pytest
import timm
import torch
from torch import nn

import fxquant
from fxquant import FxQuantError, roles, workload, zoo
from fxquant.cli import main
from fxquant.config import RECIPES, RoleSpec


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    """An empty working directory, where the default ONNX file would go."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _refused(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fxquant: error: ") and err.count("\n") == 1, err
    assert message in err, err


def _no_loading(monkeypatch):
    def load(args):
        raise AssertionError("the model and the images were loaded before --out was checked")
    monkeypatch.setattr(workload, "from_args", load)


def test_out_naming_a_directory_is_refused_before_loading(capsys, cwd, monkeypatch):
    _no_loading(monkeypatch)
    _refused(capsys, ["--out", str(cwd)], f"cannot write {cwd}: it is a directory")
    assert list(cwd.iterdir()) == []


def test_out_in_a_missing_directory_is_refused_before_loading(capsys, cwd, monkeypatch):
    _no_loading(monkeypatch)
    out = cwd / "missing" / "model.onnx"
    _refused(capsys, ["--out", str(out)], f"directory {out.parent} does not exist")
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize("options, message", [
    (["recon_itres=5"], "unknown option 'recon_itres': did you mean 'recon_iters'?"),
    (["recon_iters=-1"], "option recon_iters=-1 is not allowed: it must be an int >= 1"),
])
def test_a_wrong_pass_option_is_refused_before_loading(capsys, cwd, monkeypatch, options, message):
    _no_loading(monkeypatch)
    _refused(capsys, ["--recipe", "repq-vit+recon", "--option", *options], message)
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--calib", "-1"], "--calib must be at least 1, got -1"),
    (["--calib", "0"], "--calib must be at least 1, got 0"),
    (["--eval", "-1"], "--eval must be 0 (no evaluation) or more, got -1"),
])
def test_a_count_that_cannot_work_is_refused(capsys, cwd, argv, message):
    _refused(capsys, argv, message)
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize("option", ["--calib-data", "--test-data"])
def test_a_folder_without_images_is_named(capsys, cwd, option):
    (cwd / "images").mkdir()
    _refused(capsys, [option, str(cwd / "images"), "--calib", "8"], f"folder {cwd / 'images'} holds no images")
    assert [p.name for p in cwd.iterdir()] == ["images"]


def _checkpoint(path, arch, kwargs, state_dict):
    torch.save({"arch": arch, "kwargs": kwargs, "state_dict": state_dict}, path)
    return str(path)


def test_a_checkpoint_that_does_not_fit_its_arch_names_the_first_key(capsys, cwd):
    ref = torch.load(zoo.REFERENCE_CHECKPOINT, map_location="cpu", weights_only=False)
    path = _checkpoint(cwd / "ref100.pth", ref["arch"], {**ref["kwargs"], "num_classes": 100},
                       ref["state_dict"])
    _refused(capsys, ["--model", path, "--eval", "0"],
             f"checkpoint {path} does not fit {ref['arch']}")
    _refused(capsys, ["--model", path, "--eval", "0"],
             ": head.weight has shape (10, 192), the model's is (100, 192)")
    assert [p.name for p in cwd.iterdir()] == ["ref100.pth"]


def test_a_checkpoint_of_an_unknown_arch_is_refused(capsys, cwd):
    path = _checkpoint(cwd / "nope.pth", "no_such_net", {}, {})
    _refused(capsys, ["--model", path, "--eval", "0"], f"checkpoint {path}: timm cannot build 'no_such_net'")


def test_a_non_vit_checkpoint_takes_its_input_size_from_timm(capsys, cwd):
    model = timm.create_model("resnet10t", num_classes=10)
    path = _checkpoint(cwd / "resnet.pth", "resnet10t", {"num_classes": 10}, model.state_dict())
    assert zoo.load_model(path).input_size == model.pretrained_cfg["input_size"][-1] == 176
    assert main(["--model", path, "--calib", "8", "--batch-size", "8", "--eval", "0", "--no-onnx"]) == 0


def _model():
    return nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 4))


def test_an_unknown_observer_method_fails_before_calibration():
    cfg = RECIPES["minmax"]
    cfg = replace(cfg, roles={**cfg.roles, roles.WEIGHT: RoleSpec(observer="entropy", bits="w")})
    # an empty loader would fail in calibration ("calibration loader is empty"): this fails first
    with pytest.raises(FxQuantError, match="^unknown observer method 'entropy' for role weight: "
                                           "use one of minmax, percentile, mse$"):
        fxquant.convert(_model(), [], cfg)


def test_a_config_that_is_neither_a_name_nor_a_quantconfig_is_refused():
    with pytest.raises(FxQuantError, match="^config must be a recipe name or a QuantConfig, not "
                                           "NoneType: choose one of") as raised:
        fxquant.convert(_model(), [torch.randn(4, 8)], config=None)
    assert "\n" not in str(raised.value)


def test_gptq_before_reconstruction_is_refused_and_after_it_is_allowed():
    # an empty loader would fail in calibration: the refusal comes first
    with pytest.raises(FxQuantError, match=r"^\+gptq before \+recon has no effect: "):
        fxquant.convert(_model(), [], "repq-vit+gptq+recon")
    for recipe in ("dopq-vit+gptq", "repq-vit+recon+gptq"):
        with pytest.raises(FxQuantError, match="calibration loader is empty"):
            fxquant.convert(_model(), [], recipe)
