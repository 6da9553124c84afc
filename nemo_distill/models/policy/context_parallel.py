"""Context parallel (CP): one sequence split over ``cp`` ranks, load-balanced for causal attention.

Layout (the "head-tail" split torch's ring attention expects): the padded sequence is cut into
``2 * cp`` equal chunks and rank ``r`` holds chunks ``r`` and ``2*cp - 1 - r``, so every rank gets
the same amount of causal-attention work (an early chunk attends to little, a late one to a lot).

The worker's CP forward (GPU only: torch has no CPU attention strategy for CP) pads the batch to a
multiple of ``2 * cp``, runs the model under ``torch.distributed.tensor.experimental.context_parallel``
(which shards ``input_ids`` / ``position_ids`` in place with this layout and swaps SDPA for ring
attention), then gathers the sequence shards of the logits back into natural order with
:func:`gather_load_balanced`, so the loss function sees full sequences as without CP.

HF models must then run plain causal SDPA without a mask (:func:`use_causal_sdpa_without_mask`):
a rank's position ids (``0 1 2 3 12 13 14 15``) look like two packed sequences to HF's mask
builder, which would otherwise build a block-diagonal mask, and ring attention takes no mask.

For losses that are sums of per-token terms a CP-aware caller can skip that gather: build the
next-token targets on the FULL sequence (:func:`next_token_targets`, since a chunk's last token is
predicted from another chunk), shard logits' inputs and targets alike, compute the local sum and
let FSDP sum gradients over cp ranks; :func:`reduce_across_cp` gives the reported total.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from nemo_distill.models.policy.collectives import gather_for_replicated_loss


def _check_cp(cp_size: int, cp_rank: int | None = None) -> None:
    if cp_size < 1:
        raise ValueError(f"context_parallel_size must be >= 1, got {cp_size}")
    if cp_rank is not None and not 0 <= cp_rank < cp_size:
        raise ValueError(f"cp_rank {cp_rank} is outside [0, {cp_size})")


def chunk_ids_of_rank(cp_size: int, cp_rank: int) -> tuple[int, int]:
    """The two chunk indices (of ``2 * cp_size``) that rank ``cp_rank`` holds, in its local order."""
    _check_cp(cp_size, cp_rank)
    return cp_rank, 2 * cp_size - 1 - cp_rank


# Ring attention merges per-chunk log-sum-exps; the memory-efficient SDPA kernel (used for fp32)
# pads its log-sum-exp to a multiple of 32 rows, so every chunk the ring sees is kept a multiple of 32.
RING_CHUNK_MULTIPLE = 32


def padded_length(seq_len: int, cp_size: int, chunk_multiple: int = 1) -> int:
    """Smallest length >= ``seq_len`` whose ``2 * cp_size`` chunks are each a multiple of ``chunk_multiple``."""
    _check_cp(cp_size)
    multiple = 2 * cp_size * chunk_multiple
    return -(-seq_len // multiple) * multiple


def pad_sequence_dim(tensor: torch.Tensor, cp_size: int, *, dim: int = 1, value: float = 0, chunk_multiple: int = 1) -> torch.Tensor:
    """Right-pad ``dim`` to :func:`padded_length` with ``value`` (padding is never a target)."""
    missing = padded_length(tensor.shape[dim], cp_size, chunk_multiple) - tensor.shape[dim]
    if missing == 0:
        return tensor
    pad_shape = list(tensor.shape)
    pad_shape[dim] = missing
    return torch.cat([tensor, tensor.new_full(pad_shape, value)], dim=dim)


def shard_load_balanced(tensor: torch.Tensor, cp_size: int, cp_rank: int, *, dim: int = 1) -> torch.Tensor:
    """This rank's ``[..., 2 * T / (2 cp), ...]`` slice: chunks ``r`` and ``2cp-1-r`` of ``dim``, concatenated.

    ``tensor.shape[dim]`` must be a multiple of ``2 * cp_size`` (see :func:`pad_sequence_dim`).
    """
    length = tensor.shape[dim]
    if length % (2 * cp_size):
        raise ValueError(f"sequence length {length} is not a multiple of 2 * context_parallel_size = {2 * cp_size}; pad first")
    chunks = tensor.chunk(2 * cp_size, dim=dim)
    first, second = chunk_ids_of_rank(cp_size, cp_rank)
    return torch.cat([chunks[first], chunks[second]], dim=dim)


def load_balanced_position_ids(seq_len: int, cp_size: int, cp_rank: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[seq_len / cp]`` int64 positions of this rank's tokens in the full (padded) sequence."""
    return shard_load_balanced(torch.arange(seq_len, device=device), cp_size, cp_rank, dim=0)


