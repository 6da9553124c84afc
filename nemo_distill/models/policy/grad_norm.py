"""Global gradient L2 norm and clipping for parameters that live on different device meshes.

With tensor parallel + FSDP2 the parameters are DTensors on different meshes (``(dp, tp)`` for the
sharded projections, ``dp`` for embeddings / norms), which ``torch.nn.utils.clip_grad_norm_``
cannot stack. Here every rank sums the squares of its LOCAL gradient shards, each weighted by
1 / (number of ranks holding that same shard), and one all-reduce over the whole group gives the
squared norm of the unsharded gradient. The all-reduce hands every rank the bitwise-same value, so
replicated parameters are clipped identically everywhere (per-mesh DTensor reductions can differ
in the last bits between ranks and let replicas drift apart).
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.distributed as dist


def _copies_in_world(grad: torch.Tensor, world_size: int) -> int:
    """How many ranks hold exactly this rank's shard of ``grad``."""
    mesh = getattr(grad, "device_mesh", None)
    if mesh is None:
        return world_size  # a plain tensor: a full copy on every rank
    distinct_shards = 1
    for dim, placement in enumerate(grad.placements):
        if placement.is_shard():
            distinct_shards *= mesh.size(dim)
    return world_size // distinct_shards


def global_grad_norm(parameters: Iterable[torch.nn.Parameter], group=None) -> float:
    """L2 norm of all gradients as if they were one unsharded vector; the same value on every rank of ``group``."""
    world_size = dist.get_world_size(group) if dist.is_initialized() else 1
    total = None
    for param in parameters:
        grad = param.grad
        if grad is None:
            continue
        local = grad.to_local() if hasattr(grad, "to_local") else grad
        term = local.detach().double().pow(2).sum() / _copies_in_world(grad, world_size)
        total = term if total is None else total + term
    if total is None:
        return 0.0
    if world_size > 1:
        dist.all_reduce(total, group=group)
    return math.sqrt(float(total))


def clip_grad_norm(parameters: Iterable[torch.nn.Parameter], max_norm: float | None, group=None) -> float:
    """Scale gradients so their global norm is at most ``max_norm`` (None: never); return the norm before clipping."""
    parameters = [param for param in parameters if param.grad is not None]
    total_norm = global_grad_norm(parameters, group)
    if max_norm is not None and total_norm > max_norm:
        scale = max_norm / (total_norm + 1e-6)
        for param in parameters:
            param.grad.mul_(scale)
    return total_norm
