"""Token-level losses. Every loss takes a ``normalizer``: the token count its sum is divided by.

The trainer passes the step's GLOBAL valid-token count (all data-parallel ranks, all
micro-batches), so that the summed micro-batch gradients equal the gradient of the per-token mean
over the whole step. Dividing each micro-batch by its own token count instead would weight a token
of a short micro-batch more than one of a long micro-batch. Without a normalizer a loss is the
masked mean over its own mask (0 for an empty mask, never NaN).

Memory: losses over the vocabulary work on chunks of ``chunk_size`` sequence rows, upcast each
chunk to fp32 on its own, and (when gradients are needed) recompute a chunk in the backward pass
instead of keeping its fp32 ``[B, chunk, V]`` intermediates, so neither the forward nor autograd
ever holds a full fp32 ``[B, T, V]``.

* :func:`topk_kl_loss` / :func:`topk_kl_per_token` -- top-k distillation KL (NeMo-RL semantics).
* :func:`nll_loss` -- SFT cross-entropy.
* :func:`policy_gradient_loss` -- PPO's clipped surrogate (Schulman et al. 2017), token level.
* :func:`token_logprobs` / :func:`selected_token_logprobs` -- ``log p(token)`` without a full fp32
  log-softmax (defined in :mod:`nemo_distill.models.policy.logprobs`, re-exported).
* :func:`masked_token_mean` -- the shared reduction.
* :func:`check_row_window` / :func:`window_token_logprobs` / :func:`row_entropy` -- row windows: a
  trainer-facing loss called with ``rows=slice(s, e)`` gets only logits rows ``s..e-1`` (the worker's
  ``policy.train_head_chunk_rows``) and returns that window's share of the micro-batch loss.
"""

from __future__ import annotations

import torch

from nemo_distill.models.policy.logprobs import compute_dtype as _compute_dtype
from nemo_distill.models.policy.logprobs import maybe_recompute as _maybe_recompute
from nemo_distill.models.policy.logprobs import row_entropy  # noqa: F401 (re-exported)
from nemo_distill.models.policy.logprobs import row_chunks as _row_chunks
from nemo_distill.models.policy.logprobs import split_rows as _split_rows
from nemo_distill.models.policy.logprobs import selected_token_logprobs, token_logprobs  # noqa: F401 (re-exported)

KL_TYPES = ("forward", "reverse", "mixed")
# The teacher log-prob assumed for every token outside its top-k when ``zero_outside_topk``
# (NeMo-RL's "log infinitesimal"): finite, so the reverse-KL tail stays finite.
OUTSIDE_TOPK_TEACHER_LOGPROB = -100.0

Normalizer = float | int | torch.Tensor | None


def _check_normalizer(normalizer: Normalizer) -> None:
    if isinstance(normalizer, (int, float)) and normalizer <= 0:
        raise ValueError(
            f"normalizer must be a positive token count, got {normalizer}; pass None to divide by the mask's own sum"
        )


def masked_token_mean(values: torch.Tensor, mask: torch.Tensor, normalizer: Normalizer = None) -> torch.Tensor:
    """``sum(values * mask) / normalizer`` (or ``/ mask.sum()`` without one); a scalar.

    Args:
        values: ``[B, T]`` (any shape matching ``mask``).
        mask: same shape, bool or float weights; rows with 0 contribute nothing, even if their
            value is inf/NaN (padding rows often hold garbage).
        normalizer: global token count; ``None`` means the masked mean, 0 for an empty mask.
    """
    if values.shape != mask.shape:
        raise ValueError(f"values has shape {tuple(values.shape)} but mask has shape {tuple(mask.shape)}")
    _check_normalizer(normalizer)
    weights = mask.to(values.dtype)
    total = torch.where(weights != 0, values * weights, torch.zeros_like(values)).sum()
    if normalizer is not None:
        return total / normalizer
    count = weights.sum()
    # A safe denominator, not torch.where on the quotient: 0/0 in the unused branch would still
    # send NaN into the gradient.
    return total / torch.where(count != 0, count, torch.ones_like(count))


# ---------------------------------------------------------------------------------------------
# Row windows. With ``policy.train_head_chunk_rows`` the worker applies the output embedding to a
# window of prediction rows at a time and calls the loss once per window with ``rows``; the loss
# returns the window's per-row terms only, but divides by normalisers of the WHOLE micro-batch
# (global StepCounts, grpo's per-sequence and bnpo's per-micro-batch token counts), so the window
# shares add up exactly to the full-logits loss.


