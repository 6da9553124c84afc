"""The runtime every algorithm shares: everything around a loop body (DESIGN.md "One runtime, short loops").

config -> data -> Ray + worker groups (trainable policy; optional frozen model for a teacher or
reference; optional generation) -> refit when the policy changed -> validation,
checkpoint/resume, metrics, summary, cleanup. An algorithm module (``distillation``, ``grpo``,
``sft``) builds a :class:`Runtime` with :func:`build_runtime`, then writes its loop::

    for step in training_steps(rt):
        prompts = next(rt.train_loader)
        refit_if_stale(rt)
        ...                                   # the algorithm's own body
        finish_step(rt, step, metrics, rows)  # samples, validation, metrics, checkpoint

and :func:`run_algorithm` wraps setup -> train -> summary with cleanup in a ``finally``.
Nothing here knows a loss or an advantage.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from nemo_distill.algorithms.rollouts import RolloutBatch, generate_rollouts, sample_rows
from nemo_distill.algorithms.run_summary import write_summary
from nemo_distill.algorithms.runtime_config import LoopConfig, RuntimeConfig
from nemo_distill.config import ConfigError
from nemo_distill.data.dataloader import PromptDataLoader
from nemo_distill.data.datasets import load_problems, resolve_source
from nemo_distill.data.processors import ProcessedPrompt, PromptProcessor, load_prompt_file, load_system_prompt
from nemo_distill.distributed.offload import ResidentMemoryError, resolve_offload
from nemo_distill.distributed.ray_init import init_ray
from nemo_distill.distributed.virtual_cluster import RayVirtualCluster
from nemo_distill.environments.registry import build_environment
from nemo_distill.models.generation.group import GenerationWorkerGroup
from nemo_distill.models.generation.interfaces import SamplingParams
from nemo_distill.models.generation.refit import WeightRefitter, choose_transport
from nemo_distill.models.loading import load_tokenizer
from nemo_distill.models.policy.config import TeacherConfig
from nemo_distill.models.policy.group import PolicyWorkerGroup
from nemo_distill.models.policy.interfaces import TrainMetrics
from nemo_distill.utils.checkpoint import CheckpointManager
from nemo_distill.utils.logger import Logger, format_validation_samples, resolve_experiment_dir
from nemo_distill.utils.plot import plot_metric_curves
from nemo_distill.utils.progress import progress_bar
from nemo_distill.utils.resume import check_resume, schema_defaults
from nemo_distill.utils.timer import Timer

log = logging.getLogger(__name__)

POLICY_CHECKPOINT_SUBDIR = "policy"


class TrainingDivergedError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient (``policy.max_consecutive_skipped_steps``)."""


@dataclass
class Runtime:
    """Everything :func:`build_runtime` starts; a loop reads it top to bottom."""

    cfg: RuntimeConfig
    loop: LoopConfig  # the algorithm's loop section (distillation / grpo / sft)
    config_yaml: str
    tokenizer: Any
    train_prompts: list[ProcessedPrompt]
    val_prompts: list[ProcessedPrompt]
    train_loader: PromptDataLoader
    policy: PolicyWorkerGroup
    frozen: PolicyWorkerGroup | None  # a frozen teacher or reference model, when the algorithm needs one
    generation: GenerationWorkerGroup | None
    refitter: WeightRefitter | None  # policy weights -> generation workers
    cluster: RayVirtualCluster
    environment: Any  # an environment from environments.registry (evaluate / score)
    logger: Logger
    run_dir: Path
    checkpoints: CheckpointManager
    timer: Timer
    start_step: int  # first step this process runs (1-based); > 1 after a resume
    num_trainer_workers: int
    offload_each_step: bool = True  # colocated roles move on/off the GPU every step (cluster.offload, resolved at set-up)
    data_skipped_rows: int = 0
    generation_is_stale: bool = True  # the policy changed since the generation workers last got its weights
    policy_version: int = 0  # optimizer updates applied in this process (train/rollout_staleness counts them)
    prefetch: Any = None  # rollout_prefetch.RolloutPrefetcher when loop.overlap_generation: the background generation
    consecutive_skipped_steps: int = 0
    skipped_steps: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def max_steps(self) -> int:
        """The last step of the run: ``max_num_steps``, or fewer when the epochs run out first."""
        return min(self.loop.max_num_steps, self.loop.max_num_epochs * len(self.train_loader))


