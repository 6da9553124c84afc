"""Typed config of ``examples/run_grpo.py``: GRPO and its reward-mixed context-distillation mode.

Defaults live here only; YAML files set what differs. :func:`check_grpo_config` runs the checks
across sections before any worker starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from nemo_distill.algorithms.runtime_config import LoopConfig, RuntimeConfig, check_runtime_config
from nemo_distill.config import ConfigError
from nemo_distill.data.datasets import resolve_repo_path
from nemo_distill.models.policy.config import TeacherConfig


@dataclass
class GRPOLossConfig:
    """``loss_fn``: the clipped surrogate and its normalisation (see ``loss_functions.normalize_token_loss``)."""

    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = "grpo"
    clip_eps_low: float = field(default=0.2, metadata={"ge": 0.0})
    clip_eps_high: float = field(default=0.2, metadata={"ge": 0.0})  # > clip_eps_low: DAPO's clip-higher
    dual_clip_c: float | None = None  # > 1: cap a negative-advantage token's loss at -c*A (dual clip)
    beta: float = field(default=0.0, metadata={"ge": 0.0})  # k3 KL to a frozen reference (the initial student)


@dataclass
class ContextDistillationRewardConfig:
    """``grpo.context_distillation``: seed 002's reward mix (off while every tau but ``adv_tau`` is 0).

    ``reward = adv_tau·task + teacher_tau·Σ log p_teacher(y | context + prompt) − student_tau·Σ log p_student(y | prompt)``.
    """

    adv_tau: float = 1.0  # weight of the task reward (verifier)
    teacher_tau: float = 0.0  # weight of the teacher's log-prob sum (needs a teacher)
    student_tau: float = 0.0  # weight of the student's (sampling) log-prob sum: an entropy bonus
    use_full_reward_baseline: bool = True  # true: sequence level, KL inside the group baseline; false: per-token KL in the loss
    kl_only_incorrect: bool = False  # gate the log-prob terms by 1 - group mean task reward
    context: str = ""  # text prepended to the student's prompt text (before the chat template) for the teacher
    context_file: str | None = None  # a file holding the context; wins over ``context``
    teacher_source: Literal["frozen", "live"] = "frozen"  # frozen: teacher section's model; live: the current policy
    eval_baseline: bool = False  # before training: student without context vs teacher with it on the validation split

    @property
    def enabled(self) -> bool:
        return self.teacher_tau != 0.0 or self.student_tau != 0.0

    @property
    def needs_teacher(self) -> bool:
        return self.teacher_tau != 0.0


@dataclass
class GRPOConfig(LoopConfig):
    """``grpo``: the loop's knobs (:class:`LoopConfig`) plus GRPO's own."""

    num_generations_per_prompt: int = field(default=4, metadata={"ge": 1})  # the group size
    normalize_rewards_std: bool = True  # divide group-centred rewards by the group std (GRPO); false: Dr. GRPO
    context_distillation: ContextDistillationRewardConfig = field(default_factory=ContextDistillationRewardConfig)


@dataclass
class GRPOMasterConfig(RuntimeConfig):
    """The whole config of one GRPO run. ``teacher`` is the frozen model: the reference for ``beta``
    and the context teacher (one group serves both: same weights, different inputs)."""

    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    loss_fn: GRPOLossConfig = field(default_factory=GRPOLossConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)


def samples_per_step(cfg: GRPOMasterConfig) -> int:
    return cfg.grpo.num_prompts_per_step * cfg.grpo.num_generations_per_prompt


def needs_frozen_model(cfg: GRPOMasterConfig) -> bool:
    """A frozen group is started for the k3 reference or for a frozen context teacher."""
    mix = cfg.grpo.context_distillation
    return cfg.loss_fn.beta > 0 or (mix.needs_teacher and mix.teacher_source == "frozen")


def resolve_context(cfg: ContextDistillationRewardConfig) -> str:
    """The teacher's context text: ``context_file``'s content when set, else ``context``."""
    if cfg.context_file is None:
        return cfg.context
    path = resolve_repo_path(cfg.context_file)
    if not path.is_file():
        raise ConfigError("grpo.context_distillation.context_file", f"{path} does not exist")
    return path.read_text()


def check_grpo_config(cfg: GRPOMasterConfig) -> None:
    """Cross-section checks; each failure is a ``ConfigError`` naming the key and the fix."""
    total = samples_per_step(cfg)
    check_runtime_config(cfg, samples_per_step=total, samples_key="grpo.num_prompts_per_step * grpo.num_generations_per_prompt",
                         allow_minibatches=True)
    if cfg.loss_fn.dual_clip_c is not None and cfg.loss_fn.dual_clip_c <= 1.0:
        raise ConfigError("loss_fn.dual_clip_c", f"must be > 1 (or null to turn dual clip off), got {cfg.loss_fn.dual_clip_c}")
    mix = cfg.grpo.context_distillation
    if mix.eval_baseline and not mix.needs_teacher:
        raise ConfigError("grpo.context_distillation.eval_baseline", "needs a teacher: set grpo.context_distillation.teacher_tau > 0")
    if mix.needs_teacher and mix.teacher_source == "frozen" and cfg.cluster.colocated is False and not cfg.cluster.role_slot_ids("teacher"):
        raise ConfigError("cluster.teacher_gpu_ids", "teacher_tau > 0 with a frozen teacher needs teacher slots")
    if mix.eval_baseline and cfg.grpo.max_val_samples < 1:
        raise ConfigError("grpo.max_val_samples", "eval_baseline needs a validation split with at least one prompt")
    if not mix.use_full_reward_baseline and mix.teacher_source == "live":
        raise ConfigError(
            "grpo.context_distillation.teacher_source",
            "'live' is supported with use_full_reward_baseline=true only (the token-level mode needs the teacher's "
            "per-token log-probs before the update); use teacher_source=frozen",
        )
    if cfg.grpo.context_distillation.context_file is not None:
        resolve_context(cfg.grpo.context_distillation)
