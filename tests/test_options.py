import argparse

import pytest

from fxquant import quantize_command
from fxquant.cli import main
from fxquant.options import parse_assignment


@pytest.mark.parametrize("text, expected", [
    ("recon_iters=2000", ("recon_iters", 2000)),
    ("recon_drop_prob=0.25", ("recon_drop_prob", 0.25)),
    ("recon_max_seconds=None", ("recon_max_seconds", None)),
    ("recon_skip_padding=False", ("recon_skip_padding", False)),
    ("fold_target=median", ("fold_target", "median")),        # not a literal: the text itself
    (" fold_target = 'median' ", ("fold_target", "median")),
])
def test_an_assignment_reads_its_value_as_a_python_literal(text, expected):
    assert parse_assignment(text) == expected


@pytest.mark.parametrize("text", ["recon_iters", "=5", ""])
def test_text_without_a_key_and_an_equals_sign_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="is not KEY=VALUE"):
        parse_assignment(text)


def test_quantize_hands_its_options_to_convert_over_the_recipes(monkeypatch):
    seen = {}

    def convert(model, calib, config, *args, **kwargs):
        seen.update(config.options)
        raise SystemExit(0)  # what reached convert is all this test reads

    monkeypatch.setattr(quantize_command, "convert", convert)
    with pytest.raises(SystemExit):
        main(["--recipe", "dopq-vit", "--calib", "8", "--eval", "0", "--no-onnx",
              "--option", "recon_iters=7", "recon_max_seconds=None", "--option", "recon_seed=3"])
    assert (seen["recon_iters"], seen["recon_max_seconds"], seen["recon_seed"]) == (7, None, 3)
    assert seen["fold_target"] == "median"  # dopq-vit's own option kept
