"""Every recipe at W8A8 and W4A4 computes bit for bit what was recorded for this kind of CPU
(tests/golden/outputs.py), in PyTorch and in onnxruntime: refactors must not move a number."""
import numpy as np
import pytest

from golden import outputs

RECORDED = outputs.path_for_this_cpu()
# Run with -m slow (the suite's 15 minutes): W8A8 of variants whose passes the default cells already
# run, at W4A4 for the variant and at W8A8 for its base recipe (repq-vit, dopq-vit's TanQ and MOSF
# at 4 bits, cpt-v's search at 4 bits); W4A4 of the fully quantized recipes, whose integer
# LayerNorm and Softmax their W8A8 cells run; repq-vit-sym at both (repq-vit's passes, with the
# symmetric weights converted and checked against onnxruntime in tests/test_architectures.py);
# dopq-vit and repq-vit+cpt-v at both (TanQ, MOSF, reconstruction and the CPT-V search run by
# default in tests/lowering/test_export.py, tests/bench/test_dopq.py, tests/bench/test_cpt_v.py,
# tests/passes/ and the every-recipe cells of tests/test_architectures.py).
SLOW = {("dopq-vit", "w8a8"), ("repq-vit-sym", "w8a8"), ("repq-vit+cpt-v", "w8a8"),
        ("fq-vit", "w4a4"), ("tsptq-vit", "w4a4"), ("repq-vit-sym", "w4a4"),
        ("dopq-vit", "w4a4"), ("repq-vit+cpt-v", "w4a4")}


@pytest.fixture(scope="module")
def recorded():
    if not RECORDED.exists():
        pytest.skip(f"no golden outputs recorded for this CPU ({RECORDED.name}): "
                    "record them with python -m tests.golden.outputs on the commit to compare against")
    with np.load(RECORDED) as data:
        return dict(data)


@pytest.mark.parametrize("recipe,bits", [
    pytest.param(recipe, bits, marks=[pytest.mark.slow] if (recipe, bits) in SLOW else [])
    for recipe, bits in outputs.CASES])
def test_outputs_are_bit_identical_to_the_recording(recipe, bits, recorded, tmp_path):
    for runtime, values in outputs.compute(recipe, bits, tmp_path).items():
        expected = recorded[outputs.key(recipe, bits, runtime)]
        mismatched = int((values != expected).sum())
        assert mismatched == 0, (f"{recipe} {bits} {runtime}: {mismatched} of {values.size} logits "
                                 f"differ, max |diff| {np.abs(values - expected).max():.3g}")
