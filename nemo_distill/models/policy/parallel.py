"""How a HF decoder model is laid out on a (dp, tp) device mesh: TP plan, FSDP2, vocab shards.

Tensor parallel (DTensor): q/k/v/gate/up Colwise, o/down Rowwise in every decoder layer, so
attention and MLP run on a head / column shard and one all-reduce closes each block. An untied
``lm_head`` is Colwise with vocabulary-sharded local outputs; a tied one (SmolLM2) stays
replicated because its weight is the embedding's.

FSDP2 shards every decoder layer and then the root over the ``dp`` mesh dimension; on GPU the
parameters are bf16 for compute with fp32 gradient reduction, on CPU everything is fp32.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

_COLWISE = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
_ROWWISE = ("o_proj", "down_proj")


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a (possibly peft-wrapped) HF causal LM."""
    for module in model.modules():
        layers = getattr(module, "layers", None)
        if isinstance(layers, nn.ModuleList) and len(layers) and hasattr(layers[0], "self_attn"):
            return list(layers)
    raise ValueError(f"cannot find decoder layers in {type(model).__name__}")


def output_embedding(model: nn.Module) -> nn.Module:
    return model.get_output_embeddings()


def apply_tensor_parallel(model: nn.Module, tp_mesh) -> bool:
    """Shard attention/MLP projections over ``tp_mesh``; return whether lm_head is vocab-sharded."""
    from torch.distributed.tensor import Shard
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    config = model.config
    tp = tp_mesh.size()
    for name in ("num_attention_heads", "num_key_value_heads"):
        if getattr(config, name) % tp:
            raise ValueError(f"tensor_parallel_size {tp} does not divide {name}={getattr(config, name)}")
    for layer in decoder_layers(model):
        plan = {}
        for parent in ("self_attn", "mlp"):
            for child, module in getattr(layer, parent).named_children():
                if child in _COLWISE:
                    plan[f"{parent}.{child}"] = ColwiseParallel()
                elif child in _ROWWISE:
                    plan[f"{parent}.{child}"] = RowwiseParallel()
        parallelize_module(layer, tp_mesh, plan)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    if tied or config.vocab_size % tp:
        return False
    head_name = next(name for name, module in model.named_modules() if module is output_embedding(model))
    parallelize_module(model, tp_mesh, {head_name: ColwiseParallel(output_layouts=Shard(-1), use_local_output=True)})
    return True


def apply_fsdp2(model: nn.Module, dp_mesh, *, mixed_precision: bool, cpu_offload: bool) -> None:
    """``fully_shard`` each decoder layer, then the root (so the root's all-gather is small)."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    kwargs = {"mesh": dp_mesh}
    if mixed_precision:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if cpu_offload:
        kwargs["offload_policy"] = CPUOffloadPolicy()
    for layer in decoder_layers(model):
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)


def gather_vocab_shards(local_logits: torch.Tensor, tp_group) -> torch.Tensor:
    """``[..., V/tp]`` per TP rank -> ``[..., V]``, differentiable (backward takes this rank's slice)."""
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(local_logits.contiguous(), group=tp_group), dim=-1)


def distributed_topk(logits: torch.Tensor, k: int, *, tp_group, vocab_sharded: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k over the vocabulary when each TP rank holds one vocabulary shard.

    Each rank takes the top-k of its shard (offsetting indices to global ids), the candidates are
    all-gathered, and the top-k of the ``k * tp`` candidates is the global answer. With replicated
    logits each rank works on its slice, which gives the same result.
    """
    tp = dist.get_world_size(tp_group) if tp_group is not None else 1
    if tp == 1:
        values, indices = torch.topk(logits, k, dim=-1)
        return values, indices
    rank = dist.get_rank(tp_group)
    if vocab_sharded:
        shard = logits
        offset = rank * logits.shape[-1]
    else:
        width = logits.shape[-1] // tp
        offset = rank * width
        end = logits.shape[-1] if rank == tp - 1 else offset + width
        shard = logits[..., offset:end]
    local_k = min(k, shard.shape[-1])
    values, indices = torch.topk(shard, local_k, dim=-1)
    indices = indices + offset
    gathered_values = [torch.empty_like(values) for _ in range(tp)]
    gathered_indices = [torch.empty_like(indices) for _ in range(tp)]
    dist.all_gather(gathered_values, values.contiguous(), group=tp_group)
    dist.all_gather(gathered_indices, indices.contiguous(), group=tp_group)
    candidates = torch.cat(gathered_values, dim=-1)
    candidate_ids = torch.cat(gathered_indices, dim=-1)
    top_values, positions = torch.topk(candidates, k, dim=-1)
    return top_values, torch.gather(candidate_ids, -1, positions)
