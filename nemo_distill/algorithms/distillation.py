"""On-policy distillation with top-k teacher logits, and its context/self-distillation mode.

One step, top to bottom (seed 003; DESIGN.md "One distillation step")::

    prompts   = next(train_loader)                      # num_prompts_per_step problems
    refit generation workers if the policy changed      # weights: policy -> generation
    rollouts  = generate n samples per prompt, score them with env.math
    teacher   = same tokens as the student              # normal distillation
              | template(problem, trace) + response     # context mode (frozen initial student)
    topk      = teacher.get_topk_logits(teacher, k) / temperature   # student logits / temperature in the loss
    align the teacher's rows to the student's rows (context mode)
    metrics   = policy.train(batch + topk, TopkDistillationLoss)
    log; validate every val_period; checkpoint every save_period

Everything around this body (data, workers, refit, validation, checkpoints, metrics, cleanup) is
the shared runtime (:mod:`.runtime`): :func:`setup` builds it, :func:`train` is the loop.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from nemo_distill.algorithms.context_distillation_utils import format_first_sample_debug
from nemo_distill.algorithms.context_teacher import align_context_topk, build_context_teacher_batch
from nemo_distill.algorithms.distillation_config import (
    DistillationMasterConfig,
    check_distillation_config,
    resolve_teacher_prefix_template,
)
from nemo_distill.algorithms.distillation_loss import (
    TEACHER_ROW_MASK,
    TEACHER_TOPK_INDICES,
    TEACHER_TOPK_LOGITS,
    TopkDistillationLoss,
)
from nemo_distill.algorithms.rollout_prefetch import next_rollouts
from nemo_distill.algorithms.rollouts import RolloutBatch, sample_rows
from nemo_distill.algorithms.runtime import (
    Runtime,
    build_runtime,
    finish_step,
    frozen_on_device,
    generation_throughput,
    run_algorithm,
    train_metrics,
    train_policy,
    training_steps,
)
from nemo_distill.config import ConfigError
from nemo_distill.models.generation.interfaces import SamplingParams
from nemo_distill.models.loading import load_tokenizer, model_vocab_size

log = logging.getLogger(__name__)

SKIP_VOCAB_CHECK_ENV = "NEMO_DISTILL_SKIP_VOCAB_CHECK"
SUMMARY_LABELS = {
    "train/loss": "train/loss (student-teacher KL)",
    "train/reward_mean": "train/reward_mean",
    "train/context_distillation_trace_coverage": "trace coverage",
    "validation/accuracy": "validation/accuracy",
}


def check_vocabularies(cfg: DistillationMasterConfig, student_tokenizer) -> int:
    """Student and teacher must share a vocabulary (top-k indices are token ids); return its size."""
    student_vocab = model_vocab_size(cfg.policy.model_name)
    teacher_vocab = model_vocab_size(cfg.teacher.model_name)
    if os.environ.get(SKIP_VOCAB_CHECK_ENV) == "1":
        log.warning("%s=1: skipping the student/teacher vocabulary check", SKIP_VOCAB_CHECK_ENV)
        return min(student_vocab, teacher_vocab)
    teacher_tokenizer = load_tokenizer(cfg.teacher.model_name, cfg.teacher.tokenizer)
    if student_vocab != teacher_vocab or student_tokenizer.get_vocab() != teacher_tokenizer.get_vocab():
        raise ConfigError(
            "teacher.model_name",
            f"teacher '{cfg.teacher.model_name}' (vocab {teacher_vocab}) and student '{cfg.policy.model_name}' "
            f"(vocab {student_vocab}) have different vocabularies; top-k distillation needs the same token ids "
            f"(set {SKIP_VOCAB_CHECK_ENV}=1 to skip this check at your own risk)",
        )
    return student_vocab


def sampling_temperature(cfg: DistillationMasterConfig) -> float:
    """The distillation temperature: the sampling one (greedy sampling still scores at T = 1)."""
    return cfg.policy.generation.temperature or 1.0


def setup(cfg: DistillationMasterConfig, config_yaml: str) -> Runtime:
    """Check the config, then start the runtime with a frozen teacher and generation workers."""
    tokenizer = load_tokenizer(cfg.policy.model_name, cfg.policy.tokenizer)
    check_distillation_config(cfg, student_vocab_size=check_vocabularies(cfg, tokenizer))
    if cfg.distillation.context_distillation.enabled:
        resolve_teacher_prefix_template(cfg.distillation.context_distillation)  # a missing file fails before Ray
    return build_runtime(cfg, config_yaml, loop=cfg.distillation, frozen=cfg.teacher, tokenizer=tokenizer)


def teacher_topk_for_rollouts(rt: Runtime, rollouts: RolloutBatch, step: int) -> tuple[dict[str, Any], dict[str, float]]:
    """Teacher top-k logits aligned to the student's rows, as ``extras`` for the train batch."""
    cfg = rt.cfg
    k = cfg.distillation.topk_logits_k
    temperature = sampling_temperature(cfg)
    context = cfg.distillation.context_distillation
    if not context.enabled:
        topk = rt.frozen.get_topk_logits(rollouts.token_batch, k, temperature=temperature, targets_only=True)
        return {TEACHER_TOPK_LOGITS: topk.values, TEACHER_TOPK_INDICES: topk.indices}, {}
    max_len = context.max_teacher_sequence_length or cfg.teacher.max_total_sequence_length
    teacher_batch = build_context_teacher_batch(
        rollouts, cfg=context, template=resolve_teacher_prefix_template(context), tokenizer=rt.tokenizer,
        max_teacher_sequence_length=max_len, chat_template=cfg.policy.tokenizer.chat_template,
        chat_template_kwargs=dict(cfg.policy.tokenizer.chat_template_kwargs),
    )
    if context.print_first_sample and step == rt.start_step:
        print(format_first_sample_debug(teacher_batch.inputs[0], rollouts.samples[0].text, rt.tokenizer), flush=True)
    topk = rt.frozen.get_topk_logits(teacher_batch.batch, k, temperature=temperature, targets_only=True)
    values, indices, row_mask = align_context_topk(teacher_batch, rollouts, topk.values, topk.indices)
    # Samples the teacher could not score do not train the student either.
    rollouts.token_batch.sample_mask.mul_(teacher_batch.batch.sample_mask)
    extras = {TEACHER_TOPK_LOGITS: values, TEACHER_TOPK_INDICES: indices, TEACHER_ROW_MASK: row_mask}
    return extras, teacher_batch.metrics


