"""Advantages for reward-mixed context distillation (seed 002) and GRPO (seed 004).

Samples are grouped prompt-major: the ``group_size`` samples of one prompt are contiguous.
"""

from __future__ import annotations

import torch


def _grouped(values: torch.Tensor, group_size: int) -> torch.Tensor:
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if values.shape[0] % group_size != 0:
        raise ValueError(f"{values.shape[0]} samples cannot be split into groups of {group_size}")
    return values.reshape(-1, group_size, *values.shape[1:])


def kl_gates(task_rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """``[N]`` gate ``1 - mean(task reward of the sample's group)`` (seed 002 ``kl_only_incorrect``)."""
    group_mean = _grouped(task_rewards.float(), group_size).mean(dim=1, keepdim=True)
    return (1.0 - group_mean).expand(-1, group_size).reshape(-1)


def sequence_level_advantages(
    task_rewards: torch.Tensor,
    teacher_logprob_sums: torch.Tensor,
    student_logprob_sums: torch.Tensor,
    *,
    group_size: int,
    adv_tau: float,
    teacher_tau: float,
    student_tau: float,
    kl_only_incorrect: bool = False,
) -> torch.Tensor:
    """``[N]`` advantages with the full-reward baseline (seed 002, ``use_full_reward_baseline = true``).

    ``r_i = adv_tau * task_i + gate_i * (teacher_tau * Σ log p_teacher - student_tau * Σ log p_student)``
    and ``A_i = r_i - mean(r over i's group)``, so each group's advantages sum to zero. ``gate_i`` is
    :func:`kl_gates` with ``kl_only_incorrect``, else 1. Inputs are 1-D of length N.
    """
    gate = kl_gates(task_rewards, group_size) if kl_only_incorrect else torch.ones_like(task_rewards, dtype=torch.float)
    full_reward = adv_tau * task_rewards.float() + gate * (teacher_tau * teacher_logprob_sums.float() - student_tau * student_logprob_sums.float())
    grouped = _grouped(full_reward, group_size)
    return (grouped - grouped.mean(dim=1, keepdim=True)).reshape(-1)


def token_level_kl_advantages(
    task_rewards: torch.Tensor,
    teacher_token_logprobs: torch.Tensor,
    student_token_logprobs: torch.Tensor,
    mask: torch.Tensor,
    *,
    group_size: int,
    adv_tau: float,
    teacher_tau: float,
    student_tau: float,
    kl_only_incorrect: bool = False,
) -> torch.Tensor:
    """``[N, T]`` advantages without the full-reward baseline (seed 002, ``use_full_reward_baseline = false``).

    The baseline subtracts only the group-mean task reward, ``adv_tau * (task_i - mean)``; then each
    token adds ``gate_i * (teacher_tau * log p_teacher_t - student_tau * log p_student_t)``. Masked
    positions are 0; the KL part does not cancel across the group.
    """
    grouped = _grouped(task_rewards.float(), group_size)
    base = (adv_tau * (grouped - grouped.mean(dim=1, keepdim=True))).reshape(-1)
    gate = kl_gates(task_rewards, group_size) if kl_only_incorrect else torch.ones_like(base)
    per_token = base[:, None] + gate[:, None] * (teacher_tau * teacher_token_logprobs.float() - student_tau * student_token_logprobs.float())
    return per_token * mask.float()


def grpo_advantages(rewards: torch.Tensor, *, group_size: int, normalize_std: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """``[N]`` GRPO advantages: reward minus group mean, divided by (group std + eps) when
    ``normalize_std`` (GRPO); Dr. GRPO uses ``normalize_std=False``. Std is the unbiased one."""
    grouped = _grouped(rewards.float(), group_size)
    centered = grouped - grouped.mean(dim=1, keepdim=True)
    if normalize_std and group_size > 1:
        centered = centered / (grouped.std(dim=1, keepdim=True) + eps)
    return centered.reshape(-1)
