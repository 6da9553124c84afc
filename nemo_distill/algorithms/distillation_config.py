"""Typed config of ``examples/run_distillation.py``: the sections and the checks across them.

Each section's dataclass lives next to the code that uses it; this module composes them into
:class:`DistillationMasterConfig` and adds the distillation-only sections. All defaults are
here or in those dataclasses, nowhere else: YAML files set only what differs.

:func:`check_distillation_config` runs the checks that need more than one section (and the
model's vocabulary size); it runs before any worker starts, so bad input fails in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from nemo_distill.algorithms.context_distillation_utils import validate_teacher_prefix_template
from nemo_distill.config import ConfigError
from nemo_distill.data.datasets import DataConfig, resolve_repo_path
from nemo_distill.distributed.config import ClusterConfig
from nemo_distill.environments.config import EnvConfig, MathEnvConfig  # noqa: F401 (MathEnvConfig: re-exported)
from nemo_distill.models.generation.config import GenerationConfig
from nemo_distill.models.policy.config import PolicyConfig, TeacherConfig
from nemo_distill.utils.checkpoint import CheckpointingConfig
from nemo_distill.utils.logger import LoggerConfig

DEFAULT_TEACHER_PREFIX_TEMPLATE = "You are given a problem and a trace: {problem} + {trace}. Solve it on your own."


@dataclass
class StudentPolicyConfig(PolicyConfig):
    """The student: a trainable policy plus how its rollouts are sampled."""

    generation: GenerationConfig = field(default_factory=GenerationConfig)


@dataclass
class TopkKLLossConfig:
    """``loss_fn``: KL between teacher and student on the teacher's top-k support (NeMo-RL semantics)."""

    kl_type: Literal["forward", "reverse", "mixed"] = "mixed"  # forward = KL(teacher || student)
    mixed_kl_weight: float = field(default=0.5, metadata={"ge": 0.0, "le": 1.0})  # weight of the forward term
    zero_outside_topk: bool = False  # student not renormalised over k; reverse KL adds the tail term


@dataclass
class TraceExtractorConfig:
    """How the trace is cut from the student's response (V1: the first ``<think>`` span)."""

    type: Literal["think_tag"] = "think_tag"
    selection: Literal["first"] = "first"
    missing_trace_policy: Literal["empty", "drop"] = "empty"  # no span: empty trace, or drop the sample


@dataclass
class ContextDistillationConfig:
    """``distillation.context_distillation``: the teacher is a frozen copy of the student that also sees
    ``teacher_prefix_template.format(problem=..., trace=...)`` before the student's response."""

    enabled: bool = False
    mode: Literal["self_frozen"] = "self_frozen"
    alignment: Literal["response_token_index"] = "response_token_index"
    problem_source: Literal["original_user_problem"] = "original_user_problem"
    teacher_prefix_template: str = DEFAULT_TEACHER_PREFIX_TEMPLATE
    teacher_prefix_template_file: str | None = None  # a file holding the template; wins over the string
    teacher_prefix_chat_template: bool = True  # render the prefix as a user turn of the chat template (+ assistant header)
    trace_extractor: TraceExtractorConfig = field(default_factory=TraceExtractorConfig)
    overflow_policy: Literal["truncate_prefix_only"] = "truncate_prefix_only"
    max_teacher_sequence_length: int | None = None  # None: teacher.max_total_sequence_length
    print_first_sample: bool = False  # print generation, trace, teacher context and scored text once


@dataclass
class DistillationConfig:
    """``distillation``: the loop's own knobs."""

    max_num_steps: int = field(default=10, metadata={"ge": 1})
    max_num_epochs: int = field(default=10, metadata={"ge": 1})
    num_prompts_per_step: int = field(default=4, metadata={"ge": 1})
    num_generations_per_prompt: int = field(default=2, metadata={"ge": 1})
    max_rollout_turns: int = field(default=1, metadata={"ge": 1})
    topk_logits_k: int = 64  # teacher logits kept per token; 1 <= k <= vocab size (checked at setup)
    val_period: int = field(default=0, metadata={"ge": 0})  # validate every N steps; 0 = never mid-run
    val_at_start: bool = False
    val_at_end: bool = True
    val_batch_size: int = field(default=8, metadata={"ge": 1})
    max_val_samples: int = field(default=32, metadata={"ge": 1})
    seed: int = 42
    num_train_samples_to_save: int = field(default=8, metadata={"ge": 0})  # rows of train_data_step{N}.jsonl
    context_distillation: ContextDistillationConfig = field(default_factory=ContextDistillationConfig)


