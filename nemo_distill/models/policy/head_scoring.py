"""Score a batch from the final hidden states, applying the output embedding a chunk of rows at a time.

A causal LM's forward ends in ``logits = lm_head(hidden)``: ``[B, T, V]`` in the compute dtype,
which a scorer then upcasts to fp32 (for a 0.6B Qwen3 and 16 x 384 tokens, 3.7 GB + 7.5 GB). For
no-grad scoring (teacher top-k, log-probs) :func:`score_with_chunked_head` instead runs the model
ONCE with a forward pre-hook on its output embedding (``get_output_embeddings()``, generic over HF
models, peft wrappers and FSDP2, whose root unit holds the head and keeps it unsharded during the
root forward) that

1. hands the full hidden states ``[B, T, H]`` to ``score(hidden, head)``, which calls ``head``
   on ``[B, chunk, H]`` slices (:func:`~nemo_distill.models.policy.logprobs.head_topk`,
   :func:`~nemo_distill.models.policy.logprobs.head_token_logprobs`);
2. lets the head itself compute only the last row, ``[B, 1, V]``.

Self-check: the model's returned last-row logits must equal ``head(hidden[:, -1:])``. A model that
transforms logits after its head (Gemma's final soft-capping, Cohere's logit scale) or does not
feed the head the full hidden states fails the check; the caller then falls back to full logits.

A batch whose rows all begin with the same tokens (a teacher's context) can be scored with
:func:`score_with_shared_prefix`: the prefix runs once and every row's remaining columns run against
its KV cache (``logprob_shared_prefix_min_tokens``; the worker picks it per micro-batch).

Training (``policy.train_head_chunk_rows > 0``) uses the same hook with autograd on:
:func:`train_loss_with_chunked_head` sums a loss over windows of prediction rows, each window's
``head(hidden[:, rows])`` and loss share under non-reentrant activation checkpointing, so one
window's ``[B, rows, V]`` logits (and the loss's fp32 intermediates) exist at a time in the forward
AND in the backward, which recomputes them. Under FSDP2 the head's root unit is not resharded
after forward (FSDP2's default for the root), so the recompute in backward finds it unsharded.
"""

from __future__ import annotations

import inspect
from typing import Callable, TypeVar

import torch
from torch.utils.checkpoint import checkpoint

from nemo_distill.models.kv_cache import cache_keyword

Result = TypeVar("Result")


class ChunkedHeadUnsupported(RuntimeError):
    """The model's logits are not ``get_output_embeddings()(final hidden states)``: use full logits."""


def score_with_chunked_head(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    score: Callable[[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]], Result],
    *,
    first_row: int = 0,
    verify_head: bool = True,
) -> Result:
    """``score(hidden [B, T, H], head)`` computed inside one forward of ``model``; no full logits exist.

    ``head`` maps ``[B, rows, H]`` to ``[B, rows, V]`` raw logits (the model's output embedding).
    ``first_row > 0`` hands ``score`` only ``hidden[:, first_row:]`` and returns its result (a tensor or
    a tuple of tensors, columns on dim 1) with ``first_row`` zero columns in front, for when the rows
    before ``first_row`` are not needed (:meth:`TokenBatch.first_target_row`). Columns from
    ``first_row + 1`` on are exact for a column-local score; column ``first_row`` is exact for one that
    reads hidden row ``t`` alone (:func:`~.logprobs.head_topk`), not for one that also reads row
    ``t - 1`` (:func:`~.logprobs.head_token_logprobs` gives its constant 0 there).
    Raises :class:`ChunkedHeadUnsupported` when the model has no output embedding, does not give it
    ``[B, T, H]``, or changes the logits after it (see the module docstring; ``verify_head=False`` skips
    that last check, which waits for the device: a caller that has seen the model pass it once).
    ``attention_mask`` may be None (causal attention only).
    """
    if not 0 <= first_row < input_ids.shape[1]:
        raise ValueError(f"first_row must be in [0, {input_ids.shape[1] - 1}], got {first_row}")
    if first_row == 0:
        return _forward_with_head_hook(model, input_ids, attention_mask, score, verify_head=verify_head)[0]
    result = _forward_with_head_hook(model, input_ids, attention_mask,
                                     lambda hidden, head: score(hidden[:, first_row:], head), verify_head=verify_head)[0]
    return _zero_columns_in_front(result, first_row)


