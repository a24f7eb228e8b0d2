import os

import pytest
import torch

from fxquant import zoo
from fxquant.data import image_loader, load_npz


def pytest_configure(config):
    """Under pytest-xdist (one worker per core) each worker computes on one thread: with two
    threads in each of two workers on 2 cores, tests ran up to 4x slower than alone."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"   # the subprocesses tests start (CLI runs, examples)


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
