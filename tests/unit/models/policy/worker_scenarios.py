"""What each rank runs in the PolicyWorker tests (module-level so spawn can pickle them by name)."""

from __future__ import annotations

from typing import Any

import torch

from nemo_distill.data.batch import TokenBatch
from nemo_distill.models.policy.config import DTensorConfig, LoraConfig, OptimizerConfig, PolicyConfig, SchedulerConfig
from nemo_distill.models.policy.worker import PolicyWorker
from policy_spawn import MaskedNLLLoss, full_gradients, full_parameters


def make_config(model_dir: str, *, tp: int = 1, cp: int = 1, micro_batch_size: int = 2, lr: float = 1e-3, warmup_steps: int = 0,
                lora: bool = False, max_grad_norm: float | None = 1.0, precision: str = "auto") -> PolicyConfig:
    return PolicyConfig(
        model_name=model_dir,
        precision=precision,
        train_global_batch_size=4,
        train_micro_batch_size=micro_batch_size,
        logprob_batch_size=3,  # does not divide the batch: exercises a short last micro-batch
        logprob_chunk_size=5,  # several fp32 log-softmax chunks per sequence
        max_grad_norm=max_grad_norm,
        dtensor_cfg=DTensorConfig(tensor_parallel_size=tp, context_parallel_size=cp),
        lora=LoraConfig(enabled=lora, rank=4, alpha=8),
        optimizer=OptimizerConfig(lr=lr),
        scheduler=SchedulerConfig(warmup_steps=warmup_steps),
    )


def dp_shard(worker: PolicyWorker, batch: TokenBatch) -> TokenBatch:
    return batch.shard(worker.layout.dp_size)[worker.layout.dp_rank]


def train_and_score(rank: int, model_dir: str, batch: TokenBatch, *, tp: int, micro_batch_size: int, steps: int,
                    k: int, temperature: float, cp: int = 1, precision: str = "auto") -> dict[str, Any]:
    """Scores on the full batch, one gradient snapshot, then ``steps`` optimizer steps on the dp shard."""
    worker = PolicyWorker(make_config(model_dir, tp=tp, cp=cp, micro_batch_size=micro_batch_size, precision=precision))
    loss_fn = MaskedNLLLoss()
    result: dict[str, Any] = {"rank_info": worker.get_rank_info()}
    result["export"] = worker.state_dict_for_export()
    result["logprobs_initial"] = worker.get_logprobs(batch)
    result["topk"] = worker.get_topk_logits(batch, k, temperature=temperature)
    result["logprobs_targets"] = worker.get_logprobs(batch, targets_only=True)
    result["topk_targets"] = worker.get_topk_logits(batch, k, temperature=temperature, targets_only=True)
    shard = dp_shard(worker, batch)
    worker.optimizer.zero_grad(set_to_none=True)
    worker._accumulate_gradients(shard.to(worker.device), loss_fn)
    result["grads"] = full_gradients(worker.model)
    worker.optimizer.zero_grad(set_to_none=True)
    result["metrics"] = []
    for step in range(steps):
        result["metrics"].append(worker.train(shard, loss_fn))
        if step == 0:
            result["logprobs_after_one_step"] = worker.get_logprobs(batch)
    result["logprobs_final"] = worker.get_logprobs(batch)
    return result


def checkpoint_round_trip(rank: int, model_dir: str, batch: TokenBatch, path: str) -> dict[str, Any]:
    """Train 2 steps, save, train 2 more; a fresh worker restored from the checkpoint then trains the same 2 steps."""
    cfg = make_config(model_dir, micro_batch_size=1, warmup_steps=4)
    loss_fn = MaskedNLLLoss()
    first = PolicyWorker(cfg)
    shard = dp_shard(first, batch)
    for _ in range(2):
        first.train(shard, loss_fn)
    first.save_checkpoint(path)
    result: dict[str, Any] = {"logprobs_saved": first.get_logprobs(batch)}
    result["third_step"] = first.train(shard, loss_fn)
    result["logprobs_after_third"] = first.get_logprobs(batch)
    result["fourth_step"] = first.train(shard, loss_fn)
    del first

    fresh = PolicyWorker(cfg, init_checkpoint=path)
    result["fresh_logprobs"] = fresh.get_logprobs(batch)
    result["fresh_third_step"] = fresh.train(shard, loss_fn)
    result["fresh_logprobs_after_third"] = fresh.get_logprobs(batch)
    result["fresh_fourth_step"] = fresh.train(shard, loss_fn)

    weights_only = PolicyWorker(cfg)
    weights_only.load_checkpoint(path)  # explicit load into an already built worker
    result["reloaded_logprobs"] = weights_only.get_logprobs(batch)
    for call in ("offload_optimizer", "offload_to_cpu", "onload_to_device", "onload_optimizer"):
        getattr(weights_only, call)()
    result["offload_events"] = weights_only.get_offload_events()
    return result


