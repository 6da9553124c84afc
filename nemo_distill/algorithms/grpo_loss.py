"""The trainer-facing GRPO loss: :func:`~.loss_functions.grpo_loss`'s per-token terms on one micro-batch.

The loop puts these ``extras`` into the train batch (token layout, see :mod:`nemo_distill.data.batch`):

* ``advantages`` ``[B]``: one advantage per sequence (GRPO / reward-mixed sequence level).
* ``old_logprobs`` ``[B, T]``: log-probs of the sampled tokens under the policy before this step's
  first update (recomputed by the trainer, so the first minibatch's ratio is exactly 1).
* ``reference_logprobs`` ``[B, T]`` (optional): the frozen reference's, for ``beta > 0``.
* ``token_advantage_terms`` ``[B, T]`` (optional): per-token additions to the advantage, the
  teacher part of seed 002's ``use_full_reward_baseline = false`` (``gate·teacher_tau·log p_teacher``);
  the student part ``− gate·student_tau·log p_trainer`` uses this forward's log-probs, detached,
  with the per-sample ``kl_gates`` ``[B]``.

Metrics come back as sums (the trainer adds them over micro-batches and ranks; :func:`finalize_metrics`
turns them into means).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from nemo_distill.algorithms.loss_functions import (
    check_row_window,
    clipped_surrogate_per_token,
    k3_kl_per_token,
    normalize_token_loss,
    row_entropy,
    window_token_logprobs,
)
from nemo_distill.data.batch import TokenBatch
from nemo_distill.models.policy.interfaces import StepCounts

ADVANTAGES = "advantages"
OLD_LOGPROBS = "old_logprobs"
REFERENCE_LOGPROBS = "reference_logprobs"
TOKEN_ADVANTAGE_TERMS = "token_advantage_terms"
KL_GATES = "kl_gates"


@dataclass
class GRPOLoss:
    """Clipped surrogate + optional ``beta``·k3 KL, normalised per ``loss_type`` by the step's global counts.

    ``rows`` (a window of prediction rows, :func:`~.loss_functions.check_row_window`): the per-token
    terms of the tokens those rows predict only; grpo's per-sequence and bnpo's per-micro-batch
    token counts still come from the whole micro-batch, so window shares add up to the whole loss.
    """

    supports_row_windows: ClassVar[bool] = True  # the worker may call it per window (policy.train_head_chunk_rows)
    loss_type: str = "grpo"
    clip_eps_low: float = 0.2
    clip_eps_high: float = 0.2
    dual_clip_c: float | None = None
    beta: float = 0.0
    max_new_tokens: int | None = None  # dr_grpo's constant
    temperature: float = 1.0  # the sampling temperature: log-probs are those of softmax(logits / T)
    token_student_tau: float = 0.0  # seed 002 token-level mode: − gate·student_tau·log p_trainer (detached)
    logprob_chunk_size: int | None = None

    def __call__(self, logits: torch.Tensor, batch: TokenBatch, *, counts: StepCounts,
                 rows: slice | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rows = check_row_window(rows, logits, batch.seq_len)
        # Everything below is in the window's token layout: [B, n], entry i is token rows.start + 1 + i.
        logprobs, tokens = window_token_logprobs(logits, batch.input_ids, rows, self.logprob_chunk_size,
                                                 temperature=self.temperature)
        targets = batch.valid_target_tokens()
        full_mask = targets[:, 1:]  # token 0 is never predicted (as in StepCounts)
        mask = targets[:, tokens]
        advantages = batch.extras[ADVANTAGES].to(logprobs.dtype)
        if TOKEN_ADVANTAGE_TERMS in batch.extras:
            gates = batch.extras[KL_GATES].to(logprobs.dtype)[:, None]
            advantages = (advantages[:, None] + batch.extras[TOKEN_ADVANTAGE_TERMS][:, tokens].to(logprobs.dtype)
                          - gates * self.token_student_tau * logprobs.detach())
        token_loss, clipped, log_ratio = clipped_surrogate_per_token(
            logprobs, batch.extras[OLD_LOGPROBS][:, tokens].to(logprobs.dtype), advantages, mask,
            clip_eps_low=self.clip_eps_low, clip_eps_high=self.clip_eps_high, dual_clip_c=self.dual_clip_c,
        )
        metrics: dict[str, torch.Tensor] = {}
        if REFERENCE_LOGPROBS in batch.extras:
            kl = k3_kl_per_token(logprobs, batch.extras[REFERENCE_LOGPROBS][:, tokens], mask)
            if self.beta > 0:
                token_loss = token_loss + self.beta * kl
            metrics["kl_sum"] = (kl.detach() * mask).sum()
        loss = normalize_token_loss(
            token_loss, mask, loss_type=self.loss_type, num_sequences=counts.sequences, num_tokens=counts.tokens,
            max_new_tokens=self.max_new_tokens, num_micro_batches=counts.micro_batches, full_mask=full_mask,
        )
        with torch.no_grad():
            entropy = row_entropy(logits[:, : mask.shape[1]], self.logprob_chunk_size, temperature=self.temperature)
            metrics.update({
                "tokens": mask.sum(),
                "clipped_tokens": (clipped.to(mask.dtype) * mask).sum(),
                "approx_kl_sum": (-log_ratio * mask).sum(),
                "entropy_sum": (entropy * mask).sum(),
                "ratio_sum": (log_ratio.exp() * mask).sum(),
            })
        return loss, metrics


def finalize_metrics(sums: dict[str, float]) -> dict[str, float]:
    """Token means from the summed loss metrics: ``clip_fraction``, ``approx_kl``, ``entropy``, ``ratio_mean``, ``kl``."""
    tokens = max(sums.get("tokens", 0.0), 1.0)
    means = {
        "clip_fraction": sums.get("clipped_tokens", 0.0) / tokens,
        "approx_kl": sums.get("approx_kl_sum", 0.0) / tokens,
        "entropy": sums.get("entropy_sum", 0.0) / tokens,
        "ratio_mean": sums.get("ratio_sum", 0.0) / tokens,
    }
    if "kl_sum" in sums:
        means["kl"] = sums["kl_sum"] / tokens
    return means
