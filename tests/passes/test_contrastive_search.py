import copy
from dataclasses import replace

import pytest
import torch
from torch import nn

import fxquant
from fxquant import FxQuantError, annotation, config, pipeline, roles
from fxquant.lowering.parity import onnx_output
from fxquant.passes.contrastive_search import contrastive_loss, contrastive_search
from fxquant.passes.float_reference import float_reference
from fxquant.quantizers.uniform import quantize_codes


class _Attention(nn.Module):
    def __init__(self, d, heads=2):
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        a = (q @ k.transpose(-2, -1) * 0.25).softmax(-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, d))


class _ToyViT(nn.Module):
    """Conv patches + position, two pre-norm blocks (attention, MLP), mean-pooled head."""

    def __init__(self, d=16, depth=2):
        super().__init__()
        self.patch, self.pos = nn.Conv2d(3, d, 4, 4), nn.Parameter(torch.randn(1, 4, d) * 0.1)
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(2 * depth + 1))
        self.attns = nn.ModuleList(_Attention(d) for _ in range(depth))
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
                                  for _ in range(depth))
        self.head = nn.Linear(d, 8)

    def forward(self, images):
        x = self.patch(images).flatten(2).transpose(1, 2) + self.pos
        for i, (attn, mlp) in enumerate(zip(self.attns, self.mlps)):
            x = x + attn(self.norms[2 * i](x))
            x = x + mlp(self.norms[2 * i + 1](x))
        return self.head(self.norms[-1](x).mean(1))


_FAST = {"cptv_scales": "attention", "cptv_passes": 2, "cptv_batch_size": 16, "cptv_holdout": 0.25}


def _setup(spoil=1.0, **options):
    """A quantized toy; `spoil` scales every uniform scale up (codes re-rounded) for the search to undo."""
    torch.manual_seed(0)
    model, calib = _ToyViT(), [torch.randn(16, 3, 8, 8) for _ in range(4)]
    cfg = replace(config.resolve("minmax", "w3a4"), options={**_FAST, **options})
    qmodel = fxquant.convert(model, calib, cfg)
    for node in qmodel.graph.nodes:
        if annotation.of(node).float_weight is not None:
            codes, scale, zero_point = (getattr(qmodel, a.target) for a in node.args[1].args[:3])
            scale.mul_(spoil)
            codes.copy_(quantize_codes(annotation.of(node).float_weight, scale, zero_point, -4, 3, 0))
        elif node.target is torch.ops.fxquant.fake_quant.default:
            getattr(qmodel, node.args[1].target).mul_(spoil)
    return calib, cfg, qmodel


def _buffers(gm):
    return {k: v.clone() for k, v in gm.named_buffers()}


def test_loss_matches_the_worked_example():
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    q = torch.tensor([[0.9, 0.1], [0.1, 0.9], [-1.0, 0.1]])
    assert contrastive_loss(q, f, 3.0) == pytest.approx(5.04, abs=0.01)
    assert contrastive_loss(f, f, 3.0) < contrastive_loss(q, f, 3.0)


def test_search_lowers_the_loss_and_keeps_every_quantizer_valid():
    calib, cfg, qmodel = _setup(spoil=1.5, cptv_noise=0.1, cptv_holdout=0)
    structure, before = [(n.op, str(n.target)) for n in qmodel.graph.nodes], _buffers(qmodel)
    x = torch.cat(calib)
    with torch.no_grad():
        reference = float_reference(qmodel)(x)
    contrastive_search(qmodel, cfg, calib)
    with torch.no_grad():                                       # the float weights are untouched
        assert torch.equal(float_reference(qmodel)(x), reference)
    record, after = qmodel.meta["cpt-v"], dict(qmodel.named_buffers())
    assert record["final_loss"] < record["start_loss"]
    assert len(record["history"]) == 2 * 2 * 3                 # passes x attention branches x cycles
    assert [(n.op, str(n.target)) for n in qmodel.graph.nodes] == structure
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    searched = {s for names in record["searched"].values() for s in names}
    assert searched == {f"attns_{i}_{layer}_weight_scale" for i in (0, 1) for layer in ("qkv", "proj")}
    assert {k for k in changed if k.endswith("_scale")} <= searched   # not the patch conv, not MLPs
    assert any(k.endswith("_scale") for k in changed)
    assert all(k.endswith(("_weight_scale", "_weight_codes")) for k in changed)
    for node in qmodel.graph.nodes:                             # codes = rounding under new scales
        if annotation.of(node).float_weight is not None:
            codes, scale, zero_point = (getattr(qmodel, a.target) for a in node.args[1].args[:3])
            assert torch.equal(codes.int(), quantize_codes(annotation.of(node).float_weight, scale,
                                                           zero_point, -4, 3, 0))