def lora_train_and_save(rank: int, model_dir: str, batch: TokenBatch, path: str) -> dict[str, Any]:
    """LoRA on 2 FSDP ranks: parameters before / after 2 steps, logprobs, a checkpoint, the export."""
    worker = PolicyWorker(make_config(model_dir, micro_batch_size=1, lr=1e-2, lora=True))
    loss_fn = MaskedNLLLoss()
    result: dict[str, Any] = {"params_before": full_parameters(worker.model)}
    result["trainable"] = sorted(name for name, param in worker.model.named_parameters() if param.requires_grad)
    shard = dp_shard(worker, batch)
    result["metrics"] = [worker.train(shard, loss_fn) for _ in range(2)]
    result["params_after"] = full_parameters(worker.model)
    result["logprobs"] = worker.get_logprobs(batch)
    result["export"] = worker.state_dict_for_export()
    worker.save_checkpoint(path)
    return result


def teacher_and_checkpointed_student(rank: int, model_dir: str, batch: TokenBatch, k: int) -> dict[str, Any]:
    """A frozen teacher without FSDP (dtensor_cfg.enabled=false), and a student with activation checkpointing."""
    from nemo_distill.models.policy.config import TeacherConfig

    teacher = PolicyWorker(TeacherConfig(model_name=model_dir, logprob_batch_size=2, dtensor_cfg=DTensorConfig(enabled=False)),
                           trainable=False)
    result: dict[str, Any] = {
        "logprobs": teacher.get_logprobs(batch), "topk": teacher.get_topk_logits(batch, k),
        "trainable": [name for name, param in teacher.model.named_parameters() if param.requires_grad],
        "optimizer": teacher.optimizer,
    }
    cfg = make_config(model_dir)
    cfg.dtensor_cfg.activation_checkpointing = True
    student = PolicyWorker(cfg)
    student._accumulate_gradients(batch, MaskedNLLLoss())
    result["checkpointed_grads"] = full_gradients(student.model)
    return result


def offload_and_checkpoint_on_gpu(rank: int, model_dir: str, batch: TokenBatch, path: str) -> dict[str, Any]:
    """bf16 mixed precision on GPUs: offload model and optimizer between steps, then a checkpoint round trip."""
    cfg = make_config(model_dir, micro_batch_size=1)
    loss_fn = MaskedNLLLoss()
    worker = PolicyWorker(cfg)
    shard = dp_shard(worker, batch)
    result: dict[str, Any] = {"first": worker.train(shard, loss_fn)}
    result["allocated_before"] = torch.cuda.memory_allocated()
    local = [p.to_local() if hasattr(p, "to_local") else p for p in worker.model.parameters()]
    local += [v.to_local() if hasattr(v, "to_local") else v for state in worker.optimizer.state.values()
              for name, v in state.items() if name != "step" and isinstance(v, torch.Tensor)]
    result["state_bytes"] = sum(t.numel() * t.element_size() for t in local if t.is_cuda)
    del local  # holding these references would keep the GPU copies alive
    worker.offload_optimizer()
    worker.offload_to_cpu()
    result["allocated_offloaded"] = torch.cuda.memory_allocated()
    worker.onload_to_device()
    worker.onload_optimizer()
    result["second"] = worker.train(shard, loss_fn)
    result["logprobs"] = worker.get_logprobs(batch)
    worker.save_checkpoint(path)
    result["export_names"] = sorted(worker.state_dict_for_export())
    fresh = PolicyWorker(cfg, init_checkpoint=path)
    result["fresh_logprobs"] = fresh.get_logprobs(batch)
    return result