def train(rt: Runtime) -> None:
    """Steps ``start_step .. max_steps``: the distillation body; the runtime does the rest."""
    cfg, timer = rt.cfg, rt.timer
    dist = cfg.distillation
    sampling = SamplingParams.from_config(cfg.policy.generation, n=dist.num_generations_per_prompt)
    loss_fn = TopkDistillationLoss(cfg.loss_fn.kl_type, cfg.loss_fn.mixed_kl_weight, cfg.loss_fn.zero_outside_topk,
                                   temperature=sampling_temperature(cfg))

    for step in training_steps(rt, desc="distillation"):
        with timer.time("total_step_time"):
            rollouts = next_rollouts(rt, sampling, step)  # on-policy, or prefetched (overlap_generation)
            with timer.time("teacher_topk"), frozen_on_device(rt, rt.frozen):
                extras, context_metrics = teacher_topk_for_rollouts(rt, rollouts, step)
            with timer.time("policy_training"):
                rollouts.token_batch.extras.update(extras)
                result = train_policy(rt, rollouts.token_batch, loss_fn)

        metrics = {
            **train_metrics(rt, result),
            **generation_throughput(rt, rollouts.response_lengths),
            **{f"train/{name}": value for name, value in rollouts.metrics.items()},
            **{f"train/{name}": value for name, value in context_metrics.items()},
        }
        finish_step(rt, step, metrics, sample_rows(rollouts))


def run_distillation(cfg: DistillationMasterConfig, config_yaml: str) -> dict[str, Any]:
    """setup -> train -> cleanup; returns the summary."""
    return run_algorithm(lambda: setup(cfg, config_yaml), train, title="distillation", summary_labels=SUMMARY_LABELS)
