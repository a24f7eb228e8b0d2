import pytest
import torch
from torch import nn


class _Masked(nn.Module):
    """Attention over tokens with a padding mask (1 = token, 0 = padding), as text encoders take it."""

    def __init__(self, d=16):
        super().__init__()
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x, attention_mask):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        bias = (1.0 - attention_mask[:, None, :].float()) * -1e9
        return x + self.proj(((q @ k.transpose(-2, -1)) * 0.25 + bias).softmax(-1) @ v)


@pytest.fixture
def padded_attention():
    """A function pad_value -> (model, batch): 32 samples of 4-12 tokens padded to 12, the
    padding tokens' inputs pad_value x N(0, 1) (the same draw for every pad_value)."""
    def make(pad_value: float):
        g = torch.Generator().manual_seed(0)
        mask = (torch.arange(12) < torch.randint(4, 12, (32, 1), generator=g)).long()
        x = torch.randn(32, 12, 16, generator=g) * 2
        x = torch.where(mask[..., None].bool(), x, pad_value * torch.randn(32, 12, 16, generator=g))
        torch.manual_seed(0)
        return _Masked(), {"x": x, "attention_mask": mask}
    return make
