"""Every architecture the same way, as timm tests its models: small random-weight configs from
timm, Hugging Face transformers and torchvision, converted, exported and run in onnxruntime.

Random weights make top-1 agreement noise, so parity is the relative L2 difference of the
outputs, at a batch size neither the calibration (8) nor the export example (2) used.
"""
from collections import Counter
from dataclasses import replace

import onnx
import pytest
import timm
import torch
import torchvision
from torchvision.models import swin_transformer as tv_swin

import fxquant
from fxquant import FxQuantError, config
from fxquant.lowering.runtime import OnnxModule, session

transformers = pytest.importorskip("transformers")

VIT = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
           intermediate_size=64)
SWIN = dict(image_size=32, patch_size=4, embed_dim=16, depths=[2, 1], num_heads=[2, 2], window_size=4)


def _hf(model_class, config_class, **kwargs):
    return model_class(config_class(**kwargs))


def _images(size: int):
    return lambda batch: torch.randn(batch, 3, size, size)


def _tokens(batch: int) -> dict:
    ids = torch.randint(1, 50, (batch, 7))
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def _torchvision_vit():
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2,
                                                 hidden_dim=32, mlp_dim=64, num_classes=10)
    torch.nn.init.normal_(model.heads.head.weight, std=0.2)  # torchvision zeroes the head
    return model


# name -> (model factory, batch of inputs)
ARCHITECTURES = {
    "timm/vit": (lambda: timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1,
                                           num_classes=10), _images(32)),
    "timm/deit_distilled": (lambda: timm.create_model("deit_tiny_distilled_patch16_224", img_size=32,
                                                      patch_size=8, depth=1, num_classes=10), _images(32)),
    "timm/swin": (lambda: timm.create_model("swin_tiny_patch4_window7_224", img_size=32, window_size=4,
                                            embed_dim=16, depths=(2, 1), num_heads=(2, 2),
                                            num_classes=10), _images(32)),
    "timm/pit": (lambda: timm.create_model("pit_ti_224", img_size=64, depth=(1, 1, 1),
                                           num_classes=10), _images(64)),
    "hf/vit": (lambda: _hf(transformers.ViTForImageClassification, transformers.ViTConfig, **VIT,
                           num_labels=10), _images(32)),
    "hf/deit": (lambda: _hf(transformers.DeiTForImageClassification, transformers.DeiTConfig, **VIT,
                            num_labels=10), _images(32)),
    "hf/beit": (lambda: _hf(transformers.BeitForImageClassification, transformers.BeitConfig, **VIT,
                            use_relative_position_bias=True, num_labels=10), _images(32)),
    "hf/dinov2": (lambda: _hf(transformers.Dinov2ForImageClassification, transformers.Dinov2Config,
                              **VIT, num_labels=10), _images(32)),
    "hf/swin": (lambda: _hf(transformers.SwinForImageClassification, transformers.SwinConfig, **SWIN,
                            num_labels=10), _images(32)),
    "hf/swinv2": (lambda: _hf(transformers.Swinv2ForImageClassification, transformers.Swinv2Config,
                              **SWIN, num_labels=10), _images(32)),
    "hf/clip_vision": (lambda: _hf(transformers.CLIPVisionModel, transformers.CLIPVisionConfig, **VIT),
                       _images(32)),
    "hf/bert": (lambda: _hf(transformers.BertModel, transformers.BertConfig, vocab_size=50, hidden_size=32,
                            num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=16), _tokens),
    "torchvision/vit": (_torchvision_vit, _images(32)),
    "torchvision/swin": (lambda: tv_swin.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 1],
                                                         num_heads=[2, 2], window_size=[4, 4],
                                                         num_classes=10), _images(32)),
    "torchvision/swin_v2": (lambda: tv_swin.SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[2, 1], num_heads=[2, 2], window_size=[4, 4], num_classes=10,
        block=tv_swin.SwinTransformerBlockV2, downsample_layer=tv_swin.PatchMergingV2), _images(32)),
}
ONE_PER_ECOSYSTEM = ["timm/vit", "hf/vit", "torchvision/vit"]
# Reconstruction and the CPT-V search on fixed, short schedules: structure, not accuracy.
SHORT = {"recon_iters": 4, "recon_max_seconds": None, "cptv_passes": 1, "cptv_cycles": 1,
         "cptv_population": 4, "cptv_max_seconds": None}
# TSPTQ-ViT's V-2SF attention probabilities are int16 codes on the fine grid: onnxruntime has no
# int16 x uint8 MatMul kernel, so A·V runs as a float MatMul of the dequantized values (exact).
FLOAT_MATMULS_PER_ATTENTION = {"tsptq-vit": 1}
# At W8A8 a quantized model stays near its float model; a broken quantizer does not.
W8A8_FLOAT_DIFFERENCE = 0.25


def _model(name: str):
    torch.manual_seed(0)
    factory, inputs = ARCHITECTURES[name]
    return factory().eval(), inputs


