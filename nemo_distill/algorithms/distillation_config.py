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
from nemo_distill.algorithms.runtime_config import LoopConfig, RuntimeConfig, check_runtime_config
from nemo_distill.data.datasets import resolve_repo_path
from nemo_distill.models.policy.config import TeacherConfig

DEFAULT_TEACHER_PREFIX_TEMPLATE = "You are given a problem and a trace: {problem} + {trace}. Solve it on your own."


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
class DistillationConfig(LoopConfig):
    """``distillation``: the shared loop knobs (:class:`LoopConfig`) plus distillation's own."""

    num_generations_per_prompt: int = field(default=2, metadata={"ge": 1})
    max_rollout_turns: int = field(default=1, metadata={"ge": 1})
    topk_logits_k: int = 64  # teacher logits kept per token; 1 <= k <= vocab size (checked at setup)
    context_distillation: ContextDistillationConfig = field(default_factory=ContextDistillationConfig)


@dataclass
class DistillationMasterConfig(RuntimeConfig):
    """The whole config of one distillation run: the runtime's sections plus these."""

    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    loss_fn: TopkKLLossConfig = field(default_factory=TopkKLLossConfig)
    distillation: DistillationConfig = field(default_factory=DistillationConfig)


def rollout_batch_size(cfg: DistillationMasterConfig) -> int:
    """Samples per step: prompts times generations per prompt."""
    return cfg.distillation.num_prompts_per_step * cfg.distillation.num_generations_per_prompt


def check_distillation_config(cfg: DistillationMasterConfig, *, student_vocab_size: int | None = None) -> None:
    """Cross-section checks; each failure is a ``ConfigError`` naming the key and the fix."""
    dist = cfg.distillation
    check_runtime_config(cfg, samples_per_step=rollout_batch_size(cfg),
                         samples_key="distillation.num_prompts_per_step * distillation.num_generations_per_prompt")
    if dist.topk_logits_k < 1:
        raise ConfigError("distillation.topk_logits_k", f"must be >= 1, got {dist.topk_logits_k}")
    if student_vocab_size is not None and dist.topk_logits_k > student_vocab_size:
        raise ConfigError(
            "distillation.topk_logits_k",
            f"is {dist.topk_logits_k} but the vocabulary has only {student_vocab_size} tokens",
        )
    if dist.max_rollout_turns != 1:
        raise ConfigError(
            "distillation.max_rollout_turns",
            f"must be 1, got {dist.max_rollout_turns}: multi-turn rollouts are not implemented (every mode samples "
            "one response per prompt), so another value would be ignored",
        )
    context = dist.context_distillation
    teacher_length, default_length = cfg.teacher.max_total_sequence_length, TeacherConfig().max_total_sequence_length
    if not context.enabled and teacher_length not in (cfg.policy.max_total_sequence_length, default_length):
        raise ConfigError(
            "teacher.max_total_sequence_length",
            f"is {teacher_length} but policy.max_total_sequence_length is {cfg.policy.max_total_sequence_length}: outside "
            "context distillation the teacher scores the student's own sequences, so only the policy's length applies; "
            "set them equal (or leave the teacher's unset)",
        )
    if context.enabled:
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
