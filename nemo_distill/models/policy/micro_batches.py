"""Micro-batches planned on the host, so a training or scoring loop never waits for the device.

Each micro-batch raises questions about its data: how many trailing columns are padding everywhere
(trimmed), which row is the first that predicts a target (the output layer skips the rows before it),
how many leading tokens every row shares (a teacher context scored once), and whether the padding is
all on the right. Asked of a GPU tensor, every answer (``.item()``, ``nonzero``, ``int(...)``) stops
the host until the device has finished everything queued so far, and the device then idles while the
host launches the next forward. On a launch-bound step (a 0.6B model, micro-batch 16) that is most of
the time. :func:`plan_micro_batches` answers them all on the host copy of the batch (a batch from Ray
arrives there) before any work is queued.

A right-padded micro-batch needs no attention mask: causal attention already keeps every real token
from the padding after it, and the outputs at padding positions are masked by every loss and scorer
(``TokenBatch``'s conventions). The model then gets ``attention_mask=None``, which also spares
transformers the mask check that waits for the device (``PlannedMicroBatch.model_attention_mask``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.distributed as dist

from nemo_distill.data.batch import TokenBatch
from nemo_distill.models.policy.head_scoring import shared_prefix_length


@dataclass(frozen=True)
class PlannedMicroBatch:
    """A micro-batch on the device, trimmed of all-padding columns, and the facts about it worked out on the host.

    ``first_target_row``: :meth:`TokenBatch.first_target_row`. ``shared_prefix_len``: the leading real
    tokens every row shares when at least the planner's ``shared_prefix_min_tokens`` (and the micro-batch
    is right-padded), else 0.
    ``right_padded``: every row is real tokens followed only by padding.
    """

    batch: TokenBatch
    first_target_row: int
    shared_prefix_len: int
    right_padded: bool

    @property
    def model_attention_mask(self) -> torch.Tensor | None:
        """What the model's forward gets as ``attention_mask``: None for a right-padded micro-batch (see the module docstring)."""
        return None if self.right_padded else self.batch.attention_mask


def is_right_padded(attention_mask: torch.Tensor) -> bool:
    """Whether every row of ``attention_mask`` ``[B, T]`` is ones followed only by zeros."""
    lengths = attention_mask.sum(dim=1, keepdim=True)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return bool(torch.equal(attention_mask.bool(), positions < lengths))


def plan_micro_batches(batch: TokenBatch, micro_batch_size: int, device: torch.device | str, *,
                       shared_prefix_min_tokens: int = 0) -> list[PlannedMicroBatch]:
    """``batch`` split into micro-batches of at most ``micro_batch_size`` rows, each trimmed, planned on the
    host and then moved to ``device`` (a batch already on a device is copied to the host once, first).

    ``shared_prefix_min_tokens`` > 0: measure each micro-batch's shared prefix and keep it when at least
    that long (0: never measured, ``shared_prefix_len`` is 0).
    """
    if micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
    host = batch.to("cpu")
    plans = []
    for micro in host.micro_batches(micro_batch_size):
        micro = micro.trim_padding()
        right_padded = is_right_padded(micro.attention_mask)
        # the shared-prefix forward reads one row's mask for the prefix: only right padding keeps it real everywhere
        measure = shared_prefix_min_tokens > 0 and right_padded
        prefix_len = shared_prefix_length(micro.input_ids, micro.attention_mask) if measure else 0
        plans.append(PlannedMicroBatch(
            batch=micro.to(device),
            first_target_row=micro.first_target_row(),
            shared_prefix_len=prefix_len if prefix_len >= shared_prefix_min_tokens else 0,
            right_padded=right_padded,
        ))
    return plans


def share_prefixes_on_every_rank(plans: list[PlannedMicroBatch], device: torch.device | str,
                                 group=None) -> list[PlannedMicroBatch]:
    """``plans`` with ``shared_prefix_len`` kept only for the micro-batches where every rank of ``group`` has
    one: FSDP2 ranks gather each layer in every forward, so they must all take the shared-prefix path
    (two forwards) or none. One all-reduce over all plans, before any of them runs."""
    if not plans:
        return plans
    shares = torch.tensor([int(plan.shared_prefix_len > 0) for plan in plans], device=device)
    dist.all_reduce(shares, op=dist.ReduceOp.MIN, group=group)
    return [plan if share else replace(plan, shared_prefix_len=0) for plan, share in zip(plans, shares.tolist())]
