"""Loss functions. Every loss takes a ``normalizer``: the token count it is divided by.

The trainer passes the step's GLOBAL valid-token count (all data-parallel ranks, all
micro-batches) so that summed micro-batch gradients equal the per-token mean of the whole step;
without a normalizer a loss is the masked mean over its own mask.

Top-k distillation follows NeMo-RL's semantics (see :func:`topk_kl_loss`); the policy-gradient
surrogate is PPO's clipped objective (Schulman et al. 2017), token-level.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F

KL_TYPES = ("forward", "reverse", "mixed")
OUTSIDE_TOPK_TEACHER_LOGPROB = -100.0  # teacher log-prob assumed outside its top-k (zero_outside_topk)
DEFAULT_CHUNK_ROWS = 256


def _row_chunks(seq_len: int, chunk_size: int | None) -> Iterator[slice]:
    size = chunk_size or DEFAULT_CHUNK_ROWS
    for start in range(0, seq_len, size):
        yield slice(start, min(start + size, seq_len))


def _normalise(total: torch.Tensor, mask: torch.Tensor, normalizer: float | torch.Tensor | None) -> torch.Tensor:
    if normalizer is None:
        count = mask.sum()
        return total / count.clamp(min=1.0) if count.item() > 0 else total * 0.0
    return total / normalizer


def masked_token_mean(values: torch.Tensor, mask: torch.Tensor, normalizer: float | None = None) -> torch.Tensor:
    """``sum(values * mask) / (normalizer or mask.sum())``; 0 for an empty mask. Shapes ``[B, T]``."""
    mask = mask.to(values.dtype)
    return _normalise((values * mask).sum(), mask, normalizer)


def topk_kl_per_token(
    student_logits: torch.Tensor,
    teacher_topk_logits: torch.Tensor,
    teacher_topk_indices: torch.Tensor,
    *,
    kl_type: str,
    mixed_kl_weight: float = 0.5,
    zero_outside_topk: bool = False,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Per-row KL ``[B, T]`` (fp32) between teacher and student on the teacher's top-k set K.

    Args:
        student_logits: ``[B, T, V]`` raw student logits.
        teacher_topk_logits: ``[B, T, K]`` raw teacher logits (already divided by temperature).
        teacher_topk_indices: ``[B, T, K]`` int64 vocabulary ids of those logits.

    Conventions (NeMo-RL): q = teacher log-probs renormalised over K. p = student logits at K
    renormalised over K; with ``zero_outside_topk`` the full-vocabulary log-softmax at K instead
    (not renormalised). forward = Σ_K q (log q − log p); reverse = Σ_K p (log p − log q), plus with
    ``zero_outside_topk`` the tail Σ_{v∉K} p(v) (log p(v) + 100) (teacher log-prob −100 outside K);
    mixed = w·forward + (1 − w)·reverse, ``w = mixed_kl_weight``.

    The fp32 upcast happens per chunk of ``chunk_size`` rows, so a full fp32 ``[B, T, V]`` is never
    materialised.
    """
    if kl_type not in KL_TYPES:
        raise ValueError(f"kl_type '{kl_type}' is not supported; choose one of {list(KL_TYPES)}")
    if not 0.0 <= mixed_kl_weight <= 1.0:
        raise ValueError(f"mixed_kl_weight must be in [0, 1], got {mixed_kl_weight}")
    pieces = []
    for rows in _row_chunks(student_logits.shape[1], chunk_size):
        logits = student_logits[:, rows].float()
        indices = teacher_topk_indices[:, rows]
        teacher_logprobs = torch.log_softmax(teacher_topk_logits[:, rows].float(), dim=-1)
        if zero_outside_topk:
            full_logprobs = torch.log_softmax(logits, dim=-1)
            student_logprobs = torch.gather(full_logprobs, -1, indices)
        else:
            student_logprobs = torch.log_softmax(torch.gather(logits, -1, indices), dim=-1)
        kl = torch.zeros(student_logprobs.shape[:-1], dtype=torch.float32, device=logits.device)
        if kl_type in ("forward", "mixed"):
            forward = (teacher_logprobs.exp() * (teacher_logprobs - student_logprobs)).sum(-1)
            kl = kl + (mixed_kl_weight if kl_type == "mixed" else 1.0) * forward
        if kl_type in ("reverse", "mixed"):
            reverse = (student_logprobs.exp() * (student_logprobs - teacher_logprobs)).sum(-1)
            if zero_outside_topk:
                outside = torch.ones_like(full_logprobs, dtype=torch.bool).scatter(-1, indices, False)
                tail_terms = full_logprobs.exp() * (full_logprobs - OUTSIDE_TOPK_TEACHER_LOGPROB)
                reverse = reverse + (tail_terms * outside).sum(-1)
            kl = kl + ((1.0 - mixed_kl_weight) if kl_type == "mixed" else 1.0) * reverse
        pieces.append(kl)
    return torch.cat(pieces, dim=1)


