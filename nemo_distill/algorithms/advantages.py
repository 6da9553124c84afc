"""Advantages: reward-mixed context distillation (seed 002) and GRPO (seed 004).

Every function takes samples grouped prompt-major: the ``group_size`` samples of one prompt are
contiguous (samples ``[g * group_size, (g + 1) * group_size)`` form group ``g``). Per-sample inputs
are 1-D ``[N]``; per-token inputs are ``[N, T]``. Log-prob sums are sums of log-probabilities (not
logits) over a sample's response tokens.

* :func:`sequence_level_advantages` -- ``use_full_reward_baseline = true`` (the seed's default).
* :func:`token_level_kl_advantages` -- ``use_full_reward_baseline = false``.
* :func:`kl_gates` -- the ``kl_only_incorrect`` gate.
* :func:`grpo_advantages` -- GRPO / Dr. GRPO group-normalised rewards.
"""

from __future__ import annotations

import torch


def _float(values: torch.Tensor) -> torch.Tensor:
    return values.to(torch.promote_types(values.dtype, torch.float32))


def _grouped(values: torch.Tensor, group_size: int, name: str) -> torch.Tensor:
    """``[N, ...]`` -> ``[N / group_size, group_size, ...]``."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if values.dim() < 1 or values.shape[0] % group_size != 0:
        raise ValueError(
            f"{name} has {values.shape[0] if values.dim() else 0} samples, which is not a multiple of "
            f"group_size={group_size}; each prompt's group_size samples must be contiguous and complete"
        )
    return values.reshape(-1, group_size, *values.shape[1:])


def _check_same_length(**vectors: torch.Tensor) -> None:
    shapes = {name: tuple(v.shape) for name, v in vectors.items()}
    for name, shape in shapes.items():
        if len(shape) != 1:
            raise ValueError(f"{name} must be 1-D [N], got shape {shape}")
    if len(set(shapes.values())) > 1:
        raise ValueError(f"per-sample inputs must all have the same length N, got {shapes}")


def kl_gates(task_rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """``[N]`` gate ``1 − mean(task reward over the sample's group)`` (seed 002 ``kl_only_incorrect``).

    With 0/1 rewards: all incorrect -> 1 (KL fully on), all correct -> 0, 1 of 4 correct -> 0.75.
    """
    _check_same_length(task_rewards=task_rewards)
    group_mean = _grouped(_float(task_rewards), group_size, "task_rewards").mean(dim=1, keepdim=True)
    return (1.0 - group_mean).expand(-1, group_size).reshape(-1)


def group_centered(values: torch.Tensor, group_size: int, name: str, valid: torch.Tensor | None = None) -> torch.Tensor:
    """``values − mean(values over the group)``; with ``valid`` ``[N]`` (1 = kept) the mean runs over the
    group's kept samples only and dropped samples get 0 (a group with none kept is all 0)."""
    grouped = _grouped(values, group_size, name)
    if valid is None:
        return (grouped - grouped.mean(dim=1, keepdim=True)).reshape(values.shape)
    keep = _grouped(valid.to(grouped.dtype) != 0, group_size, "valid").to(grouped.dtype)
    mean = (grouped * keep).sum(dim=1, keepdim=True) / keep.sum(dim=1, keepdim=True).clamp(min=1.0)
    return ((grouped - mean) * keep).reshape(values.shape)


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
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[N]`` advantages with the full-reward baseline (seed 002, ``use_full_reward_baseline = true``).

    Args:
        task_rewards: ``[N]`` verifier rewards.
        teacher_logprob_sums: ``[N]`` Σ over response tokens of the teacher's log-prob of the token.
        student_logprob_sums: ``[N]`` the same under the student (the sampling policy).
        valid: optional ``[N]``, 0 for a sample that does not train (e.g. its prompt with the
            context did not fit the teacher, so its log-prob sum is an empty 0): it is left out of
            its group's mean and gets advantage 0. The gate still reads every task reward.

    ``r_i = adv_tau · task_i + gate_i · (teacher_tau · Σ log p_teacher − student_tau · Σ log p_student)``
    and ``A_i = r_i − mean(r over i's group)``: the KL terms sit inside the baseline, so each
    group's advantages sum to zero. ``gate_i`` is :func:`kl_gates` with ``kl_only_incorrect``, else 1.
    The loss then uses ``A_i`` as is, with no further tau scaling or per-token KL.
    """
    _check_same_length(
        task_rewards=task_rewards, teacher_logprob_sums=teacher_logprob_sums, student_logprob_sums=student_logprob_sums
    )
    rewards = _float(task_rewards)
    gate = kl_gates(rewards, group_size) if kl_only_incorrect else torch.ones_like(rewards)
    kl_reward = teacher_tau * _float(teacher_logprob_sums) - student_tau * _float(student_logprob_sums)
    full_reward = adv_tau * rewards + gate * kl_reward
    if valid is not None:
        _check_same_length(task_rewards=task_rewards, valid=valid)
    return group_centered(full_reward, group_size, "task_rewards", valid)


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

    Args:
        task_rewards: ``[N]``.
        teacher_token_logprobs / student_token_logprobs: ``[N, T]`` per-token log-probs of the
            sampled tokens (the student's from the trainer's forward pass).
        mask: ``[N, T]`` response tokens.

    ``A_{i,t} = adv_tau · (task_i − mean(task over i's group)) + gate_i · (teacher_tau · log p_teacher_t
    − student_tau · log p_student_t)`` on masked tokens, 0 elsewhere. Only the task reward is
    centred: the KL part does not cancel across the group.
    """
    _check_same_length(task_rewards=task_rewards)
    expected = (task_rewards.shape[0], mask.shape[-1]) if mask.dim() == 2 else None
    for name, tensor in (("teacher_token_logprobs", teacher_token_logprobs), ("student_token_logprobs", student_token_logprobs), ("mask", mask)):
        if expected is None or tuple(tensor.shape) != expected:
            raise ValueError(f"{name} must be [N, T] with N = {task_rewards.shape[0]} like task_rewards, got {tuple(tensor.shape)}")
    rewards = _float(task_rewards)
    base = adv_tau * group_centered(rewards, group_size, "task_rewards")
    gate = kl_gates(rewards, group_size) if kl_only_incorrect else torch.ones_like(rewards)
    kl_part = teacher_tau * _float(teacher_token_logprobs) - student_tau * _float(student_token_logprobs)
    per_token = base[:, None] + gate[:, None] * kl_part
    return torch.where(mask != 0, per_token, torch.zeros_like(per_token))


def grpo_advantages(rewards: torch.Tensor, *, group_size: int, normalize_std: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """``[N]`` GRPO advantages: ``reward − group mean``, divided by ``(group std + eps)`` when
    ``normalize_std`` (GRPO, Shao et al. 2024). Dr. GRPO (Liu et al. 2025) uses ``normalize_std=False``.

    The std is the unbiased (n − 1) one, as ``torch.std``; a group of one sample has advantage 0.
    A group whose rewards are all equal has advantage 0, also with ``eps = 0``.
    """
    _check_same_length(rewards=rewards)
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    grouped = _grouped(_float(rewards), group_size, "rewards")
    centered = grouped - grouped.mean(dim=1, keepdim=True)
    if normalize_std and group_size > 1:
        scale = grouped.std(dim=1, keepdim=True) + eps
        # A constant group is centred to exactly 0; keep it 0 (not 0/0) even with eps = 0.
        centered = centered / torch.where(scale > 0, scale, torch.ones_like(scale))
    return centered.reshape(-1)
