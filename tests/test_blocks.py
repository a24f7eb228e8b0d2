import torch
from torch import nn

import fxquant
from fxquant import patterns, trace
from fxquant.blocks import PerChunk, block_module, run_block, split_blocks
from fxquant.passes.float_reference import float_reference


class _Residual(nn.Module):
    """Two residual branches, a tanh-GELU-like inner add, a bias add, and a defaulted input."""

    def __init__(self, d=8):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, 2)
        self.bias = nn.Parameter(torch.randn(d))

    def forward(self, x, scale: float = 1.0):
        x = x + self.bias                      # not residual: no Linear between
        h = self.a(x)
        x = x + (h + 0.1 * h ** 3)             # residual; the inner add is not
        x = x + self.b(x) * scale              # residual
        return self.head(x)


def test_residual_adds_are_found_by_structure():
    gm = trace(_Residual())
    assert [n.name for n in patterns.residual_adds(gm)] == ["add_2", "add_3"]


def test_blocks_run_alone_and_chain_to_the_model_output():
    torch.manual_seed(0)
    model = _Residual()
    gm = trace(model)
    blocks = split_blocks(gm, adds_per_block=1)
    assert len(blocks) == 3 and [v.name for v in blocks[1].inputs] == ["add_2"]
    x = torch.randn(3, 8)
    values = {"x": x}
    for block in blocks:
        out = block_module(gm, block)(**{v.name: values[v.name] for v in block.inputs if v.name in values})
        values.update({o.name: value for o, value in zip(block.outputs, out)})
    torch.testing.assert_close(values[blocks[-1].outputs[0].name], model(x))
    assert len(split_blocks(gm, adds_per_block=2)) == 2


def test_float_reference_is_the_float_model():
    torch.manual_seed(0)
    model = _Residual()
    x = torch.randn(16, 8)
    qmodel = fxquant.convert(model, [x], "minmax", "w3a3")
    reference = float_reference(qmodel)
    torch.testing.assert_close(reference(x), model(x))
    assert not torch.allclose(qmodel(x), model(x), atol=1e-3)
    assert not any(str(n.target).startswith("fxquant") for n in reference.graph.nodes)


class _ShapeAcross(nn.Module):
    """Read across the cut: the input's shape and an activation's (each block that reads them
    computes them again) and a value that is not a batch (the largest of an activation: computed
    in the first block, cached per chunk)."""

    def __init__(self, d=8):
        super().__init__()
        self.a, self.b = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x):
        shape = x.shape
        h = self.a(x)
        inner, peak = h.shape, h.amax()
        x = x + h.reshape(inner).reshape(shape)
        return x + self.b(x).reshape(inner[0], -1).reshape(shape) * peak


def test_cached_blocks_run_in_chunks_with_per_chunk_values():
    torch.manual_seed(0)
    model = _ShapeAcross()
    gm = trace(model)
    blocks = split_blocks(gm)
    x = torch.randn(5, 3, 8)
    cache = {"x": x}
    for block in blocks:
        cache.update(run_block(block_module(gm, block), block, cache, chunk=2))   # chunks 2, 2, 1
    assert any(isinstance(v, PerChunk) and len(v) == 3 for v in cache.values())
    chunked = torch.cat([model(x[i:i + 2]) for i in range(0, 5, 2)])   # the peak of each chunk
    torch.testing.assert_close(cache[blocks[-1].outputs[0].name], chunked)


def test_shapes_read_across_a_cut_are_computed_again_by_the_block_that_reads_them():
    """So a block runs on any subset of samples (reconstruction's minibatches)."""
    gm = trace(_ShapeAcross())
    first, second = split_blocks(gm)
    shapes = [n for n in first.nodes if n.target is getattr]
    assert len(shapes) == 2 and all(n in second.nodes and n not in first.outputs for n in shapes)
    assert [v.op for v in second.inputs if v not in first.outputs] == ["placeholder"]


class _MaskedLayers(nn.Module):
    """Two attention layers reading one padding mask, as a text encoder's layers do."""

    def __init__(self, d=8):
        super().__init__()
        self.qkv, self.proj = nn.ModuleList(nn.Linear(d, 3 * d) for _ in range(2)), \
            nn.ModuleList(nn.Linear(d, d) for _ in range(2))

    def forward(self, x, attention_mask):
        bias = (1.0 - attention_mask[:, None, :].float()) * -1e9
        for qkv, proj in zip(self.qkv, self.proj):
            q, k, v = qkv(x).chunk(3, dim=-1)
            x = x + proj(((q @ k.transpose(-2, -1)) + bias).softmax(-1) @ v)
        return x


def test_a_padding_mask_shared_by_the_layers_is_not_a_residual_add():
    """The second layer's mask add reads the mask and, through the first layer's Linears, values
    made from it: still not the end of a residual branch, so no block is cut inside attention."""
    example = {"x": torch.randn(2, 5, 8),
               "attention_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])}
    gm = trace(_MaskedLayers(), example_inputs=example)
    adds = patterns.residual_adds(gm)
    assert len(adds) == 2
    assert all(patterns.is_weighted(gm, n.args[0]) or patterns.is_weighted(gm, n.args[1]) for n in adds)
