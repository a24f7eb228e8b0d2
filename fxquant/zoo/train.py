"""Reproduce the bundled reference checkpoint: a timm ViT trained from scratch on CIFAR-10.

Recipe (as recorded with the checkpoint): 12 epochs on the 50,000 training images, AdamW lr 1e-3,
weight decay 0.05, batch 128, cosine schedule with half an epoch of linear warm-up, label
smoothing 0.1, random crop with 4-pixel reflect padding and horizontal flip, drop-path 0.05.
About 2 hours on 2 CPU cores. Not run by the tests.

    python -m fxquant.zoo.train --train train50k.npz --test test.npz --out ckpt.pth
"""
from __future__ import annotations

import argparse
import math

import timm
import torch
import torch.nn.functional as F
from tqdm import tqdm

from fxquant.data import load_npz, to_model_input

ARCH = "vit_tiny_patch16_224"
KWARGS = dict(img_size=32, patch_size=4, num_classes=10, depth=6, embed_dim=192, num_heads=3)
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 32x32 crop of the reflect-padded image and a random horizontal flip."""
    n = x.shape[0]
    padded = F.pad(x, (4, 4, 4, 4), mode="reflect")
    dx, dy = torch.randint(0, 9, (2, n), generator=generator)
    crops = torch.stack([padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32] for i in range(n)])
    flip = torch.rand(n, generator=generator) < 0.5
    crops[flip] = crops[flip].flip(-1)
    return crops


def train(train_npz: str, test_npz: str, out: str, epochs: int = 12, batch: int = 128,
          seed: int = 0) -> float:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x_img, y = load_npz(train_npz)
    x = to_model_input(x_img, MEAN, STD)
    labels = torch.from_numpy(y)
    model = timm.create_model(ARCH, drop_path_rate=0.05, **KWARGS)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    steps_per_epoch = math.ceil(len(x) / batch)
    total, warmup = epochs * steps_per_epoch, steps_per_epoch // 2
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warmup if s < warmup else
                                              0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))))
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for i in tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}"):
            idx = order[i * batch:(i + 1) * batch]
            loss = F.cross_entropy(model(augment(x[idx], generator)), labels[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    acc = evaluate(model, test_npz)
    torch.save({"arch": ARCH, "kwargs": KWARGS, "mean": list(MEAN), "std": list(STD),
                "epochs_done": epochs, "test_acc": acc, "state_dict": model.state_dict()}, out)
    return acc


@torch.no_grad()
def evaluate(model: torch.nn.Module, test_npz: str) -> float:
    model.eval()
    x_img, y = load_npz(test_npz)
    x = to_model_input(x_img, MEAN, STD)
    pred = torch.cat([model(x[i:i + 500]).argmax(-1) for i in range(0, len(x), 500)])
    return float((pred.numpy() == y).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", required=True, help="npz with the 50,000 CIFAR-10 training images")
    p.add_argument("--test", required=True, help="npz with the 10,000 test images")
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=12)
    args = p.parse_args()
    print(f"test top-1: {train(args.train, args.test, args.out, args.epochs):.4f}")


if __name__ == "__main__":
    main()
