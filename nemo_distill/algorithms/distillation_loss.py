"""The trainer-facing loss of top-k distillation: :func:`topk_kl_loss` on a micro-batch.

The trainer is algorithm-blind: it calls ``loss(logits, micro_batch, counts=StepCounts(...))``
and back-propagates. This object knows where the teacher's top-k lives in the batch
(``extras``) and how rows line up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from nemo_distill.algorithms.loss_functions import check_row_window, topk_kl_loss
from nemo_distill.data.batch import TokenBatch
from nemo_distill.models.policy.interfaces import StepCounts

TEACHER_TOPK_LOGITS = "teacher_topk_logits"  # [B, T, K] teacher logits / temperature, logits-row layout
TEACHER_TOPK_INDICES = "teacher_topk_indices"  # [B, T, K] int32 global vocab ids (int64 accepted), logits-row layout
TEACHER_ROW_MASK = "teacher_row_mask"  # [B, T] 1 where a teacher row was aligned to this student row


def prediction_row_mask(batch: TokenBatch) -> torch.Tensor:
    """``[B, T]`` mask in the logits' layout: row ``t`` counts when token ``t + 1`` is a valid target.

    The last row predicts past the end and never counts.
    """
    targets = batch.valid_target_tokens()
    rows = torch.zeros_like(targets)
    rows[:, :-1] = targets[:, 1:]
    if TEACHER_ROW_MASK in batch.extras:
        rows = rows * batch.extras[TEACHER_ROW_MASK].to(rows.dtype)
    return rows


@dataclass
class TopkDistillationLoss:
    """KL between the teacher's top-k distribution and the student's, per :func:`topk_kl_loss`.

    Normalised by the step's global valid-token count (all data-parallel ranks and
    micro-batches), so summing micro-batch gradients over ranks gives the per-token mean.

    Temperature: ``temperature`` is the sampling temperature the teacher's top-k logits were
    divided by (``get_topk_logits(..., temperature)``); the student's logits are divided by the
    same value inside the chunked KL, so both distributions are those the rollouts were sampled
    from, and a teacher identical to the student gives KL 0 at any temperature. Greedy sampling
    (temperature 0) scores at 1.0: build this loss with ``temperature=cfg.policy.generation.temperature or 1.0``.

    Row windows (``rows``, :func:`~.loss_functions.check_row_window`): the KL of each row is its own,
    and the normaliser is global, so window shares add up to the whole micro-batch's loss.
    """

    supports_row_windows: ClassVar[bool] = True  # the worker may call it per window (policy.train_head_chunk_rows)
    kl_type: str
    mixed_kl_weight: float = 0.5
    zero_outside_topk: bool = False
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature > 0.0:
            raise ValueError(
                f"TopkDistillationLoss.temperature must be > 0, got {self.temperature}; "
                "pass `policy.generation.temperature or 1.0` (greedy sampling scores at 1.0)"
            )

    def __call__(self, logits: torch.Tensor, batch: TokenBatch, *, counts: StepCounts,
                 rows: slice | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``logits`` ``[b, rows, V]``: the prediction rows ``rows`` of the micro-batch (None: all of them);
        returns their share of the step loss (the per-row KL of those rows / the global token count)."""
        rows = check_row_window(rows, logits, batch.seq_len)
        mask = prediction_row_mask(batch)[:, rows]
        loss = topk_kl_loss(
            logits,
            batch.extras[TEACHER_TOPK_LOGITS][:, rows].to(logits.device),
            batch.extras[TEACHER_TOPK_INDICES][:, rows].to(device=logits.device, dtype=torch.long),  # gather wants int64
            mask.to(logits.device),
            kl_type=self.kl_type,
            mixed_kl_weight=self.mixed_kl_weight,
            zero_outside_topk=self.zero_outside_topk,
            normalizer=counts.tokens,
            student_temperature=self.temperature,
        )
        return loss, {"kl_token_sum": loss.detach() * counts.tokens}
