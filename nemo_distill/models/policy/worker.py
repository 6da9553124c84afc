"""PolicyWorker: one rank of a student (trainable) or teacher (frozen) model.

A plain class: it runs in any process whose environment has ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` (``RayWorkerGroup`` sets them; tests use
``torch.multiprocessing``). Ranks form a (dp, tp) mesh; see :mod:`.parallel` for the layout.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from nemo_distill.algorithms.loss_functions import selected_token_logprobs
from nemo_distill.data.batch import TokenBatch
from nemo_distill.models.loading import load_causal_lm
from nemo_distill.models.policy import checkpointing
from nemo_distill.models.policy.config import PolicyConfig, TeacherConfig
from nemo_distill.models.policy.interfaces import LossFunction, TopkLogits, TrainMetrics
from nemo_distill.models.policy.parallel import apply_fsdp2, apply_tensor_parallel, distributed_topk, gather_vocab_shards
from nemo_distill.utils.cpu_threads import configure_cpu_threads


def _lr_lambda(scheduler_cfg, total_steps: int):
    warmup = scheduler_cfg.warmup_steps

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if scheduler_cfg.type == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return scheduler_cfg.min_lr_ratio + (1.0 - scheduler_cfg.min_lr_ratio) * cosine

    return factor


class PolicyWorker:
    """See module docstring. ``trainable=False`` makes a frozen teacher (no optimizer, eval mode)."""

    def __init__(self, cfg: PolicyConfig | TeacherConfig, *, model_name: str | None = None, trainable: bool = True,
                 total_steps: int | None = None):
        from torch.distributed.device_mesh import init_device_mesh

        self.cfg = cfg
        self.trainable = trainable
        self.model_name = model_name or cfg.model_name
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        configure_cpu_threads()
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
        world = dist.get_world_size()
        tp = cfg.dtensor_cfg.tensor_parallel_size
        if cfg.dtensor_cfg.context_parallel_size != 1:
            raise NotImplementedError(
                "policy.dtensor_cfg.context_parallel_size > 1 is not supported by this worker yet; "
                "the sequence-sharding helpers live in nemo_distill.models.policy.context_parallel"
            )
        if world % tp:
            raise ValueError(f"{world} workers cannot form tensor_parallel_size={tp} groups (dtensor_cfg.tensor_parallel_size)")
        self.dp_size, self.tp_size = world // tp, tp
        self.mesh = init_device_mesh(self.device.type, (self.dp_size, tp), mesh_dim_names=("dp", "tp"))
        self.dp_rank = self.mesh["dp"].get_local_rank()
        self.tp_group = self.mesh["tp"].get_group() if tp > 1 else None
        self.dp_group = self.mesh["dp"].get_group()

        gpu = self.device.type == "cuda"
        precision = cfg.precision if cfg.precision != "auto" else ("bfloat16" if gpu else "float32")
        # Trainable models keep fp32 master weights (FSDP2 casts to bf16 for compute); frozen ones load bf16.
        load_dtype = torch.float32 if (trainable or precision == "float32") else torch.bfloat16
        model = load_causal_lm(self.model_name, dtype=load_dtype, device="cpu")
        if trainable and getattr(cfg, "lora", None) is not None and cfg.lora.enabled:
            from peft import LoraConfig, get_peft_model

            lora = cfg.lora
            model = get_peft_model(model, LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                     target_modules=lora.target_modules, task_type="CAUSAL_LM"))
        self.lora_enabled = trainable and getattr(cfg, "lora", None) is not None and cfg.lora.enabled
        if cfg.dtensor_cfg.activation_checkpointing and trainable:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if not trainable:
            model.requires_grad_(False)
        self.vocab_sharded = apply_tensor_parallel(model, self.mesh["tp"]) if tp > 1 else False
        model.to(self.device)
        if cfg.dtensor_cfg.enabled:
            apply_fsdp2(model, self.mesh["dp"], mixed_precision=gpu and precision == "bfloat16" and trainable,
                        cpu_offload=cfg.dtensor_cfg.cpu_offload and trainable)
        self.model = model
        self.model.train(trainable)
        self.optimizer = self.scheduler = None
        if trainable:
            opt = cfg.optimizer
            params = [p for p in self.model.parameters() if p.requires_grad]
            self.optimizer = torch.optim.AdamW(params, lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps, weight_decay=opt.weight_decay)
            horizon = cfg.scheduler.total_steps or total_steps or 1
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(cfg.scheduler, horizon))
        self.offload_events: list[str] = []  # call order of offload/onload, checked by tests

    # ------------------------------------------------------------------ forward helpers
    def _logits(self, batch: TokenBatch) -> torch.Tensor:
        """``[b, t, V]`` logits on this rank (full vocabulary: TP shards are gathered)."""
        output = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
        logits = output.logits
        if self.vocab_sharded:
            logits = gather_vocab_shards(logits, self.tp_group)
        return logits

    def _all_reduce_sum(self, value: float, group=None) -> float:
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, group=group)
        return float(tensor.item())

    # ------------------------------------------------------------------ public methods
    def train(self, batch: TokenBatch, loss_fn: LossFunction) -> TrainMetrics:
        """One optimizer step over this rank's shard, in micro-batches with gradient accumulation."""
        if not self.trainable:
            raise RuntimeError("train() called on a frozen (teacher) worker")
        started = time.perf_counter()
        batch = batch.to(self.device)
        micro_batches = batch.micro_batches(self.cfg.train_micro_batch_size)
        local_valid = float(batch.valid_target_tokens()[:, 1:].sum())
        global_valid = self._all_reduce_sum(local_valid, self.dp_group)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, metric_sums = 0.0, {}
        for micro in micro_batches:
            micro = micro.trim_padding()
            logits = self._logits(micro)
            loss, metrics = loss_fn(logits, micro, global_valid_tokens=global_valid)
            # The loss is already a share of the GLOBAL per-token mean, so gradients must be summed
            # over data-parallel ranks; FSDP2 averages them, hence the factor dp_size. An empty
            # micro-batch still runs forward/backward (loss 0) so FSDP collectives stay in step.
            (loss * self.dp_size).backward()
            loss_sum += float(loss.detach())
            for name, value in metrics.items():
                metric_sums[name] = metric_sums.get(name, 0.0) + float(value)
        params = [p for p in self.model.parameters() if p.requires_grad]
        max_norm = self.cfg.max_grad_norm if self.cfg.max_grad_norm is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        self.optimizer.step()
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        total_loss = self._all_reduce_sum(loss_sum, self.dp_group)
        num_tokens = float(batch.attention_mask.sum())
        return TrainMetrics(loss=total_loss, grad_norm=float(grad_norm), lr=lr, num_valid_tokens=global_valid,
                            tokens_per_sec=num_tokens / max(time.perf_counter() - started, 1e-9), loss_metrics=metric_sums)

    @torch.no_grad()
    def get_logprobs(self, batch: TokenBatch) -> torch.Tensor:
        """``[B, T]`` fp32: ``log p(input_ids[b, t] | input_ids[b, :t])``; 0 at ``t = 0`` and on padding."""
        self.model.eval()
        pieces = []
        for micro in batch.to(self.device).micro_batches(self.cfg.logprob_batch_size):
            logits = self._logits(micro)
            token_logprobs = selected_token_logprobs(logits[:, :-1], micro.input_ids[:, 1:], self.cfg.logprob_chunk_size)
            padded = torch.zeros(micro.input_ids.shape, dtype=torch.float32, device=self.device)
            padded[:, 1:] = token_logprobs * micro.attention_mask[:, 1:]
            pieces.append(padded.cpu())
        self.model.train(self.trainable)
        return torch.cat(pieces)

    @torch.no_grad()
    def get_topk_logits(self, batch: TokenBatch, k: int, temperature: float = 1.0) -> TopkLogits:
        """``[B, T, K]`` top-k logits (divided by ``temperature``) and global ids; row t scores token t + 1."""
        self.model.eval()
        values, indices = [], []
        for micro in batch.to(self.device).micro_batches(self.cfg.logprob_batch_size):
            output = self.model(input_ids=micro.input_ids, attention_mask=micro.attention_mask, use_cache=False)
            row_values, row_indices = [], []
            for rows in range(0, output.logits.shape[1], self.cfg.logprob_chunk_size):
                chunk = output.logits[:, rows : rows + self.cfg.logprob_chunk_size].float() / temperature
                top_values, top_indices = distributed_topk(chunk, k, tp_group=self.tp_group, vocab_sharded=self.vocab_sharded)
                row_values.append(top_values.cpu())
                row_indices.append(top_indices.cpu())
            values.append(torch.cat(row_values, dim=1))
            indices.append(torch.cat(row_indices, dim=1))
        self.model.train(self.trainable)
        return TopkLogits(values=torch.cat(values), indices=torch.cat(indices))

    def save_checkpoint(self, path: str, *, save_optimizer: bool = True) -> None:
        checkpointing.save(self, Path(path), save_optimizer=save_optimizer and self.trainable)

    def load_checkpoint(self, path: str) -> None:
        checkpointing.load(self, Path(path))

    def export_weight_buckets(self, bucket_bytes: int) -> list:
        """Full HF-named weights (LoRA merged) as object-store refs of at most ``bucket_bytes`` each.

        A collective: every rank gathers; rank 0 puts the buckets and returns their refs.
        """
        import ray

        full = checkpointing.full_state_dict(self)
        if dist.get_rank() != 0:
            return []
        from nemo_distill.models.generation.refit import bucket_state_dict

        hf_weights = checkpointing.to_hf_weights(self, full)
        return [ray.put(bucket) for bucket in bucket_state_dict(hf_weights.items(), bucket_bytes)]

    def offload_to_cpu(self) -> None:
        self.offload_events.append("offload_model")
        if self.device.type == "cuda":
            self.model.to("cpu")
            torch.cuda.empty_cache()

    def onload_to_device(self) -> None:
        self.offload_events.append("onload_model")
        if self.device.type == "cuda":
            self.model.to(self.device)

    def _move_optimizer_state(self, device: torch.device | str) -> None:
        if self.optimizer is None:
            return
        for state in self.optimizer.state.values():
            for name, value in state.items():
                if isinstance(value, torch.Tensor) and name != "step":
                    state[name] = value.to(device)

    def offload_optimizer(self) -> None:
        self.offload_events.append("offload_optimizer")
        if self.device.type == "cuda":
            self._move_optimizer_state("cpu")
            torch.cuda.empty_cache()

    def onload_optimizer(self) -> None:
        self.offload_events.append("onload_optimizer")
        if self.device.type == "cuda":
            self._move_optimizer_state(self.device)

    def get_offload_events(self) -> list[str]:
        return list(self.offload_events)

    def get_rank_info(self) -> dict[str, int]:
        return {"rank": dist.get_rank(), "world_size": dist.get_world_size(), "dp_rank": self.dp_rank, "dp_size": self.dp_size,
                "tp_size": self.tp_size, "pid": os.getpid()}

    def peak_memory_gib(self) -> float:
        return torch.cuda.max_memory_allocated() / 2**30 if self.device.type == "cuda" else 0.0