# ---------------------------------------------------------------------------------------------- setup
def build_processor(cfg: RuntimeConfig, tokenizer, split: str):
    """The prompt processor and resolved data source of ``split`` ("train" or "validation")."""
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


def load_prompts(cfg: RuntimeConfig, tokenizer, split: str) -> tuple[list[ProcessedPrompt], int]:
    """The processed prompts of ``split`` and the number of malformed rows skipped (``data.on_bad_row``)."""
    processor, source = build_processor(cfg, tokenizer, split)
    records = load_problems(source, split=split, seed=cfg.data.seed, on_bad_row=cfg.data.on_bad_row)
    return [processor.process(record) for record in records], int(getattr(records, "skipped_rows", 0))


def _resume_point(cfg: RuntimeConfig, config_yaml: str, checkpoints: CheckpointManager) -> tuple[Path | None, dict]:
    """The checkpoint to resume from and its training info, checked BEFORE any worker starts."""
    if not cfg.checkpointing.enabled or cfg.checkpointing.resume == "never":
        return None, {}
    latest = checkpoints.latest_valid_checkpoint()
    if latest is None:
        return None, {}
    saved_config = latest / "config.yaml"
    if saved_config.is_file():
        check_resume(saved_config.read_text(), config_yaml, mode=cfg.checkpointing.resume, checkpoint=latest,
                     defaults=schema_defaults(type(cfg)))
    return latest, checkpoints.load_training_info(latest)


