import pytest
import torch
from torch import nn

from fxquant import FxQuantError, trace


class _Heads(nn.Module):
    """Branches on a size, unpacks a shape, reads a dtype: what mask builders and HF attention do."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        h = self.proj(x).view(*x.shape[:-1], 2, -1)
        if x.shape[-2] > 1:
            h = h.softmax(-2)
        return h.reshape(*x.shape[:-1], -1) + torch.finfo(x.dtype).eps


class _DataBranch(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


def test_size_branches_trace_with_an_example_and_sizes_stay_symbolic():
    model = _Heads()
    with pytest.raises(FxQuantError):
        trace(model)
    gm = trace(model, example_inputs=torch.randn(2, 5, 8))
    for shape in [(2, 5, 8), (3, 7, 8)]:  # another batch and length than the example's
        x = torch.randn(shape)
        torch.testing.assert_close(gm(x), model(x))


def test_branches_on_data_still_fail():
    with pytest.raises(FxQuantError, match="control flow"):
        trace(_DataBranch(), example_inputs=torch.randn(2, 3))


class _IndexTable(nn.Module):
    """Builds an index table from sizes with int() and in-place writes (Hugging Face BEiT's
    relative position index), then reads a parameter through it."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(16))

    def forward(self, x):
        n = int(x.shape[-1] // 2)
        index = torch.zeros(n, n, dtype=torch.long)
        index[1:, 1:] = torch.arange((n - 1) * (n - 1)).view(n - 1, n - 1)
        return x[..., :n] + self.table[index].sum(-1)


def test_sizes_as_python_ints_and_in_place_writes_trace():
    model, x = _IndexTable(), torch.randn(2, 3, 8)
    gm = trace(model, None, x)
    torch.testing.assert_close(gm(x), model(x))
    torch.testing.assert_close(gm(torch.randn(5, 3, 8)).shape, torch.Size([5, 3, 4]))


class _CachesASize(nn.Module):
    """Caches a size on itself while running (Hugging Face Swin's window size does this)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.window = 100

    def forward(self, x):
        self.window = min(self.window, x.shape[1])
        return self.proj(x)[:, :self.window]


def test_tracing_leaves_the_users_modules_as_they_were():
    model = _CachesASize()
    trace(model, None, torch.randn(2, 4, 8))
    assert model.window == 100