def _zero_columns_in_front(result, columns: int):
    """``result`` (a tensor or a tuple of them, ``[B, t, ...]``) with ``columns`` zero columns prepended on dim 1."""
    if isinstance(result, tuple):
        return tuple(_zero_columns_in_front(part, columns) for part in result)
    return torch.cat([result.new_zeros((result.shape[0], columns, *result.shape[2:])), result], dim=1)


WindowLoss = Callable[[torch.Tensor, slice], tuple[torch.Tensor, dict[str, float]]]


def train_loss_with_chunked_head(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    window_rows: int,
    window_loss: WindowLoss,
    *,
    first_row: int = 0,
    verify_head: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``(Σ_w loss_w, Σ_w metrics_w)`` over windows ``w`` of ``window_rows`` prediction rows (the last one
    shorter), where ``(loss_w, metrics_w) = window_loss(head(hidden[:, w]), w)``; one forward of ``model``,
    with autograd: call ``.backward()`` on the returned loss.

    Args:
        input_ids / attention_mask: ``[B, T]`` the micro-batch (the mask may be None: causal attention only).
        window_rows: prediction rows per head call (>= 1); windows cover rows ``first_row .. T-1``.
        window_loss: ``(logits [B, rows, V] raw, rows: slice) -> (scalar loss share, additive float metrics)``.
        first_row: rows before it get no window (the prompt's, :meth:`TokenBatch.first_target_row`):
            exact for a loss whose rows without target tokens add 0 to the loss and to every metric.

    Each window runs under ``checkpoint(..., use_reentrant=False)``: only ``hidden[:, w]`` is saved, so
    a window's logits are freed once its loss is computed and recomputed one window at a time in
    backward (non-reentrant checkpointing stops the recompute once the loss's saved tensors are back,
    so no-grad metric work after the loss is not repeated). The returned loss also carries an empty
    slice of the model's own output logits, so backward always reaches the model (a window loss may
    have no gradient path, e.g. a one-token micro-batch), and FSDP2's backward hooks on the root's
    output run as they do with full logits. Raises :class:`ChunkedHeadUnsupported` as
    :func:`score_with_chunked_head` does (``verify_head`` as there).
    """
    if window_rows < 1:
        raise ValueError(f"window_rows must be >= 1, got {window_rows}")
    if not 0 <= first_row < input_ids.shape[1]:
        raise ValueError(f"first_row must be in [0, {input_ids.shape[1] - 1}], got {first_row}")

    def windowed(hidden: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, dict]:
        total, sums = None, {}
        for start in range(first_row, hidden.shape[1], window_rows):
            rows = slice(start, min(start + window_rows, hidden.shape[1]))
            loss, metrics = checkpoint(lambda piece, rows=rows: window_loss(head(piece), rows), hidden[:, rows],
                                       use_reentrant=False)
            total = loss if total is None else total + loss
            for name, value in metrics.items():
                sums[name] = sums.get(name, 0.0) + value  # a float or a 0-dim tensor, summed where it lives
        return total, sums

    (loss, sums), output = _forward_with_head_hook(model, input_ids, attention_mask, windowed, verify_head=verify_head)
    return loss + output.logits[..., :0].sum(), sums


def accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether ``model``'s forward (a peft wrapper's base model's) takes HF's ``logits_to_keep``: an int
    ``n`` applies the output embedding to the last ``n`` hidden rows only."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def shared_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> int:
    """The number ``P`` of leading columns of a right-padded ``[B, T]`` batch that are real tokens and
    equal in every row, capped so each row keeps at least one real token after them (0 when ``B < 2``)."""
    if input_ids.shape[0] < 2 or input_ids.shape[1] < 2:
        return 0
    differs = (input_ids != input_ids[:1]).any(dim=0).nonzero()
    first_difference = int(differs[0]) if differs.numel() else input_ids.shape[1]
    shortest = int(attention_mask.sum(dim=1).min())
    return max(0, min(first_difference, shortest - 1))


# (hidden [b, t, H], head, input_ids [b, t]) -> a tensor, or a tuple of tensors, whose dim 1 is the t columns
ColumnScorer = Callable[[torch.Tensor, Callable[[torch.Tensor], torch.Tensor], torch.Tensor], Result]


def score_with_shared_prefix(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prefix_len: int,
    score: ColumnScorer,
    *,
    first_row: int = 0,
    verify_head: bool = True,
) -> Result:
    """``score(hidden, head, input_ids)`` over a batch whose rows all start with the same ``prefix_len`` real
    tokens (:func:`shared_prefix_length`; e.g. a teacher's context before every prompt), as
    :func:`score_with_chunked_head` would give it, computing the prefix once.

    The prefix runs as a batch of one; the other ``T - P`` columns of every row run against its KV
    cache: ``P + B·(T - P)`` token positions instead of ``B·T``. Each layer reads the prefix's keys and
    values broadcast over the rows and stores nothing, so no ``B`` copies of the cache are kept
    (only one layer's ``[B, heads, T, head_dim]`` exists at a time, as in a full forward). ``score`` is called
    twice: on the prefix (``[1, P]``, its result broadcast to every row) and on columns ``P - 1 ..
    T - 1`` (``[B, T - P + 1]``, the prefix's last hidden row first; its column 0 is dropped), so the
    output embedding never runs on ``B`` copies of the prefix. ``score`` must be column-local, as
    :func:`~.logprobs.head_token_logprobs` (column ``t``: hidden row ``t - 1`` and token ``t``; column 0
    a constant) and :func:`~.logprobs.head_topk` (column ``t``: hidden row ``t``) are.
    ``first_row`` as in :func:`score_with_chunked_head`: when it is at least ``P - 1`` (the rows that
    predict targets all come after the shared prefix, as a teacher's context comes before the prompt),
    the prefix is not scored and neither are the tail's columns before ``first_row``; those come back
    as zeros. A smaller ``first_row`` scores every column.
    Raises :class:`ChunkedHeadUnsupported` when the model returns no plain per-layer KV cache, or as
    :func:`score_with_chunked_head` does (``verify_head`` as there).
    """
    batch_size, seq_len = input_ids.shape
    if not 0 < prefix_len < seq_len:
        raise ValueError(f"prefix_len must be in [1, {seq_len - 1}] for a batch of {seq_len} columns, got {prefix_len}")
    if not 0 <= first_row < seq_len:
        raise ValueError(f"first_row must be in [0, {seq_len - 1}], got {first_row}")
    cache_keyword = _cache_keyword(model)
    prefix_ids, tail_ids = input_ids[:1, :prefix_len], input_ids[:, prefix_len - 1 :]
    # tail column c is column prefix_len - 1 + c of the batch
    skip_columns = first_row - (prefix_len - 1) if first_row >= prefix_len - 1 and first_row > 0 else None

    def score_prefix(hidden: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor]):
        return hidden[:, -1:], (None if skip_columns is not None else score(hidden, head, prefix_ids))

    (last_prefix_row, prefix_result), prefix_output = _forward_with_head_hook(
        model, prefix_ids, attention_mask[:1, :prefix_len], score_prefix, verify_head=verify_head, use_cache=True)
    cache = _serve_prefix_to_every_row(getattr(prefix_output, cache_keyword, None), batch_size, type(model).__name__)
    positions = torch.arange(prefix_len, seq_len, device=input_ids.device).expand(batch_size, -1)

    def score_tail(suffix_hidden: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor]):
        tail_hidden = torch.cat([last_prefix_row.expand(batch_size, -1, -1), suffix_hidden], dim=1)
        if skip_columns is not None:
            return score(tail_hidden[:, skip_columns:], head, tail_ids[:, skip_columns:])
        return score(tail_hidden, head, tail_ids)

    tail_result, _ = _forward_with_head_hook(model, input_ids[:, prefix_len:], attention_mask, score_tail,
                                             verify_head=verify_head, **{cache_keyword: cache}, position_ids=positions,
                                             use_cache=True)
    if skip_columns is not None:
        return _zero_columns_in_front(tail_result, first_row)
    return _join_columns(prefix_result, tail_result, batch_size)


def _serve_prefix_to_every_row(cache, batch_size: int, model_name: str):
    """``cache`` (a batch-1 prefix's ``DynamicCache``) changed so each layer's ``update`` returns the
    prefix's keys / values expanded to ``batch_size`` rows followed by the new ones, storing nothing:
    its length stays ``P`` (the next forward's positions and mask sizes start there)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        # no cache, an older transformers without cache layers, or sliding-window / quantised layers
        raise ChunkedHeadUnsupported(f"{model_name} returned no plain per-layer KV cache ({type(cache).__name__})")

    def read_only_update(layer):
        keys, values = layer.keys, layer.values

        def update(key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            return (torch.cat([keys.expand(batch_size, *keys.shape[1:]), key_states], dim=-2),
                    torch.cat([values.expand(batch_size, *values.shape[1:]), value_states], dim=-2))
        return update

    for layer in layers:
        layer.update = read_only_update(layer)
    return cache


def _join_columns(prefix, tail, batch_size: int):
    """The prefix's ``[1, P, ...]`` result broadcast to ``B`` rows, then the tail's ``[B, 1 + S, ...]`` without its column 0."""
    if isinstance(prefix, tuple):
        return tuple(_join_columns(p, t, batch_size) for p, t in zip(prefix, tail))
    return torch.cat([prefix.expand(batch_size, *prefix.shape[1:]), tail[:, 1:]], dim=1)


def _cache_keyword(model: torch.nn.Module) -> str:
    """:func:`~nemo_distill.models.kv_cache.cache_keyword`, a model without a KV cache refused as unsupported."""
    try:
        return cache_keyword(model)
    except TypeError as err:
        raise ChunkedHeadUnsupported(str(err)) from err


def _forward_with_head_hook(model, input_ids, attention_mask, score, *, verify_head: bool = True, **forward_kwargs):
    """``(score(hidden, head), model output)``: the forward of :func:`score_with_chunked_head`, self-check
    included unless ``verify_head`` is False. ``forward_kwargs`` (default ``use_cache=False``) go to the model's forward."""
    head = model.get_output_embeddings()
    if head is None:
        raise ChunkedHeadUnsupported(f"{type(model).__name__}.get_output_embeddings() is None")
    state: dict = {"busy": False}
    seq_len = input_ids.shape[1]

    def call_head(rows: torch.Tensor) -> torch.Tensor:
        state["busy"] = True  # our own head calls pass through the hooks untouched
        try:
            return head(rows)
        finally:
            state["busy"] = False

    def before_head(module, args):
        if state["busy"]:
            return None
        hidden = args[0]
        if hidden.dim() != 3 or hidden.shape[1] != seq_len:
            state["error"] = f"the output embedding got {tuple(hidden.shape)}, expected [B, {seq_len}, H]"
            return None
        state["result"] = score(hidden, call_head)
        return (hidden[:, -1:], *args[1:])

    def after_head(module, args, output):
        if not state["busy"]:
            state["last_row"] = output[:, -1]
        return None

    handles = [head.register_forward_pre_hook(before_head), head.register_forward_hook(after_head)]
    try:
        output = model(input_ids=input_ids, attention_mask=attention_mask, **{"use_cache": False, **forward_kwargs})
    finally:
        for handle in handles:
            handle.remove()
    if "error" in state or "result" not in state:
        raise ChunkedHeadUnsupported(state.get("error", "the output embedding was never called"))
    if verify_head and not torch.equal(output.logits[:, -1].float(), state["last_row"].float()):
        raise ChunkedHeadUnsupported(f"{type(model).__name__} transforms its logits after the output embedding")
    return state["result"], output
