"""The config every algorithm shares: the runtime's sections, the loop's knobs, and their checks.

An algorithm's master config subclasses :class:`RuntimeConfig` and adds its own sections (its
loop section subclasses :class:`LoopConfig`); all defaults live in these dataclasses, nowhere
else. :func:`check_runtime_config` runs the checks that need more than one section; every
algorithm calls it before any worker starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from nemo_distill.config import ConfigError
from nemo_distill.data.datasets import DataConfig
from nemo_distill.distributed.config import ClusterConfig
from nemo_distill.environments.config import EnvConfig
from nemo_distill.models.generation.config import GenerationConfig
from nemo_distill.models.policy.config import PolicyConfig
from nemo_distill.utils.checkpoint import CheckpointingConfig
from nemo_distill.utils.logger import LoggerConfig


@dataclass
class StudentPolicyConfig(PolicyConfig):
    """The student: a trainable policy plus how its rollouts are sampled."""

    generation: GenerationConfig = field(default_factory=GenerationConfig)


@dataclass
class LoopConfig:
    """The knobs every training loop has (``distillation``, ``grpo``, ``sft`` sections extend it)."""

    max_num_steps: int = field(default=10, metadata={"ge": 1})  # optimizer steps of the run (a resume continues to it)
    max_num_epochs: int = field(default=10, metadata={"ge": 1})  # passes over the training prompts, whichever ends first
    num_prompts_per_step: int = field(default=4, metadata={"ge": 1})
    val_period: int = field(default=0, metadata={"ge": 0})  # validate every N steps; 0 = never mid-run
    val_at_start: bool = False
    val_at_end: bool = True
    val_batch_size: int = field(default=8, metadata={"ge": 1})
    max_val_samples: int = field(default=32, metadata={"ge": 1})
    seed: int = 42  # data order
    num_train_samples_to_save: int = field(default=8, metadata={"ge": 0})  # rows of train_data_step{N}.jsonl
    # Generate step n+1's rollouts while step n trains (algorithms/rollout_prefetch.py): the rollouts are one
    # policy version stale (train/rollout_staleness). Split placement, or colocated with the roles resident
    # (cluster.offload: auto or never; auto fails at set-up if the GPU memory is too tight).
    overlap_generation: bool = False


@dataclass
class RuntimeConfig:
    """The sections the shared runtime reads; algorithm configs add theirs."""

    policy: StudentPolicyConfig = field(default_factory=StudentPolicyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    checkpointing: CheckpointingConfig = field(default_factory=CheckpointingConfig)


def check_runtime_config(cfg: RuntimeConfig, *, samples_per_step: int, samples_key: str, allow_minibatches: bool = False) -> None:
    """Cross-section checks every algorithm needs; each failure names the key and the fix.

    Args:
        samples_per_step: samples one step trains on (prompts x generations per prompt).
        samples_key: how the user sets it, e.g. ``"grpo.num_prompts_per_step * grpo.num_generations_per_prompt"``.
        allow_minibatches: the loop makes ``samples_per_step / policy.train_global_batch_size``
            optimizer updates per step (GRPO), so the batch size must divide the samples.
    """
    if allow_minibatches:
        if samples_per_step % cfg.policy.train_global_batch_size:
            raise ConfigError(
                "policy.train_global_batch_size",
                f"is {cfg.policy.train_global_batch_size} but must divide the {samples_key} = {samples_per_step} samples of "
                "a step (each optimizer update trains on one minibatch of train_global_batch_size samples)",
            )
    elif cfg.policy.train_global_batch_size != samples_per_step:
        raise ConfigError(
            "policy.train_global_batch_size",
            f"is {cfg.policy.train_global_batch_size} but one step produces {samples_key} = {samples_per_step} samples; "
            "set them equal",
        )
    for section in (f.name for f in fields(cfg) if isinstance(getattr(cfg, f.name), LoopConfig)):
        if getattr(cfg, section).overlap_generation and cfg.cluster.colocated and cfg.cluster.offload == "always":
            raise ConfigError(
                f"{section}.overlap_generation",
                "runs generation while the teacher and trainer run, but cluster.offload=always makes colocated roles "
                "take turns on each GPU (generation sleeps while the others run); set cluster.offload=auto or never "
                "(roles resident), place the roles on separate slots (cluster.colocated=false), or set it to false",
            )
    generation = cfg.policy.generation
    if generation.backend == "vllm" and generation.vllm_cfg.max_model_len < cfg.policy.max_total_sequence_length:
        raise ConfigError(
            "policy.generation.vllm_cfg.max_model_len",
            f"({generation.vllm_cfg.max_model_len}) is shorter than policy.max_total_sequence_length "
            f"({cfg.policy.max_total_sequence_length})",
        )
    if cfg.cluster.inference_dp is not None:
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
