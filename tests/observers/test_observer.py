"""The observer's sample stays within its budget whatever the number of batches, and weights every
batch alike."""
import torch

from fxquant.observers.observer import Observer


def _one_draw_at_the_end(batches, max_samples):
    """The sample as one draw from every batch's own subsample, taken after the last batch (what
    the observer kept before its sample was bounded while calibrating)."""
    generator = torch.Generator().manual_seed(0)
    chunks = []
    for values in batches:
        idx = torch.randint(len(values), (max_samples,), generator=generator)
        chunks.append(values[idx] if len(values) > max_samples else values)
    union = torch.cat(chunks)
    return union[torch.randint(len(union), (max_samples,), generator=generator)]


def test_two_batches_give_the_single_draw_at_the_end():
    batches = [torch.randn(1000), torch.randn(1000) + 5]
    observer = Observer("linear_input", max_samples=300)
    for values in batches:
        observer(values)
    assert torch.equal(observer.samples(), _one_draw_at_the_end(batches, 300))


def test_the_sample_weights_every_batch_alike_and_reading_it_changes_nothing():
    quiet, read = Observer("linear_input", max_samples=4000), Observer("linear_input", max_samples=4000)
    for i in range(40):  # batch i holds the value i only
        batch = torch.full((10_000,), float(i))
        quiet(batch)
        read(batch)
        assert read.samples().numel() == min(4000, 10_000 * (i + 1))
    assert torch.equal(quiet.samples(), read.samples())
    counts = torch.bincount(quiet.samples().long(), minlength=40)
    # 4000 draws over 40 batches, 100 expected from each: the first batches must not fade away
    assert counts[:10].sum() > 0.2 * 4000 and counts.min() > 40


def test_per_channel_rows_are_kept_whole_within_the_budget():
    observer = Observer("post_layernorm", per_channel=True, max_samples=64 * 8)
    for i in range(5):
        observer(torch.arange(8.0).expand(2, 100, 8) + 100 * i)
    samples = observer.samples()
    assert samples.shape == (64, 8)
    assert torch.equal(samples - samples[:, :1], torch.arange(8.0).expand(64, 8))