def test_the_held_out_calibration_images_pick_the_result():
    calib, cfg, qmodel = _setup(spoil=1.5, cptv_noise=0.1)
    contrastive_search(qmodel, cfg, calib)
    record = qmodel.meta["cpt-v"]
    states = [(record["start_judge"], record["start_loss"])] + [(v["judge"], v["loss"]) for v in record["visits"]]
    assert record["images"] == {"search": 48, "holdout": 16}
    assert (record["final_judge"], record["final_loss"]) == min(states, key=lambda s: s[0])
    assert record["visits"][-1]["loss"] < record["start_loss"]     # the search loss did go down


def test_all_scales_keep_zero_points_and_dtypes_and_export_the_searched_values():
    calib, cfg, qmodel = _setup(spoil=1.5, cptv_scales="all", cptv_passes=1, cptv_noise=0.2,
                                cptv_holdout=0)
    before, x = _buffers(qmodel), torch.cat(calib)
    with torch.no_grad():
        out_before = qmodel(x)
    contrastive_search(qmodel, cfg, calib)
    after = dict(qmodel.named_buffers())
    assert any(not torch.equal(before[k], after[k]) for k in before
               if k.startswith("observer") and k.endswith("_scale"))
    for k, v in after.items():
        assert v.dtype == before[k].dtype
        if k.endswith("zero_point"):
            assert torch.equal(v, before[k])
        if k.endswith("_scale"):
            assert (v > 0).all()
    with torch.no_grad():
        out_after = qmodel(x)
    onnx = onnx_output(qmodel, x[:1], x)         # the export carries the searched scales and codes
    assert (onnx - out_after).abs().mean() < 0.2 * (out_after - out_before).abs().mean()


def test_a_scale_another_op_reads_is_left_alone():
    calib, cfg, qmodel = _setup(cptv_scales="all", cptv_passes=0)
    softmax_quant = next(n for n in qmodel.graph.nodes if annotation.of(n).role == roles.POST_SOFTMAX
                         and n.target is torch.ops.fxquant.fake_quant.default)
    with qmodel.graph.inserting_after(softmax_quant):     # e.g. an integer Softmax's constants
        qmodel.graph.call_function(torch.mul, (softmax_quant, softmax_quant.args[1]))
    qmodel.recompile()
    contrastive_search(qmodel, cfg, calib)
    searched = {s for names in qmodel.meta["cpt-v"]["searched"].values() for s in names}
    assert softmax_quant.args[1].target not in searched
    activation_scales = {n.args[1].target for n in qmodel.graph.nodes
                         if n.target is torch.ops.fxquant.fake_quant.default}
    assert {s for s in searched if s in activation_scales} == activation_scales - {softmax_quant.args[1].target}


def test_registered_as_a_refinement_and_deterministic_with_a_seed():
    assert config.resolve("minmax+cpt-v").refine == ("cpt-v",)
    assert pipeline.get("cpt-v", pipeline.REFINEMENTS) is contrastive_search
    calib, cfg, qmodel = _setup(spoil=1.5, cptv_passes=1, cptv_holdout=0, cptv_noise=0.1)
    seeded = lambda seed: contrastive_search(  # noqa: E731
        copy.deepcopy(qmodel), replace(cfg, options={**cfg.options, "cptv_seed": seed}), calib)
    a, b, c = seeded(0), seeded(0), seeded(1)
    x = torch.randn(3, 3, 8, 8)
    assert torch.equal(a(x), b(x)) and not torch.equal(a(x), c(x))
    assert [h["loss"] for h in a.meta["cpt-v"]["history"]] == \
        [h["loss"] for h in b.meta["cpt-v"]["history"]]


def test_time_budget_returns_the_start_when_spent():
    calib, cfg, qmodel = _setup(cptv_max_seconds=0)
    before = _buffers(qmodel)
    contrastive_search(qmodel, cfg, calib)
    assert qmodel.meta["cpt-v"]["stopped_by_budget"] and not qmodel.meta["cpt-v"]["history"]
    assert all(torch.equal(v, before[k]) for k, v in qmodel.named_buffers())


@pytest.mark.parametrize("options, message", [({"cptv_pass": 1}, "cptv_pass"),
                                              ({"cptv_scales": "nope"}, "cptv_scales"),
                                              ({"cptv_holdout": 1.0}, "cptv_holdout")])
def test_bad_options_are_refused(options, message):
    """By the pass called alone (convert refuses them earlier: tests/test_methods.py)."""
    calib, cfg, qmodel = _setup(cptv_passes=0)
    with pytest.raises(FxQuantError, match=message):
        contrastive_search(qmodel, replace(cfg, options={**cfg.options, **options}), calib)


def test_a_model_without_attention_is_refused():
    mlp = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    calib = [torch.randn(16, 8) for _ in range(2)]
    qmodel = fxquant.convert(mlp, calib, "minmax")
    with pytest.raises(FxQuantError, match="no uniform scales"):
        contrastive_search(qmodel, replace(qmodel.config, options={"cptv_scales": "attention"}), calib)