def check_row_window(rows: slice | None, logits: torch.Tensor, seq_len: int) -> slice:
    """The prediction-row window ``logits`` ``[B, rows, V]`` covers of a ``seq_len``-row micro-batch.

    ``rows=None`` means all rows (``logits`` is the whole ``[B, seq_len, V]``). Raises ``ValueError``
    when the window is not a plain ``slice(start, stop)`` inside ``[0, seq_len]`` whose length is
    ``logits.shape[1]``.
    """
    if rows is None:
        rows = slice(0, logits.shape[1])
    if not isinstance(rows, slice) or rows.step not in (None, 1) or rows.start is None or rows.stop is None:
        raise ValueError(f"rows must be slice(start, stop) of prediction rows, got {rows!r}")
    if not 0 <= rows.start <= rows.stop <= seq_len or rows.stop - rows.start != logits.shape[1]:
        raise ValueError(
            f"rows={rows!r} must lie within the micro-batch's {seq_len} rows and match the logits' "
            f"{logits.shape[1]} rows (logits shape {tuple(logits.shape)})"
        )
    return rows


def window_tokens(rows: slice, seq_len: int) -> slice:
    """Token positions predicted by prediction rows ``rows`` (row ``t`` predicts token ``t + 1``; the
    last row of the sequence predicts nothing), in the token layout of :mod:`nemo_distill.data.batch`."""
    return slice(rows.start + 1, max(rows.start + 1, min(rows.stop + 1, seq_len)))


def window_token_logprobs(
    logits: torch.Tensor, input_ids: torch.Tensor, rows: slice, chunk_size: int | None = None, *, temperature: float = 1.0
) -> tuple[torch.Tensor, slice]:
    """``(log p [B, n], tokens)``: log-probs of the tokens the window's rows predict, ``tokens`` their
    positions (:func:`window_tokens`; ``n = tokens.stop - tokens.start``).

    ``logits`` ``[B, rows, V]`` raw logits of the prediction rows ``rows`` (checked by
    :func:`check_row_window`); ``input_ids`` ``[B, T]`` the whole micro-batch. Entry ``[b, i]`` is
    ``log softmax(logits[b, i] / temperature)[input_ids[b, rows.start + 1 + i]]`` (fp32, or float64
    for float64 logits). With ``rows = slice(0, T)`` this is ``token_logprobs(logits, input_ids)[:, 1:]``.
    """
    tokens = window_tokens(rows, input_ids.shape[1])
    count = tokens.stop - tokens.start
    scores = selected_token_logprobs(logits[:, :count], input_ids[:, tokens], chunk_size, temperature=temperature)
    return scores, tokens


def _check_topk_inputs(student_logits, teacher_topk_logits, teacher_topk_indices, kl_type, mixed_kl_weight, student_temperature) -> None:
    if not student_temperature > 0.0:  # also rejects NaN
        raise ValueError(
            f"student_temperature must be > 0 (the sampling temperature; greedy sampling scores at 1.0), got {student_temperature}"
        )
    if kl_type not in KL_TYPES:
        raise ValueError(f"kl_type={kl_type!r} is not supported; allowed values: {list(KL_TYPES)}")
    if not 0.0 <= mixed_kl_weight <= 1.0:
        raise ValueError(f"mixed_kl_weight must be in [0, 1] (the weight of the forward KL), got {mixed_kl_weight}")
    if student_logits.dim() != 3:
        raise ValueError(f"student_logits must be [B, T, V], got shape {tuple(student_logits.shape)}")
    if teacher_topk_logits.shape != teacher_topk_indices.shape:
        raise ValueError(
            f"teacher_topk_logits {tuple(teacher_topk_logits.shape)} and teacher_topk_indices "
            f"{tuple(teacher_topk_indices.shape)} must have the same [B, T, K] shape"
        )
    if teacher_topk_logits.shape[:2] != student_logits.shape[:2]:
        raise ValueError(
            f"teacher top-k rows {tuple(teacher_topk_logits.shape[:2])} do not line up with student rows "
            f"{tuple(student_logits.shape[:2])}; align them first"
        )
    if teacher_topk_logits.shape[-1] < 1:
        raise ValueError("teacher top-k has K = 0 entries per row; K must be >= 1")


