"""Learning-rate multiplier per optimizer step: linear warmup, then constant or cosine to ``min_lr_ratio``."""

from __future__ import annotations

import math
from typing import Callable

from nemo_distill.models.policy.config import SchedulerConfig


def lr_multiplier(cfg: SchedulerConfig, total_steps: int | None) -> Callable[[int], float]:
    """``step -> factor`` for ``torch.optim.lr_scheduler.LambdaLR`` (``step`` counts optimizer steps from 0).

    Warmup: step ``s < warmup_steps`` uses ``(s + 1) / warmup_steps``. Cosine: from 1 at the end of
    warmup down to ``min_lr_ratio`` at ``total_steps`` (``cfg.total_steps`` wins over the argument)
    and flat afterwards.
    """
    horizon = cfg.total_steps if cfg.total_steps is not None else total_steps
    if cfg.type == "cosine" and horizon is None:
        raise ValueError("scheduler.type=cosine needs scheduler.total_steps (or the run's max steps) to know where to end")
    warmup = cfg.warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.type == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, horizon - warmup))
        return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
