"""fxquant/methods/: one file per method, naming its paper and the code of each of its terms, and
registering its recipes; options are typed and checked before calibration."""
import importlib
import re
from dataclasses import replace
from pathlib import Path

import pytest
from torch import nn

import fxquant
from fxquant import FxQuantError, config, methods, pipeline
from fxquant.config import RECIPES
from fxquant.passes.contrastive_search import CptvOptions
from fxquant.passes.reconstruct import ReconOptions

# The paper titles of shared/methods/*.md and terms each method's file must map to code.
PAPERS = {
    methods.repq_vit: ("RepQ-ViT: Scale Reparameterization for Post-Training Quantization of Vision "
                       "Transformers", ["scale reparameterization", "log√2", "percentile-MSE"]),
    methods.fq_vit: ("FQ-ViT: Post-Training Quantization for Fully Quantized Vision Transformer",
                     ["PTF", "Power-of-Two Factor", "LIS", "Log-Int-Softmax", "integer LayerNorm",
                      "i-exp", "fully quantized"]),
    methods.tsptq_vit: ("TSPTQ-ViT: Two-scaled post-training quantization for vision transformer",
                        ["V-2SF", "O-2SF", "bit sparsity"]),
    methods.dopq_vit: ("DopQ-ViT: Towards Distribution-Friendly and Outlier-Aware Post-Training "
                       "Quantization for Vision Transformers", ["TanQ", "MOSF", "block reconstruction"]),
    methods.cpt_v: ("CPT-V: A Contrastive Approach to Post-Training Quantization of Vision Transformers",
                    ["contrastive loss", "evolutionary search", "Evol-Q"]),
    methods.gptq: ("GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers",
                   ["Hessian", "Cholesky", "lazy batch", "act-order", "sequential"]),
}
# "path.py: Name, Name" in a docstring: the code a term maps to.
CODE_REFERENCE = re.compile(r"([\w/]+)\.py:\s+([A-Za-z_]\w*(?:,\s+[A-Za-z_]\w*)*)")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _model_and_empty_loader():
    return nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 4)), []


def test_an_empty_loader_fails_in_calibration():
    """What the tests below rely on: a good config with no calibration data fails later, here."""
    model, empty = _model_and_empty_loader()
    with pytest.raises(FxQuantError, match="calibration loader is empty"):
        fxquant.convert(model, empty, "dopq-vit")


@pytest.mark.parametrize("options, message", [
    ({"recon_iter": 5}, "^unknown option 'recon_iter': did you mean 'recon_iters'\\?$"),
    ({"fold_targt": "median"}, "^unknown option 'fold_targt': did you mean 'fold_target'\\?$"),
    ({"fully_quantised": True}, "did you mean 'fully_quantized'"),
    ({"cptv_scale": "all"}, "did you mean 'cptv_scales'"),
    ({"colour": 1}, "^unknown option 'colour': known options are cptv_"),
    ({"fold_target": "medain"},
     "^option fold_target='medain' is not allowed: it must be one of 'mean', 'median'$"),
    ({"recon_iters": 0}, "^option recon_iters=0 is not allowed: it must be an int >= 1$"),
    ({"recon_iters": 2.5}, "recon_iters=2.5"),
    ({"recon_drop_prob": 1.5}, "recon_drop_prob=1.5 .* in \\[0, 1\\]"),
    ({"cptv_scales": "everything"}, "^option cptv_scales='everything' is not allowed: it must be one of "
                                    "'attention', 'weights', 'all'$"),
    ({"cptv_holdout": 1.0}, "cptv_holdout=1.0 .* in \\[0, 1\\)"),
    ({"cptv_max_seconds": "10"}, "cptv_max_seconds='10' .* None or a number >= 0"),
    ({"fully_quantized": "yes"}, "fully_quantized='yes' .* True or False"),
])
def test_a_bad_option_fails_before_calibration_in_one_line(options, message):
    model, empty = _model_and_empty_loader()
    cfg = config.RECIPES["dopq-vit"]
    with pytest.raises(FxQuantError, match=message) as raised:
        fxquant.convert(model, empty, replace(cfg, options={**cfg.options, **options}))
    assert "\n" not in str(raised.value)


def test_every_recipe_and_refinement_passes_the_check():
    for name in RECIPES:
        for refine in ("", "+recon", "+cpt-v", "+gptq", "+rotate"):
            pipeline.check(config.resolve(name + refine))


def test_the_option_classes_share_no_key_and_own_their_prefix():
    keys = [key for kind in pipeline.OPTIONS for key in kind.keys()]
    assert len(keys) == len(set(keys))
    for kind in pipeline.OPTIONS:
        assert kind.PREFIX and all(key.startswith(kind.PREFIX) for key in kind.keys())
        kind()  # the defaults are allowed values


def test_an_option_class_alone_reads_its_keys_and_refuses_a_misspelling():
    opts = ReconOptions.from_options({"recon_iters": 7, "cptv_passes": 2, "fold_target": "median"})
    assert opts.recon_iters == 7 and opts.recon_seed == ReconOptions().recon_seed
    assert CptvOptions.from_options({"recon_iters": 7}) == CptvOptions()
    with pytest.raises(FxQuantError, match="did you mean 'recon_iters'"):
        ReconOptions.from_options({"recon_iter": 7})


@pytest.mark.parametrize("module", list(PAPERS), ids=lambda m: m.__name__)
def test_each_method_file_names_its_paper_and_terms(module):
    title, terms = PAPERS[module]
    doc = _one_line(module.__doc__)
    assert _one_line(title) in doc
    assert [term for term in terms if term not in doc] == []


@pytest.mark.parametrize("module", methods.METHODS, ids=lambda m: m.__name__)
def test_the_code_a_method_file_names_exists(module):
    references = CODE_REFERENCE.findall(module.__doc__)
    assert references
    for path, names in references:
        target = importlib.import_module("fxquant." + path.replace("/", "."))
        missing = [n for n in re.split(r",\s+", names) if not hasattr(target, n)]
        assert not missing, f"{path}.py has no {missing}"


def test_every_method_file_is_a_method_and_every_recipe_belongs_to_exactly_one():
    files = {p.stem for p in Path(methods.__file__).parent.glob("*.py")} - {"__init__"}
    assert {m.__name__.rsplit(".", 1)[1] for m in methods.METHODS} == files
    for name, recipe in RECIPES.items():
        owners = [m.__name__ for m in methods.METHODS if any(r is recipe for r in m.RECIPES)]
        assert len(owners) == 1, f"{name}: {owners}"
    assert sum(len(m.RECIPES) for m in methods.METHODS) == len(RECIPES)
    assert list(RECIPES)[:2] == ["minmax", "repq-vit"]


def test_a_recipe_name_is_registered_once():
    with pytest.raises(FxQuantError, match="already registered"):
        config.register_recipe(RECIPES["minmax"])
    with pytest.raises(FxQuantError, match="lower case"):
        config.register_recipe(replace(RECIPES["minmax"], name="MinMax+x"))
    assert config.resolve("minmax") == replace(RECIPES["minmax"])