def _topk_kl_rows(
    student_logits: torch.Tensor,
    teacher_topk_logits: torch.Tensor,
    teacher_topk_indices: torch.Tensor,
    *,
    kl_type: str,
    mixed_kl_weight: float,
    zero_outside_topk: bool,
    student_temperature: float,
) -> torch.Tensor:
    """KL ``[B, c]`` for one chunk of rows (inputs ``[B, c, V]``, ``[B, c, K]``, ``[B, c, K]``)."""
    dtype = _compute_dtype(student_logits)
    teacher_logprobs = torch.log_softmax(teacher_topk_logits.to(dtype), dim=-1)  # q over K
    full_logprobs = None
    if zero_outside_topk:
        # The fp32 upcast makes a [B, c, V] copy anyway; dividing it scales only this chunk.
        scaled = student_logits.to(dtype)
        if student_temperature != 1.0:
            scaled = scaled / student_temperature
        full_logprobs = torch.log_softmax(scaled, dim=-1)  # [B, c, V]
        student_logprobs = torch.gather(full_logprobs, -1, teacher_topk_indices)  # not renormalised
    else:
        # Gather before the upcast and the division: exact, and only [B, c, K] is ever fp32.
        picked = torch.gather(student_logits, -1, teacher_topk_indices).to(dtype)
        if student_temperature != 1.0:
            picked = picked / student_temperature
        student_logprobs = torch.log_softmax(picked, dim=-1)

    forward_weight = {"forward": 1.0, "reverse": 0.0, "mixed": mixed_kl_weight}[kl_type]
    kl = torch.zeros(student_logprobs.shape[:-1], dtype=dtype, device=student_logits.device)
    if forward_weight > 0.0:
        teacher_probs = teacher_logprobs.exp()
        # xlogy: a teacher entry with logit -inf has q = 0 and contributes 0, not NaN.
        forward = (torch.xlogy(teacher_probs, teacher_probs) - teacher_probs * student_logprobs).sum(-1)
        kl = kl + forward_weight * forward
    if forward_weight < 1.0:
        reverse = (student_logprobs.exp() * (student_logprobs - teacher_logprobs)).sum(-1)
        if full_logprobs is not None:
            tail_terms = full_logprobs.exp() * (full_logprobs - OUTSIDE_TOPK_TEACHER_LOGPROB)
            # Zero the in-K entries rather than subtracting their sum from the full sum: the tail
            # is often tiny next to the full sum, and the subtraction would cancel it away in fp32.
            tail = tail_terms.scatter(-1, teacher_topk_indices, 0.0).sum(-1)
            reverse = reverse + tail
        kl = kl + (1.0 - forward_weight) * reverse
    return kl


