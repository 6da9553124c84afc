"""On-policy distillation with top-k teacher logits, and its context/self-distillation mode.

One step, top to bottom (seed 003; DESIGN.md "One distillation step")::

    prompts   = next(train_loader)                      # num_prompts_per_step problems
    refit generation workers if the policy changed      # weights: policy -> generation
    rollouts  = generate n samples per prompt, score them with env.math
    teacher   = same tokens as the student              # normal distillation
              | template(problem, trace) + response     # context mode (frozen initial student)
    topk      = teacher.get_topk_logits(teacher, k) / temperature
    align the teacher's rows to the student's rows (context mode)
    metrics   = policy.train(batch + topk, TopkDistillationLoss)
    log; validate every val_period; checkpoint every save_period

Lifecycle, as for every algorithm: :func:`setup` -> :func:`train` (which calls
:func:`validate` and :func:`save_checkpoint`) -> :func:`cleanup`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

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
from nemo_distill.algorithms.rollouts import RolloutBatch, generate_rollouts
from nemo_distill.config import ConfigError
from nemo_distill.data.dataloader import PromptDataLoader
from nemo_distill.data.datasets import load_problems, resolve_source
from nemo_distill.data.processors import ProcessedPrompt, PromptProcessor, load_prompt_file, load_system_prompt
from nemo_distill.distributed.ray_init import init_ray
from nemo_distill.distributed.virtual_cluster import RayVirtualCluster
from nemo_distill.environments.math import MathEnvironment
from nemo_distill.models.generation.group import GenerationWorkerGroup
from nemo_distill.models.generation.interfaces import SamplingParams
from nemo_distill.models.generation.refit import WeightRefitter, choose_transport
from nemo_distill.models.loading import load_tokenizer, model_vocab_size
from nemo_distill.models.policy.group import PolicyWorkerGroup
from nemo_distill.utils.checkpoint import CheckpointManager
from nemo_distill.utils.logger import Logger, resolve_experiment_dir
from nemo_distill.utils.plot import plot_metric_curves
from nemo_distill.utils.progress import progress_bar
from nemo_distill.utils.timer import Timer

log = logging.getLogger(__name__)

SKIP_VOCAB_CHECK_ENV = "NEMO_DISTILL_SKIP_VOCAB_CHECK"
POLICY_CHECKPOINT_SUBDIR = "policy"


@dataclass
class DistillationRun:
    """Everything :func:`setup` builds; :func:`train` reads it top to bottom."""

    cfg: DistillationMasterConfig
    config_yaml: str
    tokenizer: Any
    train_prompts: list[ProcessedPrompt]
    val_prompts: list[ProcessedPrompt]
    train_loader: PromptDataLoader
    policy: PolicyWorkerGroup
    teacher: PolicyWorkerGroup
    generation: GenerationWorkerGroup
    refitter: WeightRefitter  # policy weights -> generation workers
    cluster: RayVirtualCluster
    environment: MathEnvironment
    loss_fn: TopkDistillationLoss
    logger: Logger
    run_dir: Path
    checkpoints: CheckpointManager
    timer: Timer
    start_step: int  # first step this process runs (1-based); > 1 after a resume
    teacher_prefix_template: str | None
    num_trainer_workers: int


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


def _processor(cfg: DistillationMasterConfig, tokenizer, split: str) -> tuple[PromptProcessor, Any]:
    source = resolve_source(cfg.data.default, getattr(cfg.data, split))
    processor = PromptProcessor(
        tokenizer,
        prompt_template=load_prompt_file(source.prompt_file) if source.prompt_file else None,
        system_prompt=load_system_prompt(source.system_prompt_file),
        chat_template=cfg.policy.tokenizer.chat_template,
        chat_template_kwargs=dict(cfg.policy.tokenizer.chat_template_kwargs),
        max_input_seq_length=cfg.data.max_input_seq_length,
    )
    return processor, source


def _load_prompts(cfg: DistillationMasterConfig, tokenizer, split: str) -> list[ProcessedPrompt]:
    processor, source = _processor(cfg, tokenizer, split)
    records = load_problems(source, split=split, seed=cfg.data.seed)
    return [processor.process(record) for record in records]


def setup(cfg: DistillationMasterConfig, config_yaml: str) -> DistillationRun:
    """Check the config, load data, start Ray and the three worker groups, resume if possible."""
    dist = cfg.distillation
    tokenizer = load_tokenizer(cfg.policy.model_name, cfg.policy.tokenizer)
    vocab_size = check_vocabularies(cfg, tokenizer)
    check_distillation_config(cfg, student_vocab_size=vocab_size)
    template = None
    if dist.context_distillation.enabled:
        template = resolve_teacher_prefix_template(dist.context_distillation)

    train_prompts = _load_prompts(cfg, tokenizer, "train")
    val_prompts = _load_prompts(cfg, tokenizer, "validation")[: dist.max_val_samples]
    train_loader = PromptDataLoader(train_prompts, batch_size=dist.num_prompts_per_step, seed=dist.seed, shuffle=cfg.data.shuffle)

    try:  # an impossible transport fails here, before any worker starts
        choose_transport(cfg.policy.generation.refit_transport, uses_gpus=cfg.cluster.uses_gpus,
                         colocated=cfg.cluster.colocated)
    except ValueError as err:
        raise ConfigError("policy.generation.refit_transport", str(err)) from None

    checkpoints = CheckpointManager(cfg.checkpointing)
    run_dir = resolve_experiment_dir(cfg.logger.log_dir, cfg.logger.exp_numbering)
    (run_dir / "config.yaml").write_text(config_yaml)
    logger = Logger(cfg.logger, run_dir)

    init_ray(cluster_cfg=cfg.cluster)
    cluster = RayVirtualCluster(cfg.cluster)
    policy = PolicyWorkerGroup(cluster, cfg.policy, role="trainer", trainable=True, total_steps=dist.max_num_steps)
    # Same model name as the student: the teacher loads the initial weights from disk, so it is a
    # frozen snapshot of the starting student, never the live one.
    teacher = PolicyWorkerGroup(cluster, cfg.teacher, role="teacher", trainable=False)
    generation = GenerationWorkerGroup(
        cluster, cfg.policy.generation, cfg.policy.model_name, tokenizer_cfg=cfg.policy.tokenizer, precision=cfg.policy.precision
    )

    start_step = 1
    latest = checkpoints.latest_checkpoint() if cfg.checkpointing.enabled else None
    if latest is not None:
        info = checkpoints.load_training_info(latest)
        policy.load_checkpoint(str(latest / POLICY_CHECKPOINT_SUBDIR))
        train_loader.load_state_dict(info["dataloader"])
        start_step = int(info["step"]) + 1
        print(f"resumed from {latest} (step {info['step']}); continuing at step {start_step}", flush=True)

    return DistillationRun(
        cfg=cfg,
        config_yaml=config_yaml,
        tokenizer=tokenizer,
        train_prompts=train_prompts,
        val_prompts=val_prompts,
        train_loader=train_loader,
        policy=policy,
        teacher=teacher,
        generation=generation,
        refitter=WeightRefitter(policy, generation, bucket_mb=cfg.policy.generation.refit_bucket_mb,
                                transport=cfg.policy.generation.refit_transport, cluster=cfg.cluster),
        cluster=cluster,
        environment=MathEnvironment(use_math_verify=cfg.env.math.use_math_verify),
        loss_fn=TopkDistillationLoss(cfg.loss_fn.kl_type, cfg.loss_fn.mixed_kl_weight, cfg.loss_fn.zero_outside_topk),
        logger=logger,
        run_dir=run_dir,
        checkpoints=checkpoints,
        timer=Timer(),
        start_step=start_step,
        teacher_prefix_template=template,
        num_trainer_workers=cluster.num_slots("trainer"),
    )


def teacher_topk_for_rollouts(run: DistillationRun, rollouts: RolloutBatch, step: int) -> tuple[dict[str, Any], dict[str, float]]:
    """Teacher top-k logits aligned to the student's rows, as ``extras`` for the train batch."""
    cfg = run.cfg
    k = cfg.distillation.topk_logits_k
    temperature = cfg.policy.generation.temperature or 1.0  # greedy sampling still scores at T=1
    context = cfg.distillation.context_distillation
    if not context.enabled:
        topk = run.teacher.get_topk_logits(rollouts.token_batch, k, temperature=temperature)
        return {TEACHER_TOPK_LOGITS: topk.values, TEACHER_TOPK_INDICES: topk.indices}, {}
    max_len = context.max_teacher_sequence_length or cfg.teacher.max_total_sequence_length
    teacher_batch = build_context_teacher_batch(
        rollouts, cfg=context, template=run.teacher_prefix_template, tokenizer=run.tokenizer, max_teacher_sequence_length=max_len
    )
    if context.print_first_sample and step == run.start_step:
        print(format_first_sample_debug(teacher_batch.inputs[0], rollouts.samples[0].text, run.tokenizer), flush=True)
    topk = run.teacher.get_topk_logits(teacher_batch.batch, k, temperature=temperature)
    values, indices, row_mask = align_context_topk(teacher_batch, rollouts, topk.values, topk.indices)
    # Samples the teacher could not score do not train the student either.
    rollouts.token_batch.sample_mask.mul_(teacher_batch.batch.sample_mask)
    extras = {TEACHER_TOPK_LOGITS: values, TEACHER_TOPK_INDICES: indices, TEACHER_ROW_MASK: row_mask}
    return extras, teacher_batch.metrics


