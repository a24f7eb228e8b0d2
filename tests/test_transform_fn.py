"""Data as users hold it: dict batches with labels mapped by transform_fn, one-shot generators."""
import os

import onnx
import torch
from torch import nn

import fxquant
from fxquant import api, calibrate
from fxquant.lowering.runtime import OnnxModule


class _Classifier(nn.Module):
    """Takes keyword inputs like a Hugging Face model; with labels it would also take a loss."""

    def __init__(self):
        super().__init__()
        self.norm, self.fc = nn.LayerNorm(8), nn.Linear(8, 3)

    def forward(self, pixel_values, labels=None):
        logits = self.fc(self.norm(pixel_values)).mean(1)
        return logits if labels is None else (nn.functional.cross_entropy(logits, labels), logits)


def _dict_batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"pixel_values": torch.randn(4, 5, 8, generator=g),
             "labels": torch.randint(0, 3, (4,), generator=g)} for _ in range(n)]


def pixels_only(batch):
    return {"pixel_values": batch["pixel_values"]}


def test_transform_fn_leaves_labels_out_of_the_model_and_the_file(tmp_path):
    batches = _dict_batches(3)
    qmodel = fxquant.convert(_Classifier(), batches, "minmax", transform_fn=pixels_only)
    path = fxquant.export_onnx(qmodel, tmp_path / "m.onnx", batches[0], transform_fn=pixels_only)
    assert [i.name for i in onnx.load(path).graph.input] == ["pixel_values"]
    x = batches[1]["pixel_values"]
    torch.testing.assert_close(OnnxModule(path)(x), qmodel(x), rtol=0, atol=1e-4)
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask     # like any new file, not mkstemp's 0600


def test_a_generator_is_read_once_and_calibration_sees_every_batch(monkeypatch):
    counts = []

    def counting(gm, loader, max_batches=None):
        counts.append(calibrate.calibrate(gm, loader, max_batches))
        return counts[-1]
    monkeypatch.setattr(api, "calibrate", counting)
    batches = _dict_batches(3)
    model = _Classifier()
    from_generator = fxquant.convert(model, (b for b in batches), "repq-vit", transform_fn=pixels_only)
    from_list = fxquant.convert(model, batches, "repq-vit", transform_fn=pixels_only)
    assert counts == [3, 3]
    x = batches[0]["pixel_values"]
    assert torch.equal(from_generator(x), from_list(x))


def test_a_one_batch_generator_works():
    batches = _dict_batches(1)
    qmodel = fxquant.convert(_Classifier(), (b for b in batches), "minmax", transform_fn=pixels_only)
    assert qmodel(batches[0]["pixel_values"]).shape == (4, 3)


def test_file_outputs_are_named_after_the_model_outputs(tmp_path):
    batches = _dict_batches(2)
    qmodel = fxquant.convert(_Classifier(), batches, "minmax", transform_fn=pixels_only)
    path = fxquant.export_onnx(qmodel, tmp_path / "m.onnx", pixels_only(batches[0]))
    assert [o.name for o in onnx.load(path).graph.output] == ["output"]
