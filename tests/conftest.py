import pytest
import torch

from fxquant import zoo
from fxquant.data import image_loader, load_npz


@pytest.fixture(scope="session")
def ref():
    return zoo.load_model(zoo.REFERENCE_NAME)


def _loader(ref, path, n, batch_size=32):
    x, y = load_npz(path, n)
    return image_loader(x, y, ref.mean, ref.std, ref.input_size, batch_size)


@pytest.fixture(scope="session")
def calib_loader(ref):
    return _loader(ref, zoo.BUNDLED_CALIB, 64)


@pytest.fixture(scope="session")
def test_loader(ref):
    return _loader(ref, zoo.BUNDLED_TEST, 256, batch_size=128)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
