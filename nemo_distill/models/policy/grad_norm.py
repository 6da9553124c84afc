"""Global gradient L2 norm and clipping for parameters that live on different device meshes.

With tensor parallel + FSDP2 the parameters are DTensors on different meshes (``(dp, tp)`` for the
sharded projections, ``dp`` for embeddings / norms), which ``torch.nn.utils.clip_grad_norm_``
cannot stack. Here every rank sums the squares of its LOCAL gradient shards, each weighted by
1 / (number of ranks holding that same shard), and one all-reduce over the whole group gives the
squared norm of the unsharded gradient. The all-reduce hands every rank the bitwise-same value, so
replicated parameters are clipped identically everywhere (per-mesh DTensor reductions can differ
in the last bits between ranks and let replicas drift apart).

The local shards are reduced with ``torch._foreach_norm`` (fp64 accumulation, no fp64 copy of any
gradient) and scaled with ``torch._foreach_mul_``: a few kernels per step instead of five per
parameter. On the 2-core CPU machine, the 310 fp32 gradients of the Qwen3-0.6B shape (596 M
elements) took 0.39-0.61 s against 1.05-2.56 s per-parameter, with the same norm.
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


def _local_gradients(parameters: Iterable[torch.nn.Parameter], world_size: int) -> dict[tuple[int, torch.device], list[torch.Tensor]]:
    """This rank's gradient shards (views of the DTensors' local tensors), grouped by how many ranks
    hold each shard and by device, so each group is one foreach call."""
    groups: dict[tuple[int, torch.device], list[torch.Tensor]] = {}
    for param in parameters:
        grad = param.grad
        if grad is None:
            continue
        local = grad.to_local() if hasattr(grad, "to_local") else grad
        groups.setdefault((_copies_in_world(grad, world_size), local.device), []).append(local.detach())
    return groups


def _norm_of_groups(groups: dict[tuple[int, torch.device], list[torch.Tensor]], world_size: int, group) -> float:
    # One foreach norm per group, accumulated in fp64 (no fp64 copy of any gradient): a handful of
    # kernels for the whole model instead of five per parameter, which a launch-bound step feels.
    total = None
    for (copies, _), tensors in groups.items():
        norms = torch._foreach_norm(tensors, 2, dtype=torch.float64)
        term = torch.stack(norms).pow(2).sum() / copies
        total = term if total is None else total + term.to(total.device)
    if total is None:
        return 0.0
    if world_size > 1:
        dist.all_reduce(total, group=group)
    return math.sqrt(float(total))


def global_grad_norm(parameters: Iterable[torch.nn.Parameter], group=None) -> float:
    """L2 norm of all gradients as if they were one unsharded vector; the same value on every rank of ``group``."""
    return clip_grad_norm(parameters, None, group)  # max_norm None: measure, never scale


def clip_grad_norm(parameters: Iterable[torch.nn.Parameter], max_norm: float | None, group=None) -> float:
    """Scale gradients so their global norm is at most ``max_norm`` (None: never); return the norm before clipping."""
    world_size = dist.get_world_size(group) if dist.is_initialized() else 1
    groups = _local_gradients(parameters, world_size)
    total_norm = _norm_of_groups(groups, world_size, group)
    if max_norm is not None and total_norm > max_norm:
        scale = max_norm / (total_norm + 1e-6)
        for tensors in groups.values():
            torch._foreach_mul_(tensors, scale)  # in place on the local shards, i.e. on the gradients
    return total_norm