@contextmanager
def generation_awake(run: DistillationRun) -> Iterator[None]:
    """Colocated mode: generation workers hold GPU memory only while they sample."""
    if run.cfg.cluster.colocated:
        run.generation.wake_up()
    try:
        yield
    finally:
        if run.cfg.cluster.colocated:
            run.generation.sleep()


def validate(run: DistillationRun, step: int) -> dict[str, float]:
    """Greedy answers on the validation prompts: accuracy and mean response length."""
    cfg = run.cfg
    sampling = SamplingParams.from_config(cfg.policy.generation, n=1).greedy()
    rewards, lengths, rows = [], [], []
    batches = range(0, len(run.val_prompts), cfg.distillation.val_batch_size)
    with generation_awake(run):
        for start in progress_bar(batches, desc=f"validation step {step}", unit="batch"):
            prompts = run.val_prompts[start : start + cfg.distillation.val_batch_size]
            rollouts = generate_rollouts(
                run.generation, prompts, sampling, environment=run.environment,
                pad_token_id=run.tokenizer.pad_token_id, max_total_length=cfg.policy.max_total_sequence_length,
            )
            rewards += rollouts.rewards
            lengths += rollouts.response_lengths
            rows += _sample_rows(rollouts)
    run.logger.log_samples(rows, f"val_data_step{step}.jsonl")
    count = max(len(rewards), 1)
    return {"validation/accuracy": sum(rewards) / count, "validation/avg_length": sum(lengths) / count}


