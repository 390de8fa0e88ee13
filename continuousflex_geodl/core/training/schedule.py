"""Per-step schedule of a training run: the learning rate and the seeded
random streams (every draw of a step is a function of (seed, epoch, step),
so a resumed run reproduces the uninterrupted one exactly)."""
import math

import torch


def seeded(*keys):
    """A torch Generator seeded by a hash of the integer ``keys``."""
    s = 0
    for k in keys:
        s = (s * 1000003 + int(k)) % (2 ** 62)
    return torch.Generator().manual_seed(s)


def lr_at(train_cfg, step, total):
    """Cosine decay from ``lr`` to ``lr * lr_final`` over ``total`` steps."""
    lr0 = train_cfg['lr']
    f = train_cfg['lr_final']
    t = min(1.0, step / max(1, total))
    return lr0 * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * t)))
