"""Typed messages between the driver and policy / teacher workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from nemo_distill.data.batch import TokenBatch


class LossFunction(Protocol):
    """What the algorithm-blind trainer calls on each micro-batch.

    ``logits``: ``[b, t, V]`` for the micro-batch (full vocabulary, the model's dtype).
    ``global_valid_tokens``: Σ over every data-parallel rank and micro-batch of the step of
    ``batch.valid_target_tokens()[:, 1:]``. Returns the loss already divided by it, and float metrics.
    Implementations are picklable dataclasses (they travel through Ray).
    """

    def __call__(self, logits: torch.Tensor, batch: TokenBatch, *, global_valid_tokens: float) -> tuple[torch.Tensor, dict[str, float]]: ...


@dataclass
class TrainMetrics:
    loss: float  # Σ micro-batch losses over ranks: the step's per-token loss
    grad_norm: float  # before clipping
    lr: float
    num_valid_tokens: float  # global
    tokens_per_sec: float  # this rank's processed tokens / its train time
    loss_metrics: dict[str, float] = field(default_factory=dict)  # summed over micro-batches (rank 0)


@dataclass
class TopkLogits:
    values: torch.Tensor  # [B, T, K] fp32 logits / temperature, descending; row t scores token t + 1
    indices: torch.Tensor  # [B, T, K] int64 global vocabulary ids
