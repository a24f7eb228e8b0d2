"""Accuracy of anything callable on a loader of (inputs, labels) batches."""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from tqdm import tqdm

from fxquant.calibrate import run_batch


@torch.no_grad()
def top1(model: Callable, loader: Iterable, desc: str = "evaluating") -> float:
    """Fraction of images whose arg-max logit is the label."""
    correct = total = 0
    for index, batch in enumerate(tqdm(loader, desc=desc, leave=False)):
        logits = run_batch(model, batch, index, what="evaluation")
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        labels = batch[1]
        correct += (logits.argmax(-1).cpu() == labels).sum().item()
        total += len(labels)
    return correct / total
