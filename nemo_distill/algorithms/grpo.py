"""GRPO, and seed 002's reward-mixed context distillation as an optional part of the same loop.

One step, top to bottom::

    prompts    = next(train_loader)                     # num_prompts_per_step problems
    refit generation workers if the policy changed
    rollouts   = generate G samples per prompt, score them (environment + shaping terms)
    old_lp     = policy.get_logprobs(rollouts, T)       # before any update: first ratio is exactly 1
    ref_lp     = frozen.get_logprobs(rollouts)          # beta > 0 only
    teacher_lp = teacher.get_logprobs(context + prompt + response)   # reward mix only
    A          = group-centred rewards (/ std)          # or seed 002's mixed advantages
    for minibatch of train_global_batch_size samples:   # several optimizer updates per step
        policy.train(minibatch, GRPOLoss)               # clipped surrogate + beta * k3, per loss_type
    log; validate every val_period; checkpoint every save_period

The runtime (:mod:`.runtime`) does everything around the body. Departures from the papers: the
"grpo" loss type averages each sequence's token mean (Shao et al. 2024); ``dr_grpo`` divides by
``max_new_tokens`` (Liu et al. 2025); the reference KL is the k3 estimator added to the loss, not
to the reward.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from nemo_distill.algorithms.advantages import grpo_advantages
from nemo_distill.algorithms.grpo_config import GRPOMasterConfig, check_grpo_config, needs_frozen_model, resolve_context
from nemo_distill.algorithms.grpo_loss import (
    ADVANTAGES,
    KL_GATES,
    OLD_LOGPROBS,
    REFERENCE_LOGPROBS,
    TOKEN_ADVANTAGE_TERMS,
    GRPOLoss,
    finalize_metrics,
)
from nemo_distill.algorithms.reward_mix import mixed_advantages, score_with_teacher
from nemo_distill.algorithms.rollout_prefetch import next_rollouts
from nemo_distill.algorithms.rollouts import RolloutBatch, sample_rows
from nemo_distill.algorithms.runtime import (
    Runtime,
    build_processor,
    build_runtime,
    finish_step,
    frozen_on_device,
    generation_throughput,
    refit_if_stale,
    run_algorithm,
    train_metrics,
    train_policy,
    training_steps,
    validate,
)
from nemo_distill.config import ConfigError
from nemo_distill.data.processors import ProcessedPrompt
from nemo_distill.environments.shaping import shaping_rewards
from nemo_distill.models.generation.interfaces import SamplingParams

log = logging.getLogger(__name__)

SUMMARY_LABELS = {
    "train/reward_mean": "train/reward_mean",
    "train/loss": "train/loss",
    "train/teacher_kl": "teacher_kl",
    "validation/accuracy": "validation/accuracy",
}


def setup(cfg: GRPOMasterConfig, config_yaml: str) -> Runtime:
    """Check the config, then start the runtime (frozen group only for the reference / a frozen teacher)."""
    check_grpo_config(cfg)
    frozen = cfg.teacher if needs_frozen_model(cfg) else None
    updates = samples_per_update_ratio(cfg)
    mix = cfg.grpo.context_distillation
    check_prompts = None
    if mix.enabled and mix.eval_baseline:
        # eval_baseline's teacher prompts must fit: checked here, before any worker starts.
        def check_prompts(tokenizer, val_prompts):
            baseline_teacher_prompts(cfg, tokenizer, val_prompts, resolve_context(mix))
    return build_runtime(cfg, config_yaml, loop=cfg.grpo, frozen=frozen, optimizer_steps_per_step=updates,
                         check_prompts=check_prompts)


def samples_per_update_ratio(cfg: GRPOMasterConfig) -> int:
    """Optimizer updates per step: the step's samples / ``policy.train_global_batch_size``."""
    return cfg.grpo.num_prompts_per_step * cfg.grpo.num_generations_per_prompt // cfg.policy.train_global_batch_size


def sampling_temperature(cfg: GRPOMasterConfig) -> float:
    return cfg.policy.generation.temperature or 1.0


def task_rewards(rt: Runtime, rollouts: RolloutBatch) -> torch.Tensor:
    """``[N]`` environment reward plus the configured shaping terms."""
    shaping = shaping_rewards([s.text for s in rollouts.samples], [s.finish_reason for s in rollouts.samples], rt.cfg.env.shaping)
    return torch.tensor([r + extra for r, extra in zip(rollouts.rewards, shaping)], dtype=torch.float32)