def build_runtime(
    cfg: RuntimeConfig,
    config_yaml: str,
    *,
    loop: LoopConfig,
    frozen: TeacherConfig | None = None,
    with_generation: bool = True,
    tokenizer: Any = None,
    optimizer_steps_per_step: int = 1,
    check_prompts: Callable[[Any, list[ProcessedPrompt]], None] | None = None,
) -> Runtime:
    """Load data, check the resume point, start Ray and the worker groups, restore a checkpoint.

    Args:
        loop: the algorithm's loop section (``cfg.distillation`` / ``cfg.grpo`` / ``cfg.sft``).
        frozen: config of a frozen model group (role ``teacher``: a teacher or a reference), or None.
        with_generation: start generation workers and the refitter (SFT trains without them).
        tokenizer: the student's tokenizer when the caller already loaded it.
        optimizer_steps_per_step: optimizer updates per loop step (GRPO minibatches): the cosine
            schedule's horizon is ``max_num_steps`` times this.
        check_prompts: ``check_prompts(tokenizer, val_prompts)``, the algorithm's own check of the
            loaded prompts (raise ConfigError), run before any worker starts.

    Bad input fails here before any worker starts; if a worker group fails to start, the ones
    already started are shut down before the error propagates.
    """
    tokenizer = tokenizer or load_tokenizer(cfg.policy.model_name, cfg.policy.tokenizer)
    train_prompts, skipped_train = load_prompts(cfg, tokenizer, "train")
    val_prompts, skipped_val = load_prompts(cfg, tokenizer, "validation")
    val_prompts = val_prompts[: loop.max_val_samples]
    if check_prompts is not None:
        check_prompts(tokenizer, val_prompts)
    train_loader = PromptDataLoader(train_prompts, batch_size=loop.num_prompts_per_step, seed=loop.seed, shuffle=cfg.data.shuffle)
    environment = build_environment(cfg.env)
    if with_generation:
        try:  # an impossible transport fails here, before any worker starts
            choose_transport(cfg.policy.generation.refit_transport, uses_gpus=cfg.cluster.uses_gpus, colocated=cfg.cluster.colocated)
        except ValueError as err:
            raise ConfigError("policy.generation.refit_transport", str(err)) from None

    checkpoints = CheckpointManager(cfg.checkpointing)
    resume_from, info = _resume_point(cfg, config_yaml, checkpoints)
    start_step = int(info["step"]) + 1 if resume_from is not None else 1
    saved_run_dir = Path(info["run_dir"]) if info.get("run_dir") else None
    log_root = Path(cfg.logger.log_dir).resolve()
    same_log_dir = saved_run_dir is not None and log_root in (saved_run_dir, saved_run_dir.parent)
    if same_log_dir and saved_run_dir.is_dir():
        run_dir = saved_run_dir  # a resumed run is the same run: keep logging where it logged
    else:  # a fresh run, or a resume given another logger.log_dir: log there, as asked
        run_dir = resolve_experiment_dir(cfg.logger.log_dir, cfg.logger.exp_numbering)
    (run_dir / "config.yaml").write_text(config_yaml)
    logger = Logger(cfg.logger, run_dir, resume_from_step=start_step if resume_from is not None else None)

    init_ray(cluster_cfg=cfg.cluster)
    cluster = RayVirtualCluster(cfg.cluster)
    started: list[Any] = []
    try:
        policy = PolicyWorkerGroup(cluster, cfg.policy, role="trainer", trainable=True,
                                   total_steps=loop.max_num_steps * optimizer_steps_per_step)
        started.append(policy)
        # A frozen model with the student's name loads the initial weights from disk: a snapshot of
        # the starting student, never the live one.
        frozen_group = PolicyWorkerGroup(cluster, frozen, role="teacher", trainable=False) if frozen is not None else None
        started.append(frozen_group)
        generation = refitter = None
        if with_generation:
            generation = GenerationWorkerGroup(cluster, cfg.policy.generation, cfg.policy.model_name,
                                               tokenizer_cfg=cfg.policy.tokenizer, precision=cfg.policy.precision)
            started.append(generation)
            refitter = WeightRefitter(policy, generation, bucket_mb=cfg.policy.generation.refit_bucket_mb,
                                      transport=cfg.policy.generation.refit_transport, cluster=cfg.cluster)
        if resume_from is not None:
            policy.load_checkpoint(str(resume_from / POLICY_CHECKPOINT_SUBDIR))
            train_loader.load_state_dict(info["dataloader"])
            if generation is not None and info.get("generate_calls") is not None:
                generation.set_generate_calls(info["generate_calls"])
            print(f"resumed from {resume_from} (step {info['step']}); continuing at step {start_step} in {run_dir}", flush=True)
        # Measured now that every role's weights are loaded; colocated overlap_generation needs them all resident.
        try:
            offload_each_step = resolve_offload(cfg.cluster.offload, colocated=cfg.cluster.colocated, uses_gpus=cfg.cluster.uses_gpus,
                                                memory=lambda: policy.workers.call_all("device_memory_info"),
                                                resident_required=loop.overlap_generation)
        except ResidentMemoryError as err:
            raise ConfigError("cluster.offload", str(err)) from None
    except BaseException:
        for group in reversed(started):
            if group is not None:
                group.shutdown()
        logger.close()
        raise

    return Runtime(
        cfg=cfg, loop=loop, config_yaml=config_yaml, tokenizer=tokenizer, train_prompts=train_prompts, val_prompts=val_prompts,
        train_loader=train_loader, policy=policy, frozen=frozen_group, generation=generation, refitter=refitter, cluster=cluster,
        environment=environment, logger=logger, run_dir=run_dir, checkpoints=checkpoints, timer=Timer(), start_step=start_step,
        num_trainer_workers=cluster.num_slots("trainer"), data_skipped_rows=skipped_train + skipped_val,
        offload_each_step=offload_each_step, skipped_steps=int(info.get("skipped_steps", 0)),
    )


# ---------------------------------------------------------------------------------------------- the step
def training_steps(rt: Runtime, desc: str) -> Iterator[int]:
    """Steps ``start_step .. max_steps`` with a progress bar; runs the start-of-run validation first."""
    if rt.loop.val_at_start and rt.start_step == 1 and rt.generation is not None:
        rt.logger.log_metrics(validate(rt, 0), step=0)
    total = rt.max_steps - rt.start_step + 1
    for step in progress_bar(range(rt.start_step, rt.max_steps + 1), desc=desc, unit="step", total=total):
        rt.timer.reset()
        yield step


