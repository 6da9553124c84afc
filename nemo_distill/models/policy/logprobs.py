"""Log-probs of given tokens from logits, chunked so no full fp32 ``[B, T, V]`` is ever held.

Two layouts exist in the library (see :mod:`nemo_distill.data.batch`): logits rows (row ``t``
predicts token ``t + 1``) and tokens (entry ``t`` belongs to ``input_ids[:, t]``). Every loss and
``get_logprobs`` go through :func:`token_logprobs`, which returns the TOKEN layout, so no caller
re-derives the shift: entry ``[b, t]`` is ``log p(input_ids[b, t] | input_ids[b, :t])``.

Memory: each chunk of ``chunk_size`` rows is upcast to fp32 on its own and, when gradients are
needed, recomputed in backward instead of keeping its fp32 ``[B, chunk, V]`` intermediates.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch.utils.checkpoint import checkpoint

# Default chunk: the most rows whose fp32 [B, rows, V] slice stays under 2**26 elements (256 MiB).
DEFAULT_CHUNK_ELEMENTS = 2**26


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """fp32 for half-precision inputs; float64 stays float64 (gradcheck relies on it)."""
    return torch.promote_types(tensor.dtype, torch.float32)


def row_chunks(batch_size: int, seq_len: int, vocab_size: int, chunk_size: int | None) -> Iterator[slice]:
    """Slices of at most ``chunk_size`` rows (default: keep fp32 ``[B, rows, V]`` under 2**26 elements)."""
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    rows = chunk_size or max(1, DEFAULT_CHUNK_ELEMENTS // max(1, batch_size * vocab_size))
    for start in range(0, seq_len, rows):
        yield slice(start, min(start + rows, seq_len))


def split_rows(tensor: torch.Tensor, chunks: list[slice]) -> tuple[torch.Tensor, ...]:
    """``tensor[:, chunk]`` for each of ``chunks`` (consecutive, covering dim 1) as ``torch.split`` views.

    Not plain slicing: the backward of each slice of a ``[B, T, V]`` tensor that requires grad writes
    a full-size zero gradient and adds it to the others (one full ``[B, T, V]`` pass per chunk);
    ``split``'s backward concatenates the chunk gradients once.
    """
    return torch.split(tensor, [chunk.stop - chunk.start for chunk in chunks], dim=1)


def maybe_recompute(function: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> torch.Tensor:
    """Run ``function(*inputs)``; when autograd will need its intermediates, recompute them in
    backward instead of storing them (the fp32 ``[B, chunk, V]`` tensors are the big ones)."""
    if torch.is_grad_enabled() and any(x.requires_grad for x in inputs):
        return checkpoint(function, *inputs, use_reentrant=False)
    return function(*inputs)


def _selected_rows(logits: torch.Tensor, token_ids: torch.Tensor, temperature: float) -> torch.Tensor:
    scaled = logits.to(compute_dtype(logits))
    if temperature != 1.0:
        scaled = scaled / temperature
    picked = torch.gather(scaled, -1, token_ids.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(scaled, dim=-1)


def selected_token_logprobs(
    logits: torch.Tensor, token_ids: torch.Tensor, chunk_size: int | None = None, *, temperature: float = 1.0
) -> torch.Tensor:
    """``[B, T]`` log-probs ``log_softmax(logits / temperature)[b, t, token_ids[b, t]]`` (fp32 or float64).

    ``logits`` ``[B, T, V]`` raw logits; ``token_ids`` ``[B, T]`` int ids. Row ``t`` of ``logits``
    scores ``token_ids[:, t]``: the caller has already shifted. Prefer :func:`token_logprobs`.
    """
    if logits.shape[:2] != token_ids.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and token_ids {tuple(token_ids.shape)} must share [B, T]")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    token_ids = token_ids.long()
    batch_size, seq_len, vocab_size = logits.shape
    chunks = list(row_chunks(batch_size, seq_len, vocab_size, chunk_size))
    pieces = [
        maybe_recompute(lambda lg, ids: _selected_rows(lg, ids, temperature), logits_rows, token_ids[:, rows])
        for rows, logits_rows in zip(chunks, split_rows(logits, chunks))
    ]
    if not pieces:
        return logits.new_zeros((batch_size, 0), dtype=compute_dtype(logits))
    return torch.cat(pieces, dim=1)


def token_logprobs(
    logits: torch.Tensor, input_ids: torch.Tensor, chunk_size: int | None = None, *, temperature: float = 1.0
) -> torch.Tensor:
    """Token-layout log-probs ``[B, T]``: entry ``t`` is ``log p(input_ids[:, t] | input_ids[:, :t])``.

    Args:
        logits: ``[B, T, V]`` raw logits in the logits layout (row ``t`` predicts token ``t + 1``).
        input_ids: ``[B, T]`` the tokens being scored.
        temperature: the logits are divided by it first (the sampling temperature, so the scores
            are those of the distribution the tokens were drawn from).

    Entry 0 has no prediction and is 0; padding entries hold meaningless values: mask them.
    """
    scores = selected_token_logprobs(logits[:, :-1], input_ids[:, 1:], chunk_size, temperature=temperature)
    return torch.nn.functional.pad(scores, (1, 0))


@torch.no_grad()
def row_entropy(logits: torch.Tensor, chunk_size: int | None = None, *, temperature: float = 1.0) -> torch.Tensor:
    """``[B, rows]`` entropy (nats) of ``softmax(logits / temperature)`` per row of ``logits`` ``[B, rows, V]``,
    ``chunk_size`` fp32 rows at a time; no gradient."""
    batch_size, num_rows, vocab_size = logits.shape
    pieces = [logits.new_zeros((batch_size, 0), dtype=compute_dtype(logits))]
    for chunk in row_chunks(batch_size, num_rows, vocab_size, chunk_size):
        logprobs = torch.log_softmax(logits[:, chunk].to(compute_dtype(logits)) / temperature, dim=-1)
        pieces.append(-(logprobs.exp() * logprobs).sum(-1))
    return torch.cat(pieces, dim=1)


def token_entropy(logits: torch.Tensor, chunk_size: int | None = None, *, temperature: float = 1.0) -> torch.Tensor:
    """Token-layout entropy ``[B, T]`` (nats) of ``softmax(logits / temperature)`` that produced each
    token: entry ``t`` is the entropy of the prediction row ``t - 1`` (:func:`row_entropy`); entry 0 is 0. No gradient."""
    return torch.nn.functional.pad(row_entropy(logits[:, :-1], chunk_size, temperature=temperature), (1, 0))


# ---------------------------------------------------------------------------------------------
# Scoring from hidden states: the output embedding applied a chunk of rows at a time, so neither
# the model's logits nor their fp32 copy ever exist for a whole micro-batch ([B, chunk, V] only).

# hidden[:, rows] is a strided view; the head gets a contiguous copy ([B, rows, H], small) so its
# matmul runs as ONE [B*rows, H] x [H, V] GEMM: on a strided input torch fell back to a batched
# matmul of B tiny [rows, H] x [H, V] products (H200 profile: 32% of the teacher's GPU time, at
# about 100 TFLOP/s; docs/performance.md).
# At most this many logits per head call (bf16: 256 MiB, fp32 copy: 512 MiB), whatever chunk_size
# says: a teacher micro-batch of 32 x 384 rows of a 151936-word vocabulary is 27 rows a call.
HEAD_CHUNK_ELEMENTS = 2**27


def head_chunk_rows(batch_size: int, chunk_size: int, vocab_size: int | None) -> int:
    """Rows per head call: ``chunk_size``, capped so ``batch_size x rows x vocab_size <= HEAD_CHUNK_ELEMENTS``."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if not vocab_size:
        return chunk_size
    return max(1, min(chunk_size, HEAD_CHUNK_ELEMENTS // max(1, batch_size * vocab_size)))


def head_token_logprobs(
    hidden: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor], input_ids: torch.Tensor, chunk_size: int,
    *, temperature: float = 1.0, vocab_size: int | None = None,
) -> torch.Tensor:
    """Token-layout log-probs ``[B, T]`` (fp32) from the final hidden states, as :func:`token_logprobs`
    gives from ``head(hidden)``; no gradient path (scoring only).

    Args:
        hidden: ``[B, T, H]`` final (normed) hidden states; row ``t`` predicts ``input_ids[:, t + 1]``.
        head: the output embedding, ``[b, rows, H] -> [b, rows, V]`` raw logits.
        input_ids: ``[B, T]`` the tokens being scored.
        chunk_size: rows per ``head`` call (fewer when ``vocab_size`` is given: :func:`head_chunk_rows`).

    Entry 0 is 0; padding entries hold meaningless values: mask them.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    batch_size, seq_len = input_ids.shape
    pieces = [hidden.new_zeros((batch_size, 1), dtype=torch.float32)]
    for rows in row_chunks(batch_size, max(seq_len - 1, 0), 1, head_chunk_rows(batch_size, chunk_size, vocab_size)):
        targets = input_ids[:, rows.start + 1 : rows.stop + 1].long()
        pieces.append(_selected_rows(head(hidden[:, rows].contiguous()), targets, temperature).float())
    return torch.cat(pieces, dim=1)


def head_topk(
    hidden: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor], k: int, chunk_size: int, *, temperature: float = 1.0,
    vocab_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``([B, T, k] fp32 values, [B, T, k] int64 ids)``: the ``k`` largest of ``head(hidden) / temperature``
    per row (descending), computed ``chunk_size`` rows at a time (fewer when ``vocab_size`` is given:
    :func:`head_chunk_rows`); row ``t`` describes token ``t + 1``.

    The top-k runs on the head's own dtype (bf16 on GPU: no fp32 ``[B, chunk, V]`` copy); only the
    ``k`` winners are upcast, then divided by ``temperature`` (a positive scale keeps the order).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    values, indices = [], []
    for rows in row_chunks(hidden.shape[0], hidden.shape[1], 1, head_chunk_rows(hidden.shape[0], chunk_size, vocab_size)):
        top = torch.topk(head(hidden[:, rows].contiguous()), k, dim=-1)
        values.append(top.values.float() / temperature)
        indices.append(top.indices)
    if not values:
        empty = hidden.new_zeros((hidden.shape[0], 0, k), dtype=torch.float32)
        return empty, empty.long()
    return torch.cat(values, dim=1), torch.cat(indices, dim=1)