def _relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def _named(outputs, name: str) -> torch.Tensor:
    """The output the ONNX file lists first, from the model's tensor, tuple or dict output."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    return outputs[name] if isinstance(outputs, dict) else outputs[0]


def _attentions(qmodel) -> int:
    return sum(fxquant.patterns.is_softmax(qmodel, n) for n in qmodel.graph.nodes)


def _online_rotations(qmodel) -> int:
    """x @ R by a constant R (repq-vit-rot, +rotate's online option): a float MatMul by design."""
    return sum(n.target is torch.matmul and n.args[1].op == "get_attr" for n in qmodel.graph.nodes)


def _run(batch, fn):
    return fn(**batch) if isinstance(batch, dict) else fn(batch)


def _check(name: str, recipe, bits: str | None, tmp_path):
    model, inputs = _model(name)
    qmodel = fxquant.convert(model, [inputs(8), inputs(8)], recipe, bits)
    assert qmodel.float_parts == ()  # every Linear, Conv2d and attention product is quantized
    path = fxquant.export_onnx(qmodel, tmp_path / "q.onnx", inputs(2))
    session(path, optimized_path=tmp_path / "optimized.onnx")
    ops = Counter(n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node)
    float_matmuls = (FLOAT_MATMULS_PER_ATTENTION.get(qmodel.config.name, 0) * _attentions(qmodel)
                     + _online_rotations(qmodel))
    assert ops["MatMul"] == float_matmuls and ops["Gemm"] == 0, ops  # products on integer kernels
    onnx_model = OnnxModule(path)
    output = onnx_model.session.get_outputs()[0].name
    batch = inputs(3)
    with torch.no_grad():
        quantized, floating = _named(_run(batch, qmodel), output), _named(_run(batch, model), output)
    assert _relative_l2(_run(batch, onnx_model), quantized) < qmodel.config.export_tolerance
    return _relative_l2(quantized, floating)


# Swin V2's cosine attention multiplies the scores by a learnt scale (up to 100) before the
# Softmax; at 4 bits onnxruntime's output lands 0.11-0.31 from PyTorch's (relative L2) here
# (minmax in both ecosystems, repq-vit in Hugging Face's; torchvision's repq-vit passes), and the
# export's self-check refuses the minmax files. Open: where the two runtimes part. Not strict: the
# float kernels, hence the .5 ties, differ between CPU kinds.
SWIN_V2_W4A4 = pytest.mark.xfail(strict=False, reason="Swin V2 at W4A4: onnxruntime disagrees with PyTorch")
# The default suite runs minmax W8A8 (int8 weights, uniform grids) and repq-vit W4A4 (int4 weights,
# the fold, log√2 attention); the other two cells of each architecture take the same passes and the
# same lowering as one of those, and run with `-m slow`, to keep the suite under 15 minutes.
SLOW_CELLS = {("minmax", "w4a4"), ("repq-vit", "w8a8")}


SWIN_V2_W4A4_CELLS = {("hf/swinv2", "minmax", "w4a4"), ("hf/swinv2", "repq-vit", "w4a4"),
                      ("torchvision/swin_v2", "minmax", "w4a4")}


def _matrix():
    for name in ARCHITECTURES:
        for recipe in ("minmax", "repq-vit"):
            for bits in ("w8a8", "w4a4"):
                marks = [pytest.mark.slow] if (recipe, bits) in SLOW_CELLS else []
                marks += [SWIN_V2_W4A4] if (name, recipe, bits) in SWIN_V2_W4A4_CELLS else []
                yield pytest.param(name, recipe, bits, marks=marks)


@pytest.mark.parametrize("name,recipe,bits", _matrix())
def test_architecture_converts_exports_and_agrees(name, recipe, bits, tmp_path):
    difference = _check(name, recipe, bits, tmp_path)
    if bits == "w8a8":
        assert difference < W8A8_FLOAT_DIFFERENCE


# Only Hugging Face's cells run by default: tests/test_golden.py runs the recipes but repq-vit-mlp
# and repq-vit-rot on a timm ViT (some cells with `-m slow`), in PyTorch and onnxruntime, and the
# matrix above runs torchvision's ViT through both lowering paths; the timm and torchvision cells
# run with `-m slow` (the suite's 15 minutes), and repq-vit-mlp's too: repq-vit-rot runs its
# passes and more.
@pytest.mark.parametrize("recipe", ["repq-vit-sym", pytest.param("repq-vit-mlp", marks=pytest.mark.slow),
                                    "repq-vit-rot", "fq-vit", "tsptq-vit", "dopq-vit", "repq-vit+cpt-v"])
@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n.startswith("hf/") else [pytest.mark.slow])
                                  for n in ONE_PER_ECOSYSTEM])
def test_every_recipe_on_one_architecture_per_ecosystem(name, recipe, tmp_path):
    cfg = config.resolve(recipe)
    cfg = replace(cfg, options={**cfg.options, **SHORT})
    if recipe.endswith("cpt-v") and name.startswith("hf/"):  # its loss reads a logits tensor
        with pytest.raises(FxQuantError, match="cpt-v needs a model that returns one tensor"):
            _check(name, cfg, cfg.suggested_bits[0], tmp_path)
        return
    _check(name, cfg, cfg.suggested_bits[0], tmp_path)


@pytest.mark.slow
def test_torchvision_vit_b_16_runs_every_attention_product_on_integer_kernels(tmp_path):
    """The issue's case at full size (random weights): nn.MultiheadAttention is quantized like any
    attention and the file is a quarter of the float one. `test_architecture_converts_exports_
    and_agrees[torchvision/vit-...]` covers the same path on a small config in the default suite."""
    model = torchvision.models.vit_b_16().eval()
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    images = torch.randn(2, 3, 224, 224)
    qmodel = fxquant.convert(model, [images], "minmax", "w8a8")
    assert qmodel.float_parts == ()
    path = fxquant.export_onnx(qmodel, tmp_path / "q.onnx", images)
    session(path, optimized_path=tmp_path / "optimized.onnx")
    ops = Counter(n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node)
    assert ops["MatMul"] == 0 and ops["Gemm"] == 0, ops
    float_bytes = sum(p.numel() * 4 for p in model.parameters())
    print(f"vit_b_16: ONNX {path.stat().st_size / 1e6:.1f} MB, float weights {float_bytes / 1e6:.1f} MB, "
          f"{path.stat().st_size / float_bytes:.3f}x; optimized graph {dict(ops)}")
    assert path.stat().st_size < 0.3 * float_bytes
