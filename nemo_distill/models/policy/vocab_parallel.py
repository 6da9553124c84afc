"""Logits whose vocabulary is split over tensor-parallel ranks: gather for losses, top-k without gathering.

Shard ``r`` of ``tp`` holds vocabulary ids ``[r * V/tp, (r + 1) * V/tp)`` (ColwiseParallel's even split).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from nemo_distill.models.policy.collectives import all_gather_cat, gather_for_replicated_loss


def gather_vocab_shards(local_logits: torch.Tensor, tp_group) -> torch.Tensor:
    """``[..., V/tp]`` on each TP rank -> ``[..., V]`` on every rank; differentiable (every TP rank computes the same loss)."""
    return gather_for_replicated_loss(local_logits, tp_group, dim=-1)


def topk_over_vocab_shards(local_logits: torch.Tensor, k: int, tp_group) -> tuple[torch.Tensor, torch.Tensor]:
    """Global top-k when each TP rank holds one vocabulary shard of the logits.

    Args:
        local_logits: ``[..., V/tp]`` this rank's shard (any float dtype).
        k: how many to keep, ``1 <= k <= V``.
    Returns:
        ``values [..., k]`` (descending, the input's dtype) and ``indices [..., k]`` int64 GLOBAL vocab ids,
        identical on every rank of ``tp_group``.

    Each rank takes the top-k of its shard (at most ``V/tp`` when k is larger), offsets the ids to
    global ones, the ``tp * k`` candidates are all-gathered, and their top-k is the answer: every
    member of the global top-k is in its own shard's top-k.
    """
    if tp_group is None or dist.get_world_size(tp_group) == 1:
        return torch.topk(local_logits, k, dim=-1)
    shard_width = local_logits.shape[-1]
    local_k = min(k, shard_width)
    values, indices = torch.topk(local_logits, local_k, dim=-1)
    indices = indices + dist.get_rank(tp_group) * shard_width
    candidate_values = all_gather_cat(values, tp_group, dim=-1)
    candidate_ids = all_gather_cat(indices, tp_group, dim=-1)
    top_values, positions = torch.topk(candidate_values, k, dim=-1)
    return top_values, torch.gather(candidate_ids, -1, positions)


def chunked_topk_over_vocab_shards(local_logits: torch.Tensor, k: int, temperature: float, chunk_size: int,
                                   tp_group) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`topk_over_vocab_shards` of ``local_logits [B, T, V or V/tp] / temperature``, ``chunk_size``
    rows at a time (fp32 per chunk only): ``([B, T, k] fp32 values, [B, T, k] int64 global ids)``."""
    values, indices = [], []
    for start in range(0, local_logits.shape[1], chunk_size):
        chunk = local_logits[:, start : start + chunk_size].float() / temperature
        top_values, top_indices = topk_over_vocab_shards(chunk, k, tp_group)
        values.append(top_values)
        indices.append(top_indices)
    return torch.cat(values, dim=1), torch.cat(indices, dim=1)
