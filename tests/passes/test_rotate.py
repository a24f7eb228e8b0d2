import dataclasses

import pytest
import timm
import torch
import torchvision
from torch import nn
from transformers import ViTConfig, ViTModel

from fxquant import FxQuantError, config, convert, export_onnx, patterns, trace
from fxquant.lowering.audit import audit, summary
from fxquant.passes.orthogonal import hadamard, ones_fixing_rotation
from fxquant.passes.rotate import rotate

X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _perturbed(model: nn.Module) -> nn.Module:
    """Random weights with non-trivial LayerNorm gains and biases (and non-zero heads)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.5)
    return model.eval()


def _timm_vit():
    return _perturbed(timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8,
                                        num_classes=10, depth=2, embed_dim=48, num_heads=3))


def _hf_vit():
    return _perturbed(ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=48,
                                         num_hidden_layers=2, num_attention_heads=3,
                                         intermediate_size=96)))


def _torchvision_vit():  # width 36: no Hadamard matrix of that order here, a random orthogonal Q
    return _perturbed(torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=3, hidden_dim=36, mlp_dim=72,
        num_classes=10))


def _outputs(out):
    return [out] if isinstance(out, torch.Tensor) else list(out.values())


def _rotated(model, **options):
    cfg = config.resolve("minmax+rotate")
    cfg = dataclasses.replace(cfg, options={**cfg.options, **options})
    return rotate(trace(model, None, X), cfg, [X])


@pytest.mark.parametrize("make,kind", [(_timm_vit, "hadamard"), (_hf_vit, "hadamard"),
                                       (_torchvision_vit, "random")])
@pytest.mark.parametrize("online", [False, True])
def test_rotated_float_model_equals_the_original(make, kind, online):
    model = make()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gm = _rotated(model, rotate_online=online)
    for got, expected in zip(_outputs(gm(X)), _outputs(model(X))):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=5e-5)
    assert gm.meta["rotation"]["kind"] == kind
    assert gm.meta["rotation"]["online"] == (2 if online else 0)   # one per MLP
    assert gm.meta["rotation"]["values"] == 2                       # one per attention
    lns = [patterns.module_of(gm, n) for n in gm.graph.nodes if patterns.is_layernorm(gm, n)]
    assert len(lns) == 5 and not any(ln.elementwise_affine for ln in lns)
    for key, value in model.state_dict().items():                  # the user's model is untouched
        assert torch.equal(value, before[key]), key


def test_the_stream_is_rotated_not_left_alone():
    model = _timm_vit()
    first_ln = lambda m: next(n for n in m.graph.nodes if patterns.is_layernorm(m, n))  # noqa: E731
    original, rotated = trace(model, None, X), _rotated(model)
    seen = {}
    for name, gm in (("original", original), ("rotated", rotated)):
        ln = first_ln(gm)
        gm.get_submodule(ln.target).register_forward_hook(lambda m, i, o, name=name: seen.update({name: i[0]}))
        gm(X)
    q, _ = ones_fixing_rotation(48, 0)
    torch.testing.assert_close(seen["rotated"], seen["original"] @ q.float(), rtol=1e-5, atol=1e-5)
    assert (seen["rotated"] - seen["original"]).abs().max() > 0.1


def test_value_rotation_changes_only_the_value_rows_of_a_fused_qkv():
    model = _timm_vit()
    with_values, without = _rotated(model), _rotated(model, rotate_values=False)
    qkv = [m.get_submodule("blocks.0.attn.qkv").weight for m in (with_values, without)]
    torch.testing.assert_close(qkv[0][:96], qkv[1][:96], rtol=0, atol=0)      # q and k rows
    assert (qkv[0][96:] - qkv[1][96:]).abs().max() > 1e-2                     # v rows
    proj = [m.get_submodule("blocks.0.attn.proj").weight for m in (with_values, without)]
    assert (proj[0] - proj[1]).abs().max() > 1e-2


@pytest.mark.parametrize("n", [1, 4, 12, 48, 192, 768, 20])
def test_hadamard_matrices(n):
    h = hadamard(n)
    assert torch.equal(h @ h.T, n * torch.eye(n, dtype=h.dtype)) and bool((h[:, 0] == 1).all())


@pytest.mark.parametrize("n", [48, 36])
def test_the_rotation_commutes_with_a_layernorm_without_affine(n):
    q, _ = ones_fixing_rotation(n, 3)
    x = torch.randn(64, n, dtype=torch.float64) * 5 + 3
    ln = nn.LayerNorm(n, elementwise_affine=False, dtype=torch.float64)
    torch.testing.assert_close(q @ q.T, torch.eye(n, dtype=torch.float64))
    torch.testing.assert_close(ln(x @ q), ln(x) @ q)
    assert hadamard(36) is None


def test_suffixes_go_to_the_table_they_belong_to():
    cfg = config.resolve("repq-vit+rotate+recon")
    assert cfg.rewrite == ("rotate",) and cfg.refine == ("recon",)
    assert config.resolve("minmax").rewrite == ()


class _PostLN(nn.Module):
    """BERT-style: residual add, then LayerNorm; the LayerNorm's output is the stream."""

    def __init__(self, d=16):
        super().__init__()
        self.embed, self.ln1, self.ln2 = nn.Linear(8, d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        h = self.ln1(self.embed(x))
        return self.ln2(h + self.mlp(h))


class _NoFinalNorm(nn.Module):
    """A pre-LN block whose stream is the model's output: no LayerNorm to fold into."""

    def __init__(self, d=16):
        super().__init__()
        self.embed, self.ln = nn.Linear(8, d), nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        h = self.embed(x)
        return h + self.mlp(self.ln(h))


@pytest.mark.parametrize("model,message", [
    (_PostLN(), "LayerNorm ln1 writes the residual stream .a post-LN encoder"),
    (_NoFinalNorm(), "is read by output .output., not through a LayerNorm"),
])
def test_refused_models(model, message):
    x = torch.randn(2, 5, 8)
    with pytest.raises(FxQuantError, match=message):
        rotate(trace(model.eval(), None, x), config.resolve("minmax+rotate"), [x])


def test_fully_quantized_recipes_refuse_rotation():
    with pytest.raises(FxQuantError, match="fully quantized"):
        convert(_timm_vit(), [X], "fq-vit+rotate", "w8a8")


def test_unknown_rotate_option_is_refused_before_work():
    cfg = config.resolve("minmax+rotate")
    with pytest.raises(FxQuantError, match="rotate_online"):
        convert(_timm_vit(), [X], dataclasses.replace(cfg, options={"rotate_onlin": True}))


def test_minmax_rotate_w8a8_exports_and_runs_every_linear_on_integer_kernels(tmp_path):
    """export_onnx checks onnxruntime against PyTorch; the online rotation adds one float MatMul
    per MLP (the constant rotation) and leaves the MLP's second Linear an integer kernel."""
    float_ops = {}
    for online in (False, True):
        cfg = config.resolve("minmax+rotate", "w8a8")
        qmodel = convert(_timm_vit(), [X], dataclasses.replace(cfg, options={"rotate_online": online}))
        path = export_onnx(qmodel, tmp_path / f"rotated_{online}.onnx", X)
        float_ops[online] = summary(audit(path))
    assert float_ops[True].get("MatMul", 0) - float_ops[False].get("MatMul", 0) == 2
    assert {k: v for k, v in float_ops[True].items() if k != "MatMul"} == \
        {k: v for k, v in float_ops[False].items() if k != "MatMul"}