def refit_if_stale(rt: Runtime) -> None:
    """Send the policy's weights to the generation workers when the policy trained since the last refit."""
    if rt.generation_is_stale and rt.refitter is not None:
        with rt.timer.time("refit"):
            rt.refitter.refit()
        rt.generation_is_stale = False


@contextmanager
def generation_awake(rt: Runtime) -> Iterator[None]:
    """Colocated mode: generation workers hold GPU memory only while they sample (unless ``cluster.offload``
    keeps them resident: ``rt.offload_each_step``)."""
    if rt.offload_each_step:
        with rt.timer.time("offload/generation_wake_up"):
            rt.generation.wake_up()
    try:
        yield
    finally:
        if rt.offload_each_step:
            with rt.timer.time("offload/generation_sleep"):
                rt.generation.sleep()


@contextmanager
def frozen_on_device(rt: Runtime, group) -> Iterator[None]:
    """A frozen group (teacher / reference) scores on GPUs the policy shares: with ``cluster.offload``
    moving roles (``rt.offload_each_step``), free the policy's optimizer memory and bring the group's
    weights in for the block, then move both back; each move is timed as ``offload/*``. A no-op when
    the roles stay resident, or when ``group`` is the policy itself (a live teacher)."""
    move = rt.offload_each_step and group is not rt.policy
    if move:
        with rt.timer.time("offload/optimizer_to_cpu"):
            rt.policy.offload_optimizer()
        with rt.timer.time("offload/teacher_to_gpu"):
            group.onload_to_device()
    try:
        yield
    finally:
        if move:
            with rt.timer.time("offload/teacher_to_cpu"):
                group.offload_to_cpu()
            with rt.timer.time("offload/optimizer_to_gpu"):
                rt.policy.onload_optimizer()


def generate_for(rt: Runtime, prompts: list[ProcessedPrompt], sampling: SamplingParams) -> RolloutBatch:
    """Sample and score ``sampling.n`` responses per prompt with the generation workers as they are
    (no refit, no timing, no wake-up: :func:`sample_rollouts` adds those)."""
    return generate_rollouts(
        rt.generation, prompts, sampling, environment=rt.environment,
        pad_token_id=rt.tokenizer.pad_token_id, max_total_length=rt.cfg.policy.max_total_sequence_length,
    )


def sample_rollouts(rt: Runtime, prompts: list[ProcessedPrompt], sampling: SamplingParams) -> RolloutBatch:
    """Refit if stale, then sample and score ``sampling.n`` responses per prompt (timed as ``generation``)."""
    refit_if_stale(rt)
    with rt.timer.time("generation"), generation_awake(rt):
        return generate_for(rt, prompts, sampling)


def train_policy(rt: Runtime, batch, loss_fn) -> TrainMetrics:
    """One optimizer step of the policy; marks generation stale and counts skipped (non-finite) steps.

    ``policy.max_consecutive_skipped_steps`` skips in a row stop the run with
    :class:`TrainingDivergedError`; a skipped step leaves the weights unchanged.
    """
    metrics = rt.policy.train(batch, loss_fn)
    if metrics.skipped:
        rt.skipped_steps += 1
        rt.consecutive_skipped_steps += 1
        log.warning("non-finite loss (%s) or gradient norm (%s): optimizer step skipped, weights unchanged",
                    metrics.loss, metrics.grad_norm)
        limit = rt.cfg.policy.max_consecutive_skipped_steps
        if rt.consecutive_skipped_steps >= limit:
            raise TrainingDivergedError(
                f"{rt.consecutive_skipped_steps} consecutive steps had a non-finite loss or gradient "
                f"(policy.max_consecutive_skipped_steps={limit}); the run diverged: lower policy.optimizer.lr or check the data"
            )
    else:
        rt.consecutive_skipped_steps = 0
        rt.generation_is_stale = True
        rt.policy_version += 1
    return metrics


