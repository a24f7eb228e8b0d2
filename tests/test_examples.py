"""Every script in examples/ runs as a user would run it (each takes seconds)."""
import runpy
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.py"))
NEEDS_TEXT_EXTRA = {"huggingface_vision.py", "bert_text_encoder.py"}


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script, capsys):
    if script.name in NEEDS_TEXT_EXTRA:
        pytest.importorskip("transformers")
    runpy.run_path(str(script), run_name="__main__")
    assert capsys.readouterr().out.strip()      # it reports what it did
