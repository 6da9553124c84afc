"""``policy:`` and ``teacher:`` sections: model, precision, parallelism, LoRA, optimizer, schedule."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from nemo_distill.models.loading import EMBEDDED_MODEL_NAME, TokenizerConfig


@dataclass
class DTensorConfig:
    enabled: bool = True  # FSDP2 (DTensor) sharding over data-parallel ranks
    tensor_parallel_size: int = 1  # Colwise q/k/v/gate/up, Rowwise o/down; vocab-sharded lm_head when untied
    context_parallel_size: int = 1  # GPU only (torch's context_parallel has no CPU attention strategy)
    activation_checkpointing: bool = False
    cpu_offload: bool = False  # FSDP2 CPUOffloadPolicy: parameters and gradients live on the CPU

    def __post_init__(self) -> None:
        if self.tensor_parallel_size < 1 or self.context_parallel_size < 1:
            raise ValueError("dtensor_cfg.tensor_parallel_size and context_parallel_size must be >= 1")


@dataclass
class LoraConfig:
    enabled: bool = False
    rank: int = 16
    alpha: int = 32  # scaling = alpha / rank
    dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"  # every linear layer incl. the MLP, never lm_head


@dataclass
class OptimizerConfig:
    lr: float = field(default=1.0e-5, metadata={"gt": 0.0})
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1.0e-8
    weight_decay: float = field(default=0.0, metadata={"ge": 0.0})


@dataclass
class SchedulerConfig:
    type: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = field(default=0, metadata={"ge": 0})  # linear warmup from 0
    total_steps: int | None = None  # cosine horizon; None: distillation.max_num_steps
    min_lr_ratio: float = field(default=0.0, metadata={"ge": 0.0, "le": 1.0})  # cosine floor as a fraction of lr


@dataclass
class TeacherConfig:
    """A frozen model that scores sequences (top-k logits, log-probs)."""

    model_name: str = EMBEDDED_MODEL_NAME
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    precision: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bfloat16 on GPU, float32 on CPU
    max_total_sequence_length: int = field(default=1024, metadata={"ge": 2})
    logprob_batch_size: int = field(default=4, metadata={"ge": 1})  # sequences per forward when scoring
    logprob_chunk_size: int = field(default=256, metadata={"ge": 1})  # rows per fp32 log-softmax chunk
    dtensor_cfg: DTensorConfig = field(default_factory=DTensorConfig)


@dataclass
class PolicyConfig(TeacherConfig):
    """A trainable model: the teacher's fields plus optimisation."""

    train_global_batch_size: int = field(default=8, metadata={"ge": 1})  # samples per optimizer step (all ranks)
    train_micro_batch_size: int = field(default=2, metadata={"ge": 1})  # samples per forward/backward per rank
    max_grad_norm: float | None = 1.0  # None: no clipping
    lora: LoraConfig = field(default_factory=LoraConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
