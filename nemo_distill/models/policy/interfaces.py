"""Typed messages between the driver and policy / teacher workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from nemo_distill.data.batch import TokenBatch


@dataclass(frozen=True)
class StepCounts:
    """Global counts of one optimizer step: every data-parallel rank and every micro-batch.

    Handed to every loss so each can pick its own normaliser (prime-rl: each loss term is
    normalised by its own count) and still sum correctly over micro-batches and ranks.
    """

    tokens: float  # Σ batch.valid_target_tokens()[:, 1:] (loss targets); at least 1
    sequences: float  # samples with at least one target token; at least 1
    micro_batches: int  # micro-batches of the step over all data-parallel ranks


class LossFunction(Protocol):
    """What the algorithm-blind trainer calls on each micro-batch.

    Args:
        logits: ``[b, t, V]`` raw logits of the micro-batch on this rank, a plain local tensor over
            the FULL vocabulary in the compute dtype (bf16 on GPU, fp32 on CPU); row ``t`` predicts
            token ``t + 1``. Under tensor or context parallelism the worker gathers vocabulary /
            sequence shards first, so every rank of a tp/cp group sees the same logits.
        batch: the micro-batch (on the logits' device), trailing all-padding columns trimmed.
        counts: the step's global :class:`StepCounts`.

    Returns:
        The micro-batch's share of the step loss (already divided by the loss's global normaliser,
        so summing over micro-batches and data-parallel ranks gives the step loss), and additive
        metrics: SUMS (e.g. a token count and a sum over tokens), which the trainer sums over
        micro-batches and data-parallel ranks and the algorithm turns into means. Each is a float or
        a detached 0-dim tensor; tensors are summed on the device and read once per step (a float()
        per micro-batch would make the host wait for the device).

    Implementations are picklable dataclasses: they travel to the workers through Ray.

    Row windows (``policy.train_head_chunk_rows``): a loss whose class sets ``supports_row_windows =
    True`` also accepts ``rows=slice(start, stop)``; ``logits`` is then ``[b, stop - start, V]``,
    prediction rows ``start .. stop - 1`` only, and it returns that window's share (normalisers from
    the whole micro-batch), so the shares of any split add up to the full-logits call. Such a loss
    must also give rows that predict no ``loss_mask`` token 0 loss and 0 in every metric: the worker
    never computes the rows before a micro-batch's ``TokenBatch.first_target_row()`` (the prompt's),
    with or without windows.
    """

    def __call__(
        self, logits: torch.Tensor, batch: TokenBatch, *, counts: StepCounts
    ) -> tuple[torch.Tensor, dict[str, float]]: ...


@dataclass
class TrainMetrics:
    """What one optimizer step reports (identical on every rank after the reductions)."""

    loss: float  # Σ over micro-batches and data-parallel ranks: the step's per-token loss
    grad_norm: float  # global L2 norm of the gradient before clipping
    lr: float  # learning rate used by this step
    num_valid_tokens: float  # StepCounts.tokens of the step (loss targets over all dp ranks)
    loss_metrics: dict[str, float] = field(default_factory=dict)  # the loss's metrics, summed over micro-batches and dp
    tokens_per_sec: float = 0.0  # non-padding tokens of the step / wall time of the step (all dp ranks)
    num_sequences: float = 0.0  # StepCounts.sequences of the step
    skipped: bool = False  # the loss or gradient was not finite: no optimizer step, weights unchanged


@dataclass
class TopkLogits:
    """The ``k`` largest logits per prediction row; row ``t`` describes the distribution over token ``t + 1``.

    ``values``: ``[B, T, K]`` fp32 raw logits divided by the temperature, descending along K (NOT log-probs).
    ``indices``: ``[B, T, K]`` int32 global vocabulary ids (half the bytes of int64 on their way to the
    trainer; a loss widens them to int64 for ``gather``). Rows past a sample's length hold the
    top-k of padding positions (meaningless; mask them with the batch's ``attention_mask``).
    """

    values: torch.Tensor
    indices: torch.Tensor

    def __post_init__(self) -> None:
        if self.values.shape != self.indices.shape:
            raise ValueError(f"TopkLogits.values {tuple(self.values.shape)} and indices {tuple(self.indices.shape)} differ")


@dataclass
class RankInfo:
    """Where one worker sits on the (dp, cp, tp) mesh."""

    rank: int
    world_size: int
    dp_rank: int
    dp_size: int
    cp_rank: int
    cp_size: int
    tp_rank: int
    tp_size: int
    pid: int
    device: str  # "cpu" or "cuda:<i>"
