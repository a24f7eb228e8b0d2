import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from fxquant import FxQuantError, trace
from fxquant.patterns import is_softmax

TIMM_MODELS = ["vit_tiny_patch16_224", "vit_small_patch16_224", "deit_tiny_patch16_224",
               "deit_small_distilled_patch16_224", "swin_tiny_patch4_window7_224"]


def _assert_traced_equal(model, x):
    gm = trace(model)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x), rtol=1e-4, atol=1e-4)
    return gm


@pytest.mark.parametrize("name", TIMM_MODELS)
def test_timm_model_traces_to_the_same_function(name):
    model = timm.create_model(name, pretrained=False).eval()
    gm = _assert_traced_equal(model, torch.randn(2, 3, 224, 224))
    ops = {n.target for n in gm.graph.nodes}
    assert F.scaled_dot_product_attention not in ops
    assert sum(is_softmax(gm, n) for n in gm.graph.nodes) == 12
    assert not any(isinstance(m, (nn.Dropout, nn.Identity)) for m in gm.modules())


def test_reference_vit_traces_to_the_same_function(ref):
    _assert_traced_equal(ref.model, torch.randn(4, 3, 32, 32))


@pytest.mark.parametrize("fused", [True, False])
def test_attention_is_decomposed_whatever_timm_fused_attn_says(fused):
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2).eval()
    for block in model.blocks:
        block.attn.fused_attn = fused
    gm = _assert_traced_equal(model, torch.randn(2, 3, 32, 32))
    assert sum(is_softmax(gm, n) for n in gm.graph.nodes) == 2


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(4, 4), _DataDependent())

    def forward(self, x):
        return self.inner(x)


class _DataDependent(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # control flow on values cannot be traced
            return x
        return -x


def test_untraceable_model_error_names_the_failing_module():
    with pytest.raises(FxQuantError, match=r"inner\.1.*_DataDependent"):
        trace(_Untraceable())


def test_trace_rejects_a_non_module():
    with pytest.raises(TypeError, match="nn.Module"):
        trace(lambda x: x)
