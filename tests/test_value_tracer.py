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