def rollout_metrics(rollouts: RolloutBatch, rewards: torch.Tensor, advantages: torch.Tensor, group_size: int) -> dict[str, float]:
    """Reward, advantage and length statistics of one step's rollouts."""
    grouped = rewards.reshape(-1, group_size)
    lengths = torch.tensor(rollouts.response_lengths, dtype=torch.float32)
    stopped = torch.tensor([s.finish_reason == "stop" for s in rollouts.samples])
    return {
        "reward/mean": float(rewards.mean()),
        "reward/std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
        "frac_reward_zero_std": float((grouped.std(dim=1) == 0).float().mean()) if group_size > 1 else 1.0,
        "advantages/mean": float(advantages.float().mean()),
        "advantages/std": float(advantages.float().std()) if advantages.numel() > 1 else 0.0,
        "mean_completion_length": float(lengths.mean()),
        "mean_terminated_length": float(lengths[stopped].mean()) if stopped.any() else 0.0,
    }


def logprob_mismatch(old_logprobs: torch.Tensor, rollouts: RolloutBatch, mask: torch.Tensor) -> float:
    """Mean |trainer − sampler| log-prob over sampled tokens (both at temperature 1)."""
    tokens = mask.sum().clamp(min=1.0)
    return float(((old_logprobs - rollouts.sampling_logprobs()).abs() * mask).sum() / tokens)


def baseline_teacher_prompts(cfg: GRPOMasterConfig, tokenizer: Any, val_prompts: list[ProcessedPrompt],
                             context: str) -> list[ProcessedPrompt]:
    """The validation prompts as the teacher reads them (``context`` before each problem).

    Raises ConfigError naming ``data.max_input_seq_length`` when every one is too long (eval_baseline
    could not score the teacher at all); ``setup`` calls it before any worker starts.
    """
    processor, _ = build_processor(cfg, tokenizer, "validation")
    teacher_prompts = [processor.process_user_message(p.record, context + p.user_message) for p in val_prompts]
    if val_prompts and all(p.too_long for p in teacher_prompts):
        raise ConfigError(
            "data.max_input_seq_length",
            f"is {cfg.data.max_input_seq_length} tokens, shorter than every teacher prompt (context + problem, "
            f"{min(len(p.prompt_token_ids) for p in teacher_prompts)} tokens at least): eval_baseline could not score the "
            "teacher; raise data.max_input_seq_length or shorten grpo.context_distillation.context",
        )
    return teacher_prompts