def save_checkpoint(run: DistillationRun, step: int, metrics: dict[str, float]) -> Path:
    """``step_N/`` with student weights + optimizer, config, training info and data order, atomically."""
    tmp_dir = run.checkpoints.start(step)
    run.policy.save_checkpoint(str(tmp_dir / POLICY_CHECKPOINT_SUBDIR))
    (tmp_dir / "config.yaml").write_text(run.config_yaml)
    info = {"step": step, "dataloader": run.train_loader.state_dict(), **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
    return run.checkpoints.finalize(step, tmp_dir, info)


def _sample_rows(rollouts: RolloutBatch, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of ``train_data_step{N}.jsonl`` / ``val_data_step{N}.jsonl`` (the first ``limit`` samples)."""
    return [
        {"problem": p.record.problem, "answer": p.record.answer, "response": s.text, "reward": r, "finish_reason": s.finish_reason}
        for p, s, r in list(zip(rollouts.prompts, rollouts.samples, rollouts.rewards))[:limit]
    ]


def train(run: DistillationRun) -> list[dict[str, float]]:
    """Run steps ``start_step .. max_num_steps``; return the logged metrics of each step."""
    cfg, timer = run.cfg, run.timer
    dist = cfg.distillation
    colocated = cfg.cluster.colocated
    sampling = SamplingParams.from_config(cfg.policy.generation, n=dist.num_generations_per_prompt)
    history: list[dict[str, float]] = []
    generation_is_stale = True
    max_steps = min(dist.max_num_steps, dist.max_num_epochs * len(run.train_loader))

    if dist.val_at_start and run.start_step == 1:
        run.logger.log_metrics(validate(run, 0), step=0)

    for step in progress_bar(range(run.start_step, max_steps + 1), desc="distillation", unit="step", total=max_steps - run.start_step + 1):
        timer.reset()
        with timer.time("total_step_time"):
            prompts = next(run.train_loader)
            if generation_is_stale:
                with timer.time("refit"):
                    run.refitter.refit()
                generation_is_stale = False
            with timer.time("generation"), generation_awake(run):
                rollouts = generate_rollouts(
                    run.generation, prompts, sampling, environment=run.environment,
                    pad_token_id=run.tokenizer.pad_token_id, max_total_length=cfg.policy.max_total_sequence_length,
                )
            with timer.time("teacher_topk"):
                if colocated:
                    # Free the student's optimizer memory before the teacher runs on the same GPUs.
                    run.policy.offload_optimizer()
                    run.teacher.onload_to_device()
                extras, context_metrics = teacher_topk_for_rollouts(run, rollouts, step)
                if colocated:
                    run.teacher.offload_to_cpu()
                    run.policy.onload_optimizer()
            with timer.time("policy_training"):
                train_batch = rollouts.token_batch
                train_batch.extras.update(extras)
                train_metrics = run.policy.train(train_batch, run.loss_fn)
                generation_is_stale = True

        step_time = timer.elapsed("total_step_time")
        num_tokens = float(rollouts.token_batch.attention_mask.sum())
        metrics = {
            "train/loss": train_metrics.loss,
            "train/grad_norm": train_metrics.grad_norm,
            "train/lr": train_metrics.lr,
            "train/num_valid_tokens": train_metrics.num_valid_tokens,
            "train/tokens_per_sec_per_gpu": num_tokens / max(step_time, 1e-9) / run.num_trainer_workers,
            **{f"train/{name}": value for name, value in rollouts.metrics.items()},
            **{f"train/{name}": value for name, value in context_metrics.items()},
            **timer.metrics(prefix="timing/train"),
        }
        if run.cluster.uses_gpus:
            for role, group in (("trainer", run.policy), ("teacher", run.teacher), ("inference", run.generation)):
                metrics[f"memory/{role}_peak_gib"] = max(group.peak_memory_gib())
        run.logger.log_samples(_sample_rows(rollouts, dist.num_train_samples_to_save), f"train_data_step{step}.jsonl")

        is_last = step == max_steps
        if (dist.val_period and step % dist.val_period == 0) or (is_last and dist.val_at_end):
            with timer.time("validation"):
                # Validate the weights this step produced, not the ones generation still holds.
                run.refitter.refit()
                generation_is_stale = False
                metrics.update(validate(run, step))
            metrics["timing/validation/total"] = timer.elapsed("validation")
        run.logger.log_metrics(metrics, step=step)
        history.append({"step": step, **metrics})
        if cfg.checkpointing.enabled and run.checkpoints.should_save(step, is_last):
            with timer.time("checkpointing"):
                save_checkpoint(run, step, metrics)
    return history


def cleanup(run: DistillationRun) -> Path | None:
    """Write the curves PNG, close loggers and stop the workers."""
    png = plot_metric_curves(run.run_dir / "metrics.jsonl", run.cfg.logger.plot_metrics, run.run_dir / "curves.png")
    run.logger.close()
    for group in (run.generation, run.teacher, run.policy):
        group.shutdown()
    return png


SUMMARY_LABELS = {
    "train/loss": "train/loss (student-teacher KL)",
    "train/reward_mean": "train/reward_mean",
    "train/context_distillation_trace_coverage": "trace coverage",
    "validation/accuracy": "validation/accuracy",
}


def write_summary(run: DistillationRun, history: list[dict[str, float]], elapsed_s: float) -> dict[str, Any]:
    """First/last-step table of the run (printed, and saved as ``summary.json``)."""
    summary: dict[str, Any] = {"run_dir": str(run.run_dir), "steps": len(history), "wall_time_s": round(elapsed_s, 1)}
    if history:
        first, last = history[0], history[-1]
        for name in SUMMARY_LABELS:
            if name in first or name in last:
                summary[name] = {"first": first.get(name), "last": last.get(name), "first_step": first["step"], "last_step": last["step"]}
    (run.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary



def format_summary_table(summary: dict[str, Any]) -> str:
    """The first/last-step table printed at the end of a run."""
    lines = [f"== distillation summary: {summary['steps']} steps in {summary['wall_time_s']} s, run dir {summary['run_dir']} =="]
    lines.append(f"{'metric':<36} {'first':>10} {'last':>10}")
    for name, label in SUMMARY_LABELS.items():
        if name in summary:
            entry = summary[name]
            show = lambda value: "-" if value is None else f"{value:.4f}"  # noqa: E731
            lines.append(f"{label:<36} {show(entry['first']):>10} {show(entry['last']):>10}")
    if summary.get("curves_png"):
        lines.append(f"curves: {summary['curves_png']}")
    return "\n".join(lines)


def run_distillation(cfg: DistillationMasterConfig, config_yaml: str) -> dict[str, Any]:
    """setup -> train -> cleanup; returns the summary."""
    started = time.time()
    run = setup(cfg, config_yaml)
    try:
        history = train(run)
    finally:
        png = cleanup(run)
    summary = write_summary(run, history, time.time() - started)
    summary["curves_png"] = str(png) if png else None
    return summary