def train_metrics(rt: Runtime, result: TrainMetrics) -> dict[str, float]:
    """The ``train/*`` metrics every algorithm logs from one :class:`TrainMetrics`."""
    return {
        "train/loss": result.loss,
        "train/grad_norm": result.grad_norm,
        "train/lr": result.lr,
        "train/num_valid_tokens": result.num_valid_tokens,
        "train/skipped_steps": float(rt.skipped_steps),
        # non-padding tokens (prompt + response) through the forward/backward, per trainer worker
        "train/trained_tokens_per_sec_per_gpu": result.tokens_per_sec / max(rt.num_trainer_workers, 1),
    }


def generation_throughput(rt: Runtime, response_lengths: list[int]) -> dict[str, float]:
    """``train/generated_tokens_per_sec``: response tokens of the step over the generation phase's seconds."""
    # overlap_generation: "generation" is only the wait; the batch's own sampling time is "generation_overlapped"
    seconds = rt.timer.elapsed("generation_overlapped") or rt.timer.elapsed("generation")
    return {"train/generated_tokens_per_sec": sum(response_lengths) / seconds} if seconds > 0 else {}


def finish_step(rt: Runtime, step: int, metrics: dict[str, float], rows: list[dict[str, Any]],
                validate_fn: Callable[[Runtime, int], dict[str, float]] | None = None) -> None:
    """End of every step: sample dump, validation when due, metrics line, checkpoint when due.

    ``validate_fn`` adds the algorithm's own validation (SFT's validation loss) to the generation
    accuracy of :func:`validate`, which runs when generation workers exist.
    """
    metrics = {**metrics, **rt.timer.metrics(prefix="timing/train")}
    if rt.data_skipped_rows:
        metrics["data/skipped_rows"] = float(rt.data_skipped_rows)
    if rt.cluster.uses_gpus:
        # a busy generation worker would answer only after its prefetch: the prefetcher keeps its last reading
        groups = (("trainer", rt.policy), ("teacher", rt.frozen), ("inference", rt.prefetch or rt.generation))
        for role, group in groups:
            if group is not None:
                metrics[f"memory/{role}_peak_gib"] = max(group.peak_memory_gib())
    rt.logger.log_samples(rows[: rt.loop.num_train_samples_to_save], f"train_data_step{step}.jsonl")
    is_last = step == rt.max_steps
    loop = rt.loop
    if (loop.val_period and step % loop.val_period == 0) or (is_last and loop.val_at_end):
        started = time.perf_counter()
        if validate_fn is not None:
            metrics.update(validate_fn(rt, step))
        if rt.generation is not None:
            metrics.update(validate(rt, step))
        metrics["timing/validation/total"] = time.perf_counter() - started
    rt.logger.log_metrics(metrics, step=step)
    rt.history.append({"step": step, **metrics})
    if rt.cfg.checkpointing.enabled and rt.checkpoints.should_save(step, is_last):
        with rt.timer.time("checkpointing"):
            save_checkpoint(rt, step, metrics)


