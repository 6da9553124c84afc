"""Token lists -> padded tensors: right-padded training batches, left-padded generation inputs."""

from __future__ import annotations

import logging

import torch

from nemo_distill.data.batch import TokenBatch

log = logging.getLogger(__name__)


def build_token_batch(
    prompt_token_ids: list[list[int]],
    response_token_ids: list[list[int]],
    *,
    pad_token_id: int,
    sample_mask: list[float] | None = None,
    max_total_length: int | None = None,
) -> tuple[TokenBatch, list[int]]:
    """Prompt + response per sample, right-padded; ``loss_mask`` 1 on response tokens only.

    Returns ``(batch, prompt_lengths)``: ``batch.input_ids`` / ``attention_mask`` / ``loss_mask``
    are ``[B, T]`` with ``T`` the longest (possibly truncated) sample, ``sample_mask`` is ``[B]``
    (all ones unless given), and ``prompt_lengths[i]`` is the untruncated prompt length of sample
    ``i`` (the column where its response starts).

    A sample longer than ``max_total_length`` is cut at the end: its response loses its tail (or,
    if the prompt alone is too long, the row holds only prompt tokens and no target). Its
    ``sample_mask`` is left as given -- the kept tokens are still a valid training signal -- and
    the cut is reported with a warning naming the samples.
    """
    if len(prompt_token_ids) != len(response_token_ids):
        raise ValueError(f"{len(prompt_token_ids)} prompts but {len(response_token_ids)} responses")
    if sample_mask is not None and len(sample_mask) != len(prompt_token_ids):
        raise ValueError(f"sample_mask has {len(sample_mask)} entries but there are {len(prompt_token_ids)} samples")
    if max_total_length is not None and max_total_length < 1:
        raise ValueError(f"max_total_length must be >= 1 or None, got {max_total_length}")
    sequences = [list(p) + list(r) for p, r in zip(prompt_token_ids, response_token_ids)]
    if max_total_length is not None:
        truncated = [i for i, s in enumerate(sequences) if len(s) > max_total_length]
        if truncated:
            log.warning("build_token_batch: %d sample(s) longer than %d tokens cut at the end: %s",
                        len(truncated), max_total_length, truncated[:16])
        sequences = [s[:max_total_length] for s in sequences]
    seq_len = max((len(s) for s in sequences), default=1) or 1
    batch_size = len(sequences)
    input_ids = torch.full((batch_size, seq_len), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(batch_size, seq_len, dtype=torch.long)
    loss_mask = torch.zeros(batch_size, seq_len, dtype=torch.float32)
    for i, (sequence, prompt) in enumerate(zip(sequences, prompt_token_ids)):
        input_ids[i, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        attention_mask[i, : len(sequence)] = 1
        # Position 0 has no preceding logits row, so it is never a target (TokenBatch convention).
        loss_mask[i, max(len(prompt), 1) : len(sequence)] = 1.0
    mask = torch.tensor(sample_mask if sample_mask is not None else [1.0] * batch_size, dtype=torch.float32)
    batch = TokenBatch(input_ids=input_ids, attention_mask=attention_mask, loss_mask=loss_mask, sample_mask=mask)
    return batch, [len(p) for p in prompt_token_ids]


def left_pad(sequences: list[list[int]], pad_token_id: int, *, multiple_of: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both ``[B, T]`` long tensors, padded on the **left**.

    Batched decoding appends new tokens on the right, so every prompt must end in the last column.
    ``T`` is the longest sequence (at least 1, so an all-empty batch still has a column), rounded
    up to a multiple of ``multiple_of`` (fewer distinct shapes for a compiled decoder).
    """
    if multiple_of < 1:
        raise ValueError(f"multiple_of must be >= 1, got {multiple_of}")
    seq_len = max((len(s) for s in sequences), default=1) or 1
    seq_len = -(-seq_len // multiple_of) * multiple_of
    input_ids = torch.full((len(sequences), seq_len), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(len(sequences), seq_len, dtype=torch.long)
    for i, sequence in enumerate(sequences):
        if sequence:
            input_ids[i, seq_len - len(sequence) :] = torch.tensor(sequence, dtype=torch.long)
            attention_mask[i, seq_len - len(sequence) :] = 1
    return input_ids, attention_mask