def eval_baseline(rt: Runtime, context: str) -> dict[str, float]:
    """Seed 001's ``eval_baseline``: the initial student without the context vs with it (the frozen teacher
    is the initial student, so the generation workers' initial weights answer for it)."""
    student = validate(rt, 0, samples_file="val_data_baseline_student.jsonl").get("validation/accuracy")
    original = rt.val_prompts
    teacher_prompts = baseline_teacher_prompts(rt.cfg, rt.tokenizer, original, context)
    rt.val_prompts = teacher_prompts
    try:
        teacher = validate(rt, 0, samples_file="val_data_baseline_teacher.jsonl").get("validation/accuracy")
    finally:
        rt.val_prompts = original
    env = rt.cfg.env.type
    metrics = {f"eval/{env}/baseline_student/avg": student, f"eval/{env}/baseline_teacher/avg": teacher}
    if student is not None and teacher is not None:
        metrics[f"eval/{env}/baseline_diff"] = teacher - student
    print("eval_baseline: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if v is not None), flush=True)
    return {k: v for k, v in metrics.items() if v is not None}


def train(rt: Runtime) -> None:
    """Steps ``start_step .. max_steps``: the GRPO body; the runtime does the rest."""
    cfg, timer = rt.cfg, rt.timer
    grpo, mix = cfg.grpo, cfg.grpo.context_distillation
    group_size = grpo.num_generations_per_prompt
    temperature = sampling_temperature(cfg)
    sampling = SamplingParams.from_config(cfg.policy.generation, n=group_size)
    loss_fn = GRPOLoss(
        loss_type=cfg.loss_fn.loss_type, clip_eps_low=cfg.loss_fn.clip_eps_low, clip_eps_high=cfg.loss_fn.clip_eps_high,
        dual_clip_c=cfg.loss_fn.dual_clip_c, beta=cfg.loss_fn.beta, max_new_tokens=cfg.policy.generation.max_new_tokens,
        temperature=temperature, token_student_tau=0.0 if mix.use_full_reward_baseline else mix.student_tau,
        logprob_chunk_size=cfg.policy.logprob_chunk_size,
    )
    context = resolve_context(mix) if mix.enabled else ""
    processor = build_processor(cfg, rt.tokenizer, "train")[0] if mix.needs_teacher else None
    teacher = (rt.frozen if mix.teacher_source == "frozen" else rt.policy) if mix.needs_teacher else None
    if mix.eval_baseline and rt.start_step == 1:
        refit_if_stale(rt)
        rt.logger.log_metrics(eval_baseline(rt, context), step=0)

    for step in training_steps(rt, desc="grpo"):
        with timer.time("total_step_time"):
            rollouts = next_rollouts(rt, sampling, step)  # on-policy, or prefetched (overlap_generation)
            batch = rollouts.token_batch
            mask = batch.valid_target_tokens()
            rewards = task_rewards(rt, rollouts)
            with timer.time("old_logprobs"):
                old_logprobs = rt.policy.get_logprobs(batch, temperature=temperature, targets_only=True)
            extras: dict[str, torch.Tensor] = {OLD_LOGPROBS: old_logprobs}
            step_metrics: dict[str, float] = {}
            if temperature == 1.0:
                step_metrics["logprob_mismatch"] = logprob_mismatch(old_logprobs, rollouts, mask)
            if cfg.loss_fn.beta > 0:
                with timer.time("reference_logprobs"), frozen_on_device(rt, rt.frozen):
                    extras[REFERENCE_LOGPROBS] = rt.frozen.get_logprobs(batch, targets_only=True)
            if mix.enabled:
                teacher_logprobs = torch.zeros_like(old_logprobs)
                if teacher is not None:
                    with timer.time("teacher_logprobs"), frozen_on_device(rt, teacher):
                        scores = score_with_teacher(teacher, processor, rollouts, context, pad_token_id=rt.tokenizer.pad_token_id,
                                                    max_total_length=cfg.teacher.max_total_sequence_length)
                    teacher_logprobs = scores.token_logprobs
                    batch.sample_mask.mul_(scores.scored)  # a sample the teacher could not score does not train
                    mask = batch.valid_target_tokens()
                mixed = mixed_advantages(mix, rewards * (1.0 if not cfg.env.skip_verification else 0.0), teacher_logprobs,
                                         rollouts.sampling_logprobs(), mask, group_size=group_size, valid=batch.sample_mask)
                advantages = mixed.advantages
                if mixed.token_terms is not None:
                    extras[TOKEN_ADVANTAGE_TERMS] = mixed.token_terms
                    extras[KL_GATES] = mixed.gates
                step_metrics.update(mixed.metrics)
            else:
                advantages = grpo_advantages(rewards, group_size=group_size, normalize_std=grpo.normalize_rewards_std)
            extras[ADVANTAGES] = advantages
            batch.extras.update(extras)
            with timer.time("policy_training"):
                loss_sums: dict[str, float] = {}
                for minibatch in batch.micro_batches(cfg.policy.train_global_batch_size):
                    result = train_policy(rt, minibatch, loss_fn)
                    for name, value in result.loss_metrics.items():
                        loss_sums[name] = loss_sums.get(name, 0.0) + value

        metrics = {
            **train_metrics(rt, result),
            **generation_throughput(rt, rollouts.response_lengths),
            **{f"train/{name}": value for name, value in rollouts.metrics.items()},
            **{f"train/{name}": value for name, value in rollout_metrics(rollouts, rewards, advantages, group_size).items()},
            **{f"train/{name}": value for name, value in finalize_metrics(loss_sums).items()},
            **{f"train/{name}": value for name, value in step_metrics.items()},
            "train/loss/policy": result.loss,
        }
        finish_step(rt, step, metrics, sample_rows(rollouts))


def run_grpo(cfg: GRPOMasterConfig, config_yaml: str) -> dict[str, Any]:
    """setup -> train -> cleanup; returns the summary."""
    return run_algorithm(lambda: setup(cfg, config_yaml), train, title="grpo", summary_labels=SUMMARY_LABELS)
