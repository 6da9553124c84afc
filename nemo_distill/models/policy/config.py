"""``policy:`` and ``teacher:`` sections: model, precision, parallelism, LoRA, optimizer, schedule.

Every default of these sections lives here and nowhere else (YAML files set only what differs).
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import Literal

from nemo_distill.models.loading import EMBEDDED_MODEL_NAME, TokenizerConfig


@dataclass
class DTensorConfig:
    """How one model is laid out over its workers: a (dp, cp, tp) device mesh.

    ``world_size = dp * cp * tp``; dp is whatever is left after cp and tp.
    """

    enabled: bool = True  # FSDP2 (DTensor) sharding over data-parallel ranks; false: every rank holds a full copy
    tensor_parallel_size: int = field(default=1, metadata={"ge": 1})  # Colwise q/k/v/gate/up, Rowwise o/down
    context_parallel_size: int = field(default=1, metadata={"ge": 1})  # sequence sharding (GPU only: ring attention)
    activation_checkpointing: bool = False  # recompute each decoder layer in backward (less memory, ~30% slower)
    cpu_offload: bool = False  # FSDP2 CPUOffloadPolicy: sharded parameters, gradients and optimizer live on the CPU
    # FSDP2 units: "layers" = one per decoder layer plus the root (gathers one layer at a time, reduces each
    # layer's gradients as its backward ends); "model" = the whole model as one unit (one gather and cast of
    # the weights per micro-batch instead of two per layer, but the whole bf16 copy and every layer's
    # gradients exist at once: +2.9 GiB for 0.6B; scoring calls drop the copy when they end). "auto": on an
    # FSDP2 mesh of one rank (nothing to shard; a launch-bound step pays per hook) "model" for a trainable
    # model and no FSDP2 at all for a frozen one (loaded in the compute dtype: nothing to cast either);
    # "layers" on more ranks, with cpu_offload, and for a trainable model with activation checkpointing.
    fsdp_units: Literal["auto", "layers", "model"] = "auto"

    def __post_init__(self) -> None:
        if self.cpu_offload and self.tensor_parallel_size > 1:
            raise ValueError(
                "dtensor_cfg.cpu_offload=true cannot be combined with dtensor_cfg.tensor_parallel_size > 1 "
                f"(got {self.tensor_parallel_size}); use one of them"
            )


@dataclass
class LoraConfig:
    """Low-rank adapters (peft) on the student; only the adapters train, the base stays frozen."""

    enabled: bool = False
    rank: int = field(default=16, metadata={"ge": 1})  # r: inner dimension of each B @ A update
    alpha: int = field(default=32, metadata={"ge": 1})  # the update is scaled by alpha / rank
    dropout: float = field(default=0.0, metadata={"ge": 0.0, "lt": 1.0})  # dropout on the adapter input
    # "all-linear": every linear layer incl. the MLP, never lm_head; or a list of module names ("q_proj", ...)
    target_modules: list[str] | str = "all-linear"

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise ValueError("lora.target_modules is an empty list; use 'all-linear' or name modules like ['q_proj', 'v_proj']")


@dataclass
class OptimizerConfig:
    """AdamW."""

    lr: float = field(default=1.0e-5, metadata={"gt": 0.0, "finite": True})  # peak learning rate
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # (beta1, beta2)
    eps: float = field(default=1.0e-8, metadata={"gt": 0.0, "finite": True})
    weight_decay: float = field(default=0.0, metadata={"ge": 0.0, "finite": True})  # decoupled (AdamW) decay
    # Which AdamW kernel: "fused" (one kernel for every parameter; CUDA, or CPU float tensors), "foreach"
    # (a few multi-tensor kernels), "for_loop" (one parameter at a time). "auto": fused when every
    # trainable parameter is on a GPU, else foreach. All give the same update up to rounding.
    implementation: Literal["auto", "fused", "foreach", "for_loop"] = "auto"

    def __post_init__(self) -> None:
        for name in ("lr", "eps", "weight_decay"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"optimizer.{name} must be a finite number, got {getattr(self, name)}")
        if len(self.betas) != 2 or not all(0.0 <= beta < 1.0 for beta in self.betas):
            raise ValueError(f"optimizer.betas must be two numbers in [0, 1), got {self.betas}")


@dataclass
class SchedulerConfig:
    """Learning-rate multiplier per optimizer step: linear warmup, then constant or cosine decay."""

    type: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = field(default=0, metadata={"ge": 0})  # linear warmup from lr/warmup_steps to lr
    total_steps: int | None = None  # cosine horizon in optimizer steps; None: the run's max steps (cosine needs one)
    min_lr_ratio: float = field(default=0.0, metadata={"ge": 0.0, "le": 1.0})  # cosine floor as a fraction of lr

    def __post_init__(self) -> None:
        if self.total_steps is not None and self.total_steps <= self.warmup_steps and self.type == "cosine":
            raise ValueError(
                f"scheduler.total_steps ({self.total_steps}) must exceed scheduler.warmup_steps ({self.warmup_steps}) "
                "for a cosine schedule"
            )


@dataclass
class TeacherConfig:
    """A frozen model that scores sequences (log-probs, top-k logits)."""

    model_name: str = EMBEDDED_MODEL_NAME  # local HF folder, cached hub id, or the embedded default
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    # auto: bf16 compute on GPU (a trainable model keeps fp32 master weights and reduces gradients in fp32),
    # fp32 on CPU
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    max_total_sequence_length: int = field(default=1024, metadata={"ge": 2})  # prompt + response tokens
    logprob_batch_size: int = field(default=4, metadata={"ge": 1})  # sequences per forward when scoring
    logprob_chunk_size: int = field(default=512, metadata={"ge": 1})  # sequence rows per fp32 log-softmax / top-k chunk
    # Scoring (log-probs, top-k): when every row of a micro-batch starts with the same >= this many
    # tokens (a teacher's context, a long shared system prompt), that prefix runs once and each row's
    # rest runs against its KV cache (read, never copied per row): P + B(T - P) positions instead of B·T,
    # for one extra forward per micro-batch (launches, and FSDP2's gathers). 0: off. Needs tp = cp = 1;
    # skipped with compile_decoder_layers.
    logprob_shared_prefix_min_tokens: int = field(default=128, metadata={"ge": 0})
    # torch.compile each decoder layer's forward (fused elementwise kernels, fewer launches; the first
    # micro-batch of each new shape pays a compile). Not with context parallelism.
    compile_decoder_layers: bool = False
    # Llama / Qwen / Mistral RMSNorm modules as one F.rms_norm call each: torch's fused kernel on CUDA
    # (one launch instead of ~8 forward and ~16 backward, no float32 copies kept for backward);
    # on CPU torch decomposes it into HF's ops. Output rounded once instead of twice in bf16.
    fused_rms_norm: bool = False
    dtensor_cfg: DTensorConfig = field(default_factory=DTensorConfig)

    def __post_init__(self) -> None:
        if self.compile_decoder_layers and self.dtensor_cfg.context_parallel_size > 1:
            raise ValueError(
                "compile_decoder_layers=true cannot be combined with dtensor_cfg.context_parallel_size > 1 "
                f"(got {self.dtensor_cfg.context_parallel_size}): ring attention runs outside torch.compile"
            )


@dataclass
class PolicyConfig(TeacherConfig):
    """A trainable model: the teacher's fields plus optimisation."""

    train_global_batch_size: int = field(default=8, metadata={"ge": 1})  # samples per optimizer step (all ranks)
    train_micro_batch_size: int = field(default=2, metadata={"ge": 1})  # samples per forward/backward per rank
    max_grad_norm: float | None = 1.0  # clip the global gradient L2 norm to this; None: no clipping
    # > 0: training applies the output embedding this many prediction rows at a time, the loss per
    # window under activation checkpointing (no [b, T, V] logits for a micro-batch); 0: full logits.
    # Needs tp = cp = 1 and a loss with supports_row_windows (else full logits, logged once).
    train_head_chunk_rows: int = field(default=0, metadata={"ge": 0})
    # a step whose loss or gradient norm is NaN/inf is skipped (weights unchanged); this many in a row stop the run
    max_consecutive_skipped_steps: int = field(default=3, metadata={"ge": 1})
    lora: LoraConfig = field(default_factory=LoraConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.train_micro_batch_size > self.train_global_batch_size:
            raise ValueError(
                f"policy.train_micro_batch_size ({self.train_micro_batch_size}) exceeds "
                f"policy.train_global_batch_size ({self.train_global_batch_size})"
            )
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"policy.max_grad_norm must be > 0 or null (no clipping), got {self.max_grad_norm}")
