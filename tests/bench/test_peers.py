import pytest
import torch

from fxquant.bench.fp32_onnx import export_float_onnx
from fxquant.bench.peers import PEERS, PeerInputs

PEER_NEEDS = {"nncf": "nncf", "nncf-torch": "nncf", "torchao-pt2e-x86": "torchao",
              "quark-minmse-sq": "quark"}
# One of each builder (the other onnxruntime static entries differ only in method and bits).
FAST = {("ort-static-minmax", "w8a8"), ("ort-static-entropy", "w4a4"),
        ("ort-static-minmax-allops", "w8a8"), ("ort-dynamic", "w8a8"), ("nncf", "w8a8"),
        ("nncf-torch", "w8a8"), ("torchao-pt2e-x86", "w8a8"), ("torch-ao-fx-x86", "w8a8"),
        ("quark-minmse-sq", "w8a8")}


@pytest.fixture(scope="module")
def inputs(ref, calib_loader, tmp_path_factory):
    """The reference ViT, its FP32 ONNX and 32 calibration images."""
    workdir = tmp_path_factory.mktemp("peers")
    calib = [x for x, _ in calib_loader][:1]
    fp32 = export_float_onnx(ref.model, workdir / "fp32.onnx", calib[0][:1])
    return PeerInputs(ref.model, fp32, calib, workdir)


def test_fast_set_names_real_peers():
    assert FAST <= {(p.name, p.bits) for p in PEERS}


@pytest.mark.parametrize("peer", [p for p in PEERS if (p.name, p.bits) in FAST],
                         ids=lambda p: f"{p.name}-{p.bits}")
def test_peer_quantizes_the_model(inputs, test_loader, peer):
    if peer.name in PEER_NEEDS:
        pytest.importorskip(PEER_NEEDS[peer.name])
    x = next(iter(test_loader))[0][:64]
    with torch.no_grad():
        reference = inputs.model(x).argmax(-1)
        quantized = torch.as_tensor(peer.build(inputs)(x))
    assert quantized.shape == (64, 10) and torch.isfinite(quantized).all()
    agree = (quantized.argmax(-1) == reference).float().mean()
    if peer.bits == "w8a8":  # 8 bits keep the float model's predictions
        assert agree >= 0.9