def _natural_order_index(cp_size: int, chunk_len: int, device: torch.device | str) -> torch.Tensor:
    """Index into the rank-ordered concatenation of all shards that puts positions back in order."""
    location = {}
    for rank in range(cp_size):
        for slot, chunk in enumerate(chunk_ids_of_rank(cp_size, rank)):
            location[chunk] = 2 * rank + slot  # chunk position inside the rank-ordered concatenation
    return torch.cat([torch.arange(chunk_len, device=device) + location[chunk] * chunk_len for chunk in range(2 * cp_size)])


def unshard_load_balanced(rank_ordered: torch.Tensor, cp_size: int, *, dim: int = 1) -> torch.Tensor:
    """Inverse of :func:`shard_load_balanced`: shards of ranks ``0..cp-1`` concatenated along ``dim`` -> natural order."""
    length = rank_ordered.shape[dim]
    if length % (2 * cp_size):
        raise ValueError(f"concatenated length {length} is not a multiple of 2 * context_parallel_size = {2 * cp_size}")
    index = _natural_order_index(cp_size, length // (2 * cp_size), rank_ordered.device)
    return rank_ordered.index_select(dim, index)


def gather_load_balanced(local: torch.Tensor, cp_group, *, dim: int = 1) -> torch.Tensor:
    """All-gather this rank's load-balanced shard and return the full tensor in natural order on every rank.

    Differentiable; backward hands each rank the gradient of its own positions, which is right when every
    cp rank computes the same loss from the full tensor (the worker's CP path).
    """
    if cp_group is None or dist.get_world_size(cp_group) == 1:
        return local
    rank_ordered = gather_for_replicated_loss(local, cp_group, dim=dim)
    return unshard_load_balanced(rank_ordered, dist.get_world_size(cp_group), dim=dim)


def next_token_targets(input_ids: torch.Tensor, valid_targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets aligned to prediction rows, built BEFORE sharding (row ``t`` predicts token ``t + 1``).

    Args:
        input_ids: ``[B, T]``; valid_targets: ``[B, T]`` float (``TokenBatch.valid_target_tokens()``).
    Returns:
        ``target_ids [B, T]`` (``input_ids[:, t + 1]``, 0 in the last row) and ``target_mask [B, T]``
        (``valid_targets[:, t + 1]``, 0 in the last row). Shard both like the inputs.
    """
    target_ids = torch.zeros_like(input_ids)
    target_ids[:, :-1] = input_ids[:, 1:]
    target_mask = torch.zeros_like(valid_targets)
    target_mask[:, :-1] = valid_targets[:, 1:]
    return target_ids, target_mask


def reduce_across_cp(local_value: torch.Tensor, cp_group) -> torch.Tensor:
    """Σ over cp ranks of a per-shard quantity (a local loss sum, a token count); detached, for reporting.

    Gradients need no such reduction: FSDP2 already sums them over the flattened dp x cp mesh.
    """
    total = local_value.detach().clone()
    if cp_group is not None and dist.get_world_size(cp_group) > 1:
        dist.all_reduce(total, group=cp_group)
    return total


CAUSAL_SDPA = "nemo_distill_causal_sdpa"


def _causal_sdpa_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """HF attention function: ``[b, heads, t, d]`` inputs -> ``[b, t, heads, d]``, always causal, never masked.

    Key/value heads are repeated for grouped-query attention here rather than with SDPA's
    ``enable_gqa``, which the ring-attention dispatch does not accept.
    """
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    output = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, dropout_p=dropout if module.training else 0.0, scale=scaling, is_causal=True
    )
    return output.transpose(1, 2).contiguous(), None


def _no_mask(*args, **kwargs):
    return None


def use_causal_sdpa_without_mask(model: torch.nn.Module) -> None:
    """Switch a HF model to :data:`CAUSAL_SDPA` (registered once with HF's attention and mask interfaces).

    Only right-padded batches are correct with it: real tokens never see the padding after them.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(CAUSAL_SDPA, _causal_sdpa_attention)
    AttentionMaskInterface.register(CAUSAL_SDPA, _no_mask)
    model.config._attn_implementation = CAUSAL_SDPA