# ---------------------------------------------------------------------------------------------- validation
def validate(rt: Runtime, step: int, *, samples_file: str | None = None) -> dict[str, float]:
    """Greedy answers on the validation prompts: accuracy over the prompts that fit, and mean length.

    Prompts longer than ``data.max_input_seq_length`` are not scored as wrong answers: they are
    counted apart (``validation/prompts_too_long``). An empty validation set skips validation
    (said in the log) instead of reporting accuracy 0.
    """
    if not rt.val_prompts:
        log.warning("validation skipped at step %d: the validation set is empty", step)
        return {}
    if rt.prefetch is not None:
        rt.prefetch.wait()  # the generation workers must be idle (and a failed prefetch raises here)
    refit_if_stale(rt)  # validate the weights this step produced, not the ones generation still holds
    cfg = rt.cfg
    sampling = SamplingParams.from_config(cfg.policy.generation, n=1).greedy()
    rewards, lengths, rows = [], [], []
    fitting = [prompt for prompt in rt.val_prompts if not prompt.too_long]
    too_long = len(rt.val_prompts) - len(fitting)
    batch_size = rt.loop.val_batch_size
    with generation_awake(rt):
        for start in progress_bar(range(0, len(fitting), batch_size), desc=f"validation step {step}", unit="batch"):
            rollouts = generate_rollouts(
                rt.generation, fitting[start : start + batch_size], sampling, environment=rt.environment,
                pad_token_id=rt.tokenizer.pad_token_id, max_total_length=cfg.policy.max_total_sequence_length,
            )
            rewards += rollouts.rewards
            lengths += rollouts.response_lengths
            rows += sample_rows(rollouts)
    rt.logger.log_samples(rows, samples_file or f"val_data_step{step}.jsonl")
    if cfg.logger.num_val_samples_to_print:
        print(format_validation_samples(rows, cfg.logger.num_val_samples_to_print), flush=True)
    metrics = {"validation/prompts_too_long": float(too_long), "validation/num_scored": float(len(rewards))}
    if rewards:
        metrics["validation/accuracy"] = sum(rewards) / len(rewards)
        metrics["validation/avg_length"] = sum(lengths) / len(lengths)
    else:
        log.warning("validation at step %d scored no prompt: all %d are longer than data.max_input_seq_length", step, too_long)
    return metrics


# ---------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(rt: Runtime, step: int, metrics: dict[str, float]) -> Path | None:
    """``step_N/`` with policy weights + optimizer, config, data order and counters, atomically.

    Non-finite metrics are left out of ``training_info.json``; the weights are finite because a
    non-finite step never updates them.
    """
    # overlap_generation: the data order and seed counters from before the prefetched prompts were drawn, so a
    # resumed run generates them again
    loader_state, generate_calls = rt.prefetch.resume_point() if rt.prefetch is not None else (
        rt.train_loader.state_dict(), rt.generation.get_generate_calls() if rt.generation is not None else None)
    tmp_dir = rt.checkpoints.start(step)
    rt.policy.save_checkpoint(str(tmp_dir / POLICY_CHECKPOINT_SUBDIR))
    (tmp_dir / "config.yaml").write_text(rt.config_yaml)
    info: dict[str, Any] = {
        "step": step,
        "dataloader": loader_state,
        "run_dir": str(rt.run_dir.resolve()),
        "skipped_steps": rt.skipped_steps,
        **{k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)},
    }
    if generate_calls is not None:
        info["generate_calls"] = generate_calls
    return rt.checkpoints.finalize(step, tmp_dir, info)


# ---------------------------------------------------------------------------------------------- end of run
def cleanup(rt: Runtime, *, interrupted: bool = False) -> Path | None:
    """Write the curves PNG, close loggers and stop the workers (every group, even after an error).
    ``interrupted`` (Ctrl-C): do not wait for a prefetched generation before stopping its workers."""
    png = None
    try:
        png = plot_metric_curves(rt.run_dir / "metrics.jsonl", rt.cfg.logger.plot_metrics, rt.run_dir / "curves.png")
    finally:
        if rt.prefetch is not None:
            rt.prefetch.close(wait=not interrupted)  # else no generation is left running on workers about to stop
        rt.logger.close()
        for group in (rt.generation, rt.frozen, rt.policy):
            if group is not None:
                group.shutdown()
    return png


def run_algorithm(setup: Callable[[], Runtime], train: Callable[[Runtime], None], *, title: str,
                  summary_labels: dict[str, str]) -> dict[str, Any]:
    """``setup() -> train(rt) -> cleanup(rt)`` (cleanup in a ``finally``); returns the summary."""
    started = time.time()
    rt = setup()
    png, interrupted = None, False
    try:
        train(rt)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        png = cleanup(rt, interrupted=interrupted)
    summary = write_summary(rt.history, rt.run_dir, summary_labels, time.time() - started, title)
    summary["curves_png"] = str(png) if png else None
    return summary