def topk_kl_loss(
    student_logits: torch.Tensor,
    teacher_topk_logits: torch.Tensor,
    teacher_topk_indices: torch.Tensor,
    mask: torch.Tensor,
    *,
    kl_type: str,
    mixed_kl_weight: float = 0.5,
    zero_outside_topk: bool = False,
    normalizer: float | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Scalar top-k KL: :func:`topk_kl_per_token` summed over ``mask`` ``[B, T]`` rows, divided by
    ``normalizer`` (the global valid-token count) or, without one, by ``mask.sum()``."""
    per_token = topk_kl_per_token(
        student_logits, teacher_topk_logits, teacher_topk_indices,
        kl_type=kl_type, mixed_kl_weight=mixed_kl_weight, zero_outside_topk=zero_outside_topk, chunk_size=chunk_size,
    )
    return masked_token_mean(per_token, mask.float(), normalizer)


def selected_token_logprobs(logits: torch.Tensor, token_ids: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """``[B, T]`` fp32 ``log softmax(logits)[b, t, token_ids[b, t]]``, chunked over rows."""
    pieces = []
    for rows in _row_chunks(logits.shape[1], chunk_size):
        chunk = logits[:, rows].float()
        picked = torch.gather(chunk, -1, token_ids[:, rows].unsqueeze(-1)).squeeze(-1)
        pieces.append(picked - torch.logsumexp(chunk, dim=-1))
    return torch.cat(pieces, dim=1)


def nll_loss(student_logits: torch.Tensor, target_ids: torch.Tensor, mask: torch.Tensor, normalizer: float | None = None,
             chunk_size: int | None = None) -> torch.Tensor:
    """SFT cross-entropy: −log p(target) over ``mask`` rows. ``student_logits`` ``[B, T, V]`` row t scores
    ``target_ids[:, t]`` (the caller shifts)."""
    return masked_token_mean(-selected_token_logprobs(student_logits, target_ids, chunk_size), mask.float(), normalizer)


def policy_gradient_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps_low: float = 0.2,
    clip_eps_high: float = 0.2,
    normalizer: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-clipped token-level surrogate ``−min(r·A, clip(r, 1−ε_low, 1+ε_high)·A)``, ``r = exp(lp − lp_old)``.

    ``logprobs``/``old_logprobs``/``mask`` ``[B, T]``; ``advantages`` ``[B]`` (broadcast per sequence) or
    ``[B, T]``. Returns the loss and ``clip_fraction`` / ``approx_kl`` (masked means).
    """
    if advantages.dim() == 1:
        advantages = advantages[:, None].expand_as(logprobs)
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps_low, 1.0 + clip_eps_high) * advantages
    loss = masked_token_mean(-torch.minimum(unclipped, clipped), mask.float(), normalizer)
    with torch.no_grad():
        mask_f = mask.float()
        clip_fraction = masked_token_mean((clipped < unclipped).float(), mask_f)
        approx_kl = masked_token_mean(old_logprobs - logprobs, mask_f)
    return loss, {"clip_fraction": float(clip_fraction), "approx_kl": float(approx_kl)}
