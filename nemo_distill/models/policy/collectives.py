"""Autograd-aware gathers for shards whose consumer computes the SAME loss on every rank of a group.

Tensor parallel (vocabulary shards of the logits) and context parallel (sequence shards) both hand
the loss function the full tensor on every rank of their group. Every rank then computes an
identical loss, so the correct gradient of this rank's shard is simply its slice of the full
gradient. ``torch.distributed.nn.functional.all_gather`` would instead SUM the gradient over the
group in backward (it assumes each rank's loss is a different term), which multiplies gradients by
the group size here.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def all_gather_cat(local: torch.Tensor, group, dim: int) -> torch.Tensor:
    """All-gather equally shaped shards and concatenate them along ``dim``, in group-rank order."""
    local = local.contiguous()
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, local, group=group)
    return torch.cat(parts, dim=dim)


class _GatherForReplicatedLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, local: torch.Tensor, group, dim: int) -> torch.Tensor:
        ctx.dim = dim
        ctx.width = local.shape[dim]
        ctx.rank = dist.get_rank(group)
        return all_gather_cat(local, group, dim)

    @staticmethod
    def backward(ctx, grad_full: torch.Tensor):
        start = ctx.rank * ctx.width
        return grad_full.narrow(ctx.dim, start, ctx.width).contiguous(), None, None


def gather_for_replicated_loss(local: torch.Tensor, group, dim: int) -> torch.Tensor:
    """``[..., n, ...]`` shard per rank -> ``[..., n * group_size, ...]`` (concatenated along ``dim``).

    Backward returns this rank's slice of the incoming gradient, which is correct only when every
    rank of ``group`` computes the same loss from the gathered tensor (see module docstring).
    A ``None`` group or a group of one returns ``local`` unchanged.
    """
    if group is None or dist.get_world_size(group) == 1:
        return local
    return _GatherForReplicatedLoss.apply(local, group, dim)


def all_reduce_sum(value: float, group=None, device: torch.device | str = "cpu") -> float:
    """Σ of a Python float over ``group`` (fp64, so token counts stay exact)."""
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, group=group)
    return float(tensor.item())


def all_reduce_sum_dict(values: dict[str, float], group=None, device: torch.device | str = "cpu") -> dict[str, float]:
    """Σ of each float over ``group``; every rank must pass the same keys (the loss's metric names)."""
    names = sorted(values)
    names_everywhere: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(names_everywhere, names, group=group)
    if any(other != names for other in names_everywhere):
        raise RuntimeError(f"loss metrics differ between data-parallel ranks: {names_everywhere}; "
                           "a loss function must return the same metric names on every micro-batch")
    if not names:
        return {}
    tensor = torch.tensor([values[name] for name in names], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, group=group)
    return dict(zip(names, tensor.tolist()))