def topk_kl_per_token(
    student_logits: torch.Tensor,
    teacher_topk_logits: torch.Tensor,
    teacher_topk_indices: torch.Tensor,
    *,
    kl_type: str,
    mixed_kl_weight: float = 0.5,
    zero_outside_topk: bool = False,
    chunk_size: int | None = None,
    student_temperature: float = 1.0,
) -> torch.Tensor:
    """Unreduced, unmasked KL per row, ``[B, T]`` (fp32, or float64 for float64 logits).

    Args:
        student_logits: ``[B, T, V]`` raw student logits (any float dtype), NOT divided by the
            temperature: ``student_temperature`` does that, one chunk at a time.
        teacher_topk_logits: ``[B, T, K]`` teacher logits at its top-k ids, already divided by
            the distillation temperature (the teacher worker's ``get_topk_logits(..., temperature)``).
        teacher_topk_indices: ``[B, T, K]`` int64 global vocabulary ids of those logits.
        kl_type: ``"forward"``, ``"reverse"`` or ``"mixed"``.
        mixed_kl_weight: ``w``, the weight of the forward term in ``"mixed"``.
        zero_outside_topk: see below.
        chunk_size: rows per chunk; default keeps an fp32 ``[B, rows, V]`` under 2**26 elements.
        student_temperature: ``T > 0``; the student's logits are divided by it per chunk (after
            the gather at ``K`` when not ``zero_outside_topk``), so no scaled ``[B, T, V]`` copy
            exists. It must be the temperature the teacher's logits were divided by: with the
            teacher identical to the student the KL is then 0 at every ``T`` (NeMo-RL divides the
            student's logits in its train step, TRL divides both sides).

    Conventions (NeMo-RL's ``DistillationLossFn``; GKD, Agarwal et al. 2024, for the KL directions):

    * ``q = log_softmax(teacher_topk_logits)``: the teacher renormalised over its top-k set ``K``.
    * ``p``: the student's logits divided by ``student_temperature``, gathered at ``K`` and
      renormalised over ``K``; with
      ``zero_outside_topk`` instead the full-vocabulary log-softmax evaluated at ``K`` (not
      renormalised: the student is penalised for mass it puts outside ``K``).
    * forward ``= Σ_K q (log q − log p)``; reverse ``= Σ_K p (log p − log q)``, plus, with
      ``zero_outside_topk``, the tail ``Σ_{v∉K} p(v) (log p(v) + 100)`` (the teacher's log-prob is
      taken to be −100 outside ``K``); mixed ``= w·forward + (1 − w)·reverse``.

    The tail counts once per row, as in NeMo-RL's current ``DistillationLossFn`` (checked against it
    to 4e-14 in all 12 kl_type x k cases).
    """
    _check_topk_inputs(student_logits, teacher_topk_logits, teacher_topk_indices, kl_type, mixed_kl_weight, student_temperature)
    teacher_topk_indices = teacher_topk_indices.long()

    def chunk_kl(logits: torch.Tensor, teacher_logits: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return _topk_kl_rows(
            logits, teacher_logits, indices, kl_type=kl_type, mixed_kl_weight=mixed_kl_weight,
            zero_outside_topk=zero_outside_topk, student_temperature=float(student_temperature),
        )

    batch_size, seq_len, vocab_size = student_logits.shape
    pieces = []
    chunks = list(_row_chunks(batch_size, seq_len, vocab_size, chunk_size))
    for rows, student_rows in zip(chunks, _split_rows(student_logits, chunks)):
        args = (student_rows, teacher_topk_logits[:, rows], teacher_topk_indices[:, rows])
        # Only the zero_outside_topk path builds [B, c, V] fp32 tensors worth recomputing.
        pieces.append(_maybe_recompute(chunk_kl, *args) if zero_outside_topk else chunk_kl(*args))
    if not pieces:  # T = 0
        return student_logits.new_zeros((batch_size, 0), dtype=_compute_dtype(student_logits))
    return torch.cat(pieces, dim=1)


def topk_kl_loss(
    student_logits: torch.Tensor,
    teacher_topk_logits: torch.Tensor,
    teacher_topk_indices: torch.Tensor,
    mask: torch.Tensor,
    *,
    kl_type: str,
    mixed_kl_weight: float = 0.5,
    zero_outside_topk: bool = False,
    normalizer: Normalizer = None,
    chunk_size: int | None = None,
    student_temperature: float = 1.0,
) -> torch.Tensor:
    """Scalar top-k distillation loss: :func:`topk_kl_per_token` (see there for the conventions,
    ``student_temperature`` included) times ``mask`` ``[B, T]``, summed, divided by ``normalizer``
    (the global valid-token count) or, without one, by ``mask.sum()``. Tensors must already be
    aligned row for row."""
    per_token = topk_kl_per_token(
        student_logits,
        teacher_topk_logits,
        teacher_topk_indices,
        kl_type=kl_type,
        mixed_kl_weight=mixed_kl_weight,
        zero_outside_topk=zero_outside_topk,
        chunk_size=chunk_size,
        student_temperature=student_temperature,
    )
    return masked_token_mean(per_token, mask, normalizer)


def nll_loss(
    student_logits: torch.Tensor,
    target_ids: torch.Tensor,
    mask: torch.Tensor,
    normalizer: Normalizer = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """SFT cross-entropy ``−log p(target)`` summed over ``mask`` rows, divided by ``normalizer``
    (or ``mask.sum()``). ``student_logits`` ``[B, T, V]`` row ``t`` scores ``target_ids[:, t]``
    ``[B, T]`` (the caller shifts)."""
    return masked_token_mean(-selected_token_logprobs(student_logits, target_ids, chunk_size), mask, normalizer)


GRPO_LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo")


def _broadcast_advantages(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if advantages.dim() == 1 and advantages.shape[0] == like.shape[0]:
        return advantages[:, None].expand_as(like).to(like.dtype)
    if advantages.shape != like.shape:
        raise ValueError(f"advantages must be [B] or [B, T] = {tuple(like.shape)}, got {tuple(advantages.shape)}")
    return advantages.to(like.dtype)


def clipped_surrogate_per_token(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps_low: float = 0.2,
    clip_eps_high: float = 0.2,
    dual_clip_c: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate loss per token, unreduced: ``(loss [B, T], clipped [B, T] bool, log_ratio [B, T])``.

    ``loss = −min(r·A, clip(r, 1 − ε_low, 1 + ε_high)·A)`` with ``r = exp(logprobs − old_logprobs)``
    (Schulman et al. 2017; separate bounds are DAPO's "clip higher", Yu et al. 2025). With
    ``dual_clip_c`` (> 1; Ye et al. 2020) a negative-advantage token's loss is capped at ``−c·A``, so a
    huge ratio cannot blow it up. ``clipped`` marks tokens whose gradient is cut (the clipped
    branch is the active one). Masked tokens hold 0 and never NaN.
    """
    if clip_eps_low < 0 or clip_eps_high < 0:
        raise ValueError(f"clip_eps_low / clip_eps_high must be >= 0, got {clip_eps_low} / {clip_eps_high}")
    if dual_clip_c is not None and dual_clip_c <= 1.0:
        raise ValueError(f"dual_clip_c must be > 1 (or None), got {dual_clip_c}")
    if logprobs.shape != old_logprobs.shape or logprobs.shape != mask.shape:
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)}, old_logprobs {tuple(old_logprobs.shape)} and mask "
            f"{tuple(mask.shape)} must all be [B, T]"
        )
    advantages = _broadcast_advantages(advantages, logprobs)
    valid = mask != 0
    # Padding rows may hold arbitrary log-probs; exp of a huge difference would put inf into the
    # graph and 0 * inf = NaN into the gradient even though the row is masked out.
    log_ratio = torch.where(valid, logprobs - old_logprobs, torch.zeros_like(logprobs))
    ratio = torch.exp(log_ratio)
    unclipped = ratio * advantages
    clipped_term = torch.clamp(ratio, 1.0 - clip_eps_low, 1.0 + clip_eps_high) * advantages
    surrogate = torch.minimum(unclipped, clipped_term)
    clipped = clipped_term < unclipped
    if dual_clip_c is not None:
        floor = dual_clip_c * advantages
        dual = (advantages < 0) & (surrogate < floor)
        surrogate = torch.where(dual, floor, surrogate)
        clipped = clipped | dual
    loss = torch.where(valid, -surrogate, torch.zeros_like(surrogate))
    return loss, clipped & valid, log_ratio


@torch.no_grad()
def _surrogate_metrics(clipped: torch.Tensor, log_ratio: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Masked token means of :func:`clipped_surrogate_per_token`'s outputs: ``clip_fraction`` (share of
    tokens whose gradient is cut) and ``approx_kl`` (k1 estimator of KL(old || new))."""
    return {"clip_fraction": float(masked_token_mean(clipped.to(log_ratio.dtype), mask)),
            "approx_kl": float(masked_token_mean(-log_ratio, mask))}


def k3_kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` k3 estimator of KL(policy || reference) per sampled token (Schulman 2020):
    ``exp(ref − logp) − (ref − logp) − 1`` >= 0, exactly 0 where the two agree; 0 on masked tokens."""
    diff = torch.where(mask != 0, ref_logprobs.to(logprobs.dtype) - logprobs, torch.zeros_like(logprobs))
    return torch.exp(diff) - diff - 1.0


def normalize_token_loss(
    token_loss: torch.Tensor,
    mask: torch.Tensor,
    *,
    loss_type: str,
    num_sequences: float,
    num_tokens: float,
    max_new_tokens: int | None = None,
    num_micro_batches: int = 1,
    full_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reduce a ``[B, T]`` per-token loss the way ``loss_type`` says; a micro-batch's share of the step loss.

    * ``grpo``: Σ over sequences of (the sequence's token sum / its token count), / ``num_sequences``
      (Shao et al. 2024: each sequence weighs the same, whatever its length).
    * ``dr_grpo``: token sum / (``num_sequences`` · ``max_new_tokens``) (Liu et al. 2025: no length bias).
    * ``dapo``: token sum / ``num_tokens`` (the global batch's tokens; Yu et al. 2025).
    * ``bnpo``: token sum / this micro-batch's own token count, / ``num_micro_batches`` (each
      micro-batch a token mean, micro-batches weighted equally).

    ``num_sequences`` / ``num_tokens`` are the step's global counts (:class:`StepCounts`); summing
    the results of all micro-batches and ranks gives the step's loss.

    ``full_mask``: when ``token_loss`` / ``mask`` cover only a window of the micro-batch's tokens
    (``[B, n]``, see :func:`check_row_window`), the micro-batch's whole ``[B, T]`` target mask:
    grpo's per-sequence and bnpo's per-micro-batch token counts come from it, never from the
    window, so the windows' results add up to the whole micro-batch's.
    """
    if loss_type not in GRPO_LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r} is not supported; allowed values: {list(GRPO_LOSS_TYPES)}")
    weights = mask.to(token_loss.dtype)
    masked = torch.where(weights != 0, token_loss * weights, torch.zeros_like(token_loss))
    count_weights = weights if full_mask is None else full_mask.to(token_loss.dtype)
    if count_weights.shape[0] != weights.shape[0]:
        raise ValueError(f"full_mask {tuple(count_weights.shape)} must have the {weights.shape[0]} sequences of mask {tuple(weights.shape)}")
    if loss_type == "grpo":
        per_sequence = masked.sum(dim=1) / count_weights.sum(dim=1).clamp(min=1.0)
        return per_sequence.sum() / num_sequences
    if loss_type == "dr_grpo":
        if max_new_tokens is None or max_new_tokens < 1:
            raise ValueError(f"loss_type 'dr_grpo' divides by max_new_tokens, which must be >= 1, got {max_new_tokens}")
        return masked.sum() / (num_sequences * max_new_tokens)
    if loss_type == "dapo":
        return masked.sum() / num_tokens
    return masked.sum() / count_weights.sum().clamp(min=1.0) / num_micro_batches


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    loss_type: str,
    clip_eps_low: float = 0.2,
    clip_eps_high: float = 0.2,
    beta: float = 0.0,
    ref_logprobs: torch.Tensor | None = None,
    max_new_tokens: int | None = None,
    dual_clip_c: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO loss of ONE whole batch (DESIGN.md public contract); the trainer's micro-batched path equals it.

    Args:
        logprobs / old_logprobs: ``[B, T]`` log-probs of the sampled tokens under the policy being
            trained and the policy that sampled them.
        advantages: ``[B]`` (one per sequence) or ``[B, T]``.
        mask: ``[B, T]`` tokens that count.
        beta: weight of the k3 KL to ``ref_logprobs`` (``[B, T]``, needed when beta > 0).

    Per token ``−min(r·A, clip(r, 1 − ε_low, 1 + ε_high)·A) + β·k3``, reduced by
    :func:`normalize_token_loss` with this batch as the whole step (sequences = rows with at least
    one masked token). Returns the loss and metrics (means over masked tokens): ``clip_fraction``,
    ``approx_kl`` (k1 of KL(old || new)), and ``kl`` (k3 to the reference, when given).
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta > 0 and ref_logprobs is None:
        raise ValueError("beta > 0 needs ref_logprobs (the reference model's log-probs of the sampled tokens)")
    token_loss, clipped, log_ratio = clipped_surrogate_per_token(
        logprobs, old_logprobs, advantages, mask, clip_eps_low=clip_eps_low, clip_eps_high=clip_eps_high, dual_clip_c=dual_clip_c
    )
    metrics: dict[str, float] = {}
    if ref_logprobs is not None:
        kl = k3_kl_per_token(logprobs, ref_logprobs, mask)
        if beta > 0:
            token_loss = token_loss + beta * kl
        metrics["kl"] = float(masked_token_mean(kl.detach(), mask))
    weights = mask.to(logprobs.dtype)
    loss = normalize_token_loss(
        token_loss, mask, loss_type=loss_type, num_sequences=float((weights.sum(dim=1) > 0).sum().clamp(min=1)),
        num_tokens=float(weights.sum().clamp(min=1)), max_new_tokens=max_new_tokens,
    )
    metrics.update(_surrogate_metrics(clipped, log_ratio, mask))
    return loss, metrics


def policy_gradient_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps_low: float = 0.2,
    clip_eps_high: float = 0.2,
    normalizer: Normalizer = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped surrogate (:func:`clipped_surrogate_per_token`) summed over ``mask`` and divided
    by ``normalizer`` (or the masked mean); metrics ``clip_fraction`` and ``approx_kl`` as in :func:`grpo_loss`."""
    token_loss, clipped, log_ratio = clipped_surrogate_per_token(
        logprobs, old_logprobs, advantages, mask, clip_eps_low=clip_eps_low, clip_eps_high=clip_eps_high
    )
    return masked_token_mean(token_loss, mask, normalizer), _surrogate_metrics(clipped, log_ratio, mask)
