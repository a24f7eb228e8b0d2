"""One file per method: the paper, the paper's terms mapped to the passes and quantizers that
implement them, and the method's recipes, which importing the file registers in
`fxquant.config.RECIPES` (fxquant.api imports this package, so importing fxquant fills it).

| file | paper | recipes |
|---|---|---|
| minmax.py | none (the baseline) | minmax |
| repq_vit.py | RepQ-ViT, ICCV 2023 | repq-vit, repq-vit-sym |
| dopq_vit.py | DopQ-ViT, arXiv 2024 | dopq-vit |
| fq_vit.py | FQ-ViT, IJCAI 2022 | fq-vit |
| tsptq_vit.py | TSPTQ-ViT, ICASSP 2023 | tsptq-vit |
| cpt_v.py | CPT-V / Evol-Q, ICCV 2023 | none: the refinement `+cpt-v` |
| gptq.py | GPTQ, ICLR 2023 | none: the refinement `+gptq` |
"""
# Imported in this order, so RECIPES lists the baseline first and each method after the one it builds on.
from fxquant.methods import minmax, repq_vit, dopq_vit, fq_vit, tsptq_vit, cpt_v, gptq

METHODS = (minmax, repq_vit, dopq_vit, fq_vit, tsptq_vit, cpt_v, gptq)
