import torch
from torch import nn

from fxquant import trace


def test_dropout_and_identity_are_removed():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Identity(), nn.GELU())
    gm = trace(model)
    assert [type(m) for _, m in gm.named_children()] == [nn.Linear, nn.GELU]
    x = torch.randn(3, 4)
    torch.testing.assert_close(gm(x), model.eval()(x))
