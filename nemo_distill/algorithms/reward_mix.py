"""Seed 002's reward-mixed context distillation: the teacher terms of the GRPO loop.

The teacher sees ``context`` prepended to the student's prompt text (before the chat template;
seed 001: "prepended to the student's prompt") and scores the student's own response tokens.
Only the sampled tokens' log-probs are needed (no top-k). With

    reward_i = adv_tau·task_i + teacher_tau·Σ_t log p_teacher − student_tau·Σ_t log p_student

``use_full_reward_baseline = true`` gives sequence-level advantages (reward minus its group mean,
:func:`~.advantages.sequence_level_advantages`); ``false`` gives a task-only group advantage plus
per-token terms the loss adds (``gate·teacher_tau·log p_teacher,t`` here, and
``− gate·student_tau·log p_trainer,t`` from the trainer's own forward, detached). The student term
uses the generation engine's sampling log-probs (raw logits, temperature 1), as the seed does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nemo_distill.algorithms.advantages import group_centered, kl_gates, sequence_level_advantages
from nemo_distill.algorithms.grpo_config import ContextDistillationRewardConfig
from nemo_distill.algorithms.rollouts import RolloutBatch
from nemo_distill.data.collate import build_token_batch
from nemo_distill.data.processors import PromptProcessor


@dataclass
class TeacherScores:
    """The teacher's log-probs of the student's response tokens, in the student's token layout."""

    token_logprobs: torch.Tensor  # [N, T] aligned with rollouts.token_batch.input_ids; 0 off the response
    scored: torch.Tensor  # [N] 1 where the teacher scored the whole response (its prompt fit)


def teacher_prompt_ids(processor: PromptProcessor, rollouts: RolloutBatch, context: str) -> list[list[int]]:
    """Token ids of each sample's teacher prompt: ``context`` + the student's user message, chat-rendered."""
    return [processor.process_user_message(p.record, context + p.user_message).prompt_token_ids for p in rollouts.prompts]


def score_with_teacher(scorer, processor: PromptProcessor, rollouts: RolloutBatch, context: str, *, pad_token_id: int,
                       max_total_length: int) -> TeacherScores:
    """Teacher log-probs of every sampled token; ``scorer`` is a policy group (frozen teacher, or the live policy).

    The teacher batch is (teacher prompt + the student's response); its response columns are moved
    to where the same tokens sit in the student's batch. A sample whose teacher sequence does not
    fit ``max_total_length`` is not scored (``scored`` 0) and gets teacher log-probs 0.
    """
    student = rollouts.token_batch
    prompts = teacher_prompt_ids(processor, rollouts, context)
    responses = [sample.response_token_ids for sample in rollouts.samples]
    fits = [len(p) + len(r) <= max_total_length for p, r in zip(prompts, responses)]
    teacher_batch, teacher_starts = build_token_batch(
        prompts, responses, pad_token_id=pad_token_id, sample_mask=[float(f) for f in fits], max_total_length=max_total_length
    )
    teacher_logprobs = scorer.get_logprobs(teacher_batch, targets_only=True)  # the response columns are targets
    aligned = torch.zeros(student.input_ids.shape, dtype=torch.float32)
    for row, (student_start, teacher_start, response, fit) in enumerate(zip(rollouts.prompt_lengths, teacher_starts, responses, fits)):
        if not fit:
            continue
        length = min(len(response), student.seq_len - student_start)
        aligned[row, student_start : student_start + length] = teacher_logprobs[row, teacher_start : teacher_start + length]
    return TeacherScores(token_logprobs=aligned * student.loss_mask.float(), scored=torch.tensor(fits, dtype=torch.float32))


@dataclass
class MixedAdvantages:
    """What the loss needs: per-sequence advantages, and in token-level mode the per-token terms."""

    advantages: torch.Tensor  # [N]
    token_terms: torch.Tensor | None  # [N, T] gate·teacher_tau·log p_teacher (token-level mode), else None
    gates: torch.Tensor  # [N] the kl_only_incorrect gate (1 without it)
    metrics: dict[str, float]


def mixed_advantages(cfg: ContextDistillationRewardConfig, task_rewards: torch.Tensor, teacher_token_logprobs: torch.Tensor,
                     student_token_logprobs: torch.Tensor, mask: torch.Tensor, *, group_size: int,
                     valid: torch.Tensor | None = None) -> MixedAdvantages:
    """Seed 002's advantages from ``[N]`` task rewards and ``[N, T]`` teacher / student token log-probs on ``mask``.

    ``valid`` ``[N]`` (default: all 1) marks the samples that train; the others (the teacher could not
    score them) stay out of the group baselines and the log-prob-sum means, and get advantage 0.
    """
    mask = mask.to(torch.float32)
    valid = torch.ones_like(task_rewards, dtype=torch.float32) if valid is None else (valid != 0).to(torch.float32)
    # Off-mask entries may hold anything (padding); zero them with where, not a product (0 * inf = NaN).
    teacher_token_logprobs = torch.where(mask != 0, teacher_token_logprobs, torch.zeros_like(teacher_token_logprobs))
    student_token_logprobs = torch.where(mask != 0, student_token_logprobs, torch.zeros_like(student_token_logprobs))
    teacher_sums = (teacher_token_logprobs * mask).sum(dim=1)
    student_sums = (student_token_logprobs * mask).sum(dim=1)
    gates = kl_gates(task_rewards, group_size) if cfg.kl_only_incorrect else torch.ones_like(task_rewards, dtype=torch.float32)
    tokens = mask.sum().clamp(min=1.0)
    kept = valid.sum().clamp(min=1.0)
    metrics = {
        "teacher_kl": float(((student_token_logprobs - teacher_token_logprobs) * mask).sum() / tokens),
        "kl_gate_mean": float(gates.float().mean()),
        "teacher_logprob_sum_mean": float((teacher_sums * valid).sum() / kept),
        "student_logprob_sum_mean": float((student_sums * valid).sum() / kept),
    }
    if cfg.use_full_reward_baseline:
        advantages = sequence_level_advantages(
            task_rewards, teacher_sums, student_sums, group_size=group_size, adv_tau=cfg.adv_tau, teacher_tau=cfg.teacher_tau,
            student_tau=cfg.student_tau, kl_only_incorrect=cfg.kl_only_incorrect, valid=valid,
        )
        metrics["combined_advantage"] = float(advantages.abs().sum() / kept)
        return MixedAdvantages(advantages=advantages.float(), token_terms=None, gates=gates.float(), metrics=metrics)
    # Token level: only the task reward is centred; the loss adds the per-token KL terms.
    advantages = cfg.adv_tau * group_centered(task_rewards.float(), group_size, "task_rewards", valid)
    token_terms = gates.float()[:, None] * cfg.teacher_tau * teacher_token_logprobs * mask
    combined = advantages[:, None] + token_terms - gates.float()[:, None] * cfg.student_tau * student_token_logprobs * mask
    metrics["combined_advantage"] = float((combined.abs() * mask).sum() / tokens)
    return MixedAdvantages(advantages=advantages, token_terms=token_terms, gates=gates.float(), metrics=metrics)
