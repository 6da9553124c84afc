"""The one message type that crosses from the driver to policy / teacher workers.

Conventions (every module relies on them):

* ``input_ids[b, t]`` is token ``t`` of sample ``b``; rows are **right-padded** to a common
  length ``T`` and ``attention_mask`` is 1 on real tokens.
* ``loss_mask[b, t] == 1`` marks token ``input_ids[b, t]`` as a *target* (an assistant /
  response token that a loss is computed on). Position 0 is never a target.
* Logits at row ``t`` predict token ``t + 1``. Anything "per prediction row" (teacher top-k
  logits, ``[B, T, K]``) uses the logits' layout: row ``t`` describes the distribution over
  token ``t + 1``; the last row is unused.
* ``sample_mask[b]`` is 0 for samples that must not contribute to any loss (dropped, too long).
* ``extras`` carries algorithm-specific tensors (teacher top-k, advantages, ...) whose first
  dimension is the batch dimension; the trainer shards and slices them without knowing them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class TokenBatch:
    """A right-padded batch of token sequences plus per-sample / per-token side tensors.

    Shapes: ``input_ids``, ``attention_mask``, ``loss_mask``: ``[B, T]``; ``sample_mask``: ``[B]``;
    each ``extras[name]``: ``[B, ...]``.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    loss_mask: torch.Tensor
    sample_mask: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        batch_size, seq_len = self.input_ids.shape
        for name in ("attention_mask", "loss_mask"):
            if tuple(getattr(self, name).shape) != (batch_size, seq_len):
                raise ValueError(
                    f"TokenBatch.{name} has shape {tuple(getattr(self, name).shape)}, "
                    f"expected {(batch_size, seq_len)} like input_ids"
                )
        if tuple(self.sample_mask.shape) != (batch_size,):
            raise ValueError(f"TokenBatch.sample_mask has shape {tuple(self.sample_mask.shape)}, expected ({batch_size},)")
        for name, value in self.extras.items():
            if value.shape[0] != batch_size:
                raise ValueError(f"TokenBatch.extras[{name!r}] has batch dim {value.shape[0]}, expected {batch_size}")

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[1])

    def valid_target_tokens(self) -> torch.Tensor:
        """``[B, T]`` float mask of tokens a loss counts: ``loss_mask * sample_mask``."""
        return self.loss_mask.float() * self.sample_mask.float()[:, None]

    def first_target_row(self) -> int:
        """The first prediction row a loss can read: row ``t`` predicts token ``t + 1``, so the row before
        the first column where any sample's ``loss_mask`` is set (0 when none is). Rows before it (the
        prompt's) need no output layer in training or teacher scoring."""
        target_columns = self.loss_mask.bool().any(dim=0).nonzero()
        return max(int(target_columns[0]) - 1, 0) if target_columns.numel() else 0

    def select(self, index: slice | torch.Tensor) -> "TokenBatch":
        """Rows ``index`` of every tensor (a slice or a 1-D index tensor)."""
        return TokenBatch(
            input_ids=self.input_ids[index],
            attention_mask=self.attention_mask[index],
            loss_mask=self.loss_mask[index],
            sample_mask=self.sample_mask[index],
            extras={name: value[index] for name, value in self.extras.items()},
        )

    def shard(self, num_shards: int) -> list["TokenBatch"]:
        """Split along the batch dim into ``num_shards`` contiguous equal shards.

        Raises ``ValueError`` when the batch size is not divisible: data-parallel ranks must
        see the same number of samples so their collectives stay in step.
        """
        if self.size % num_shards != 0:
            raise ValueError(f"batch of {self.size} samples cannot be split evenly into {num_shards} data-parallel shards")
        per_shard = self.size // num_shards
        return [self.select(slice(i * per_shard, (i + 1) * per_shard)) for i in range(num_shards)]

    def micro_batches(self, micro_batch_size: int) -> list["TokenBatch"]:
        """Consecutive slices of at most ``micro_batch_size`` samples."""
        return [self.select(slice(start, start + micro_batch_size)) for start in range(0, self.size, micro_batch_size)]

    def to(self, device: torch.device | str) -> "TokenBatch":
        return TokenBatch(
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            loss_mask=self.loss_mask.to(device),
            sample_mask=self.sample_mask.to(device),
            extras={name: value.to(device) for name, value in self.extras.items()},
        )

    def trim_padding(self) -> "TokenBatch":
        """Drop trailing columns that are padding in every row (saves compute on short batches). Columns up to
        the last one where any row has a real token stay, whatever the padding before it."""
        real_columns = self.attention_mask.bool().any(dim=0).nonzero()
        max_len = int(real_columns[-1]) + 1 if real_columns.numel() else 1  # nothing real: one column stays
        if max_len == self.seq_len:
            return self
        per_token = {name for name, value in self.extras.items() if value.dim() >= 2 and value.shape[1] == self.seq_len}
        return TokenBatch(
            input_ids=self.input_ids[:, :max_len],
            attention_mask=self.attention_mask[:, :max_len],
            loss_mask=self.loss_mask[:, :max_len],
            sample_mask=self.sample_mask,
            extras={name: (value[:, :max_len] if name in per_token else value) for name, value in self.extras.items()},
        )
