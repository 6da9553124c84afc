"""Token lists -> padded tensors: right-padded training batches, left-padded generation inputs."""

from __future__ import annotations

import torch

from nemo_distill.data.batch import TokenBatch


def build_token_batch(
    prompt_token_ids: list[list[int]],
    response_token_ids: list[list[int]],
    *,
    pad_token_id: int,
    sample_mask: list[float] | None = None,
    max_total_length: int | None = None,
) -> tuple[TokenBatch, list[int]]:
    """Prompt + response per sample, right-padded; ``loss_mask`` 1 on response tokens only.

    Returns the batch and each sample's prompt length (where its response starts). A sample longer
    than ``max_total_length`` is cut at the end (its response loses its tail).
    """
    if len(prompt_token_ids) != len(response_token_ids):
        raise ValueError(f"{len(prompt_token_ids)} prompts but {len(response_token_ids)} responses")
    sequences = [list(p) + list(r) for p, r in zip(prompt_token_ids, response_token_ids)]
    if max_total_length is not None:
        sequences = [s[:max_total_length] for s in sequences]
    seq_len = max((len(s) for s in sequences), default=1) or 1
    batch_size = len(sequences)
    input_ids = torch.full((batch_size, seq_len), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(batch_size, seq_len, dtype=torch.long)
    loss_mask = torch.zeros(batch_size, seq_len, dtype=torch.float32)
    for i, (sequence, prompt) in enumerate(zip(sequences, prompt_token_ids)):
        input_ids[i, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        attention_mask[i, : len(sequence)] = 1
        loss_mask[i, len(prompt) : len(sequence)] = 1.0
    mask = torch.tensor(sample_mask if sample_mask is not None else [1.0] * batch_size, dtype=torch.float32)
    batch = TokenBatch(input_ids=input_ids, attention_mask=attention_mask, loss_mask=loss_mask, sample_mask=mask)
    return batch, [len(p) for p in prompt_token_ids]


def left_pad(sequences: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` ``[B, T]`` with padding on the left (for batched generation)."""
    seq_len = max((len(s) for s in sequences), default=1) or 1
    input_ids = torch.full((len(sequences), seq_len), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(len(sequences), seq_len, dtype=torch.long)
    for i, sequence in enumerate(sequences):
        if sequence:
            input_ids[i, seq_len - len(sequence) :] = torch.tensor(sequence, dtype=torch.long)
            attention_mask[i, seq_len - len(sequence) :] = 1
    return input_ids, attention_mask
