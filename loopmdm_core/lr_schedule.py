"""Learning-rate schedules over a fixed number of steps: linear warmup, then cosine or WSD decay."""

import math

from .config import TrainConfig


def lr_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based) of `total_steps`."""
    warmup = int(cfg.warmup_frac * total_steps)
    floor = cfg.lr * cfg.min_lr_ratio
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.schedule == "cosine":
        progress = (step - warmup) / max(1, total_steps - warmup)
        return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    # wsd: hold the peak, then decay linearly to the floor over the last decay_frac of the steps
    decay = max(1, int(cfg.decay_frac * total_steps))
    decay_start = total_steps - decay
    if step < decay_start:
        return cfg.lr
    return cfg.lr + (floor - cfg.lr) * min(1.0, (step - decay_start + 1) / decay)