@dataclass
class DistillationMasterConfig:
    """The whole config of one distillation run."""

    policy: StudentPolicyConfig = field(default_factory=StudentPolicyConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    loss_fn: TopkKLLossConfig = field(default_factory=TopkKLLossConfig)
    distillation: DistillationConfig = field(default_factory=DistillationConfig)
    data: DataConfig = field(default_factory=DataConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    checkpointing: CheckpointingConfig = field(default_factory=CheckpointingConfig)


def rollout_batch_size(cfg: DistillationMasterConfig) -> int:
    """Samples per step: prompts times generations per prompt."""
    return cfg.distillation.num_prompts_per_step * cfg.distillation.num_generations_per_prompt


def check_distillation_config(cfg: DistillationMasterConfig, *, student_vocab_size: int | None = None) -> None:
    """Cross-section checks; each failure is a ``ConfigError`` naming the key and the fix."""
    dist = cfg.distillation
    if cfg.policy.train_global_batch_size != rollout_batch_size(cfg):
        raise ConfigError(
            "policy.train_global_batch_size",
            f"is {cfg.policy.train_global_batch_size} but one step produces distillation.num_prompts_per_step * "
            f"distillation.num_generations_per_prompt = {rollout_batch_size(cfg)} samples; set them equal",
        )
    if dist.topk_logits_k < 1:
        raise ConfigError("distillation.topk_logits_k", f"must be >= 1, got {dist.topk_logits_k}")
    if student_vocab_size is not None and dist.topk_logits_k > student_vocab_size:
        raise ConfigError(
            "distillation.topk_logits_k",
            f"is {dist.topk_logits_k} but the vocabulary has only {student_vocab_size} tokens",
        )
    if cfg.policy.generation.vllm_cfg.max_model_len < cfg.policy.max_total_sequence_length and cfg.policy.generation.backend == "vllm":
        raise ConfigError(
            "policy.generation.vllm_cfg.max_model_len",
            f"({cfg.policy.generation.vllm_cfg.max_model_len}) is shorter than policy.max_total_sequence_length "
            f"({cfg.policy.max_total_sequence_length})",
        )
    if cfg.cluster.inference_dp is not None:
        generation = cfg.policy.generation
        engine_tp = generation.vllm_cfg.tensor_parallel_size if generation.backend == "vllm" else 1
        inference_slots = len(cfg.cluster.role_slot_ids("inference"))
        if cfg.cluster.inference_dp * engine_tp != inference_slots:
            raise ConfigError(
                "cluster.inference_dp",
                f"is {cfg.cluster.inference_dp} but {inference_slots} inference slot(s) with engine tensor parallel "
                f"{engine_tp} give data parallel {inference_slots // engine_tp}; leave it unset to infer it",
            )
    if cfg.data.max_input_seq_length >= cfg.policy.max_total_sequence_length:
        raise ConfigError(
            "data.max_input_seq_length",
            f"({cfg.data.max_input_seq_length}) leaves no room for a response within "
            f"policy.max_total_sequence_length ({cfg.policy.max_total_sequence_length})",
        )
    context = dist.context_distillation
    if context.enabled:
        if dist.max_rollout_turns != 1:
            raise ConfigError(
                "distillation.max_rollout_turns",
                f"must be 1 for context distillation (V1 supports single-turn rollouts), got {dist.max_rollout_turns}",
            )
        if cfg.policy.model_name != cfg.teacher.model_name:
            raise ConfigError(
                "teacher.model_name",
                f"must equal policy.model_name for context self-distillation (mode self_frozen): "
                f"'{cfg.teacher.model_name}' != '{cfg.policy.model_name}'",
            )
        key = "teacher_prefix_template_file" if context.teacher_prefix_template_file else "teacher_prefix_template"
        try:
            validate_teacher_prefix_template(resolve_teacher_prefix_template(context))
        except ValueError as err:
            raise ConfigError(f"distillation.context_distillation.{key}", str(err)) from err
        max_len = context.max_teacher_sequence_length
        if max_len is not None and max_len > cfg.teacher.max_total_sequence_length:
            raise ConfigError(
                "distillation.context_distillation.max_teacher_sequence_length",
                f"({max_len}) exceeds teacher.max_total_sequence_length ({cfg.teacher.max_total_sequence_length})",
            )


def resolve_teacher_prefix_template(cfg: ContextDistillationConfig) -> str:
    """The template text: from ``teacher_prefix_template_file`` when set, else the inline string."""
    if cfg.teacher_prefix_template_file is None:
        return cfg.teacher_prefix_template
    path = resolve_repo_path(cfg.teacher_prefix_template_file)
    if not path.is_file():
        raise ConfigError("distillation.context_distillation.teacher_prefix_template_file", f"{path} does not exist")
    return path.read_text()
