"""Row windows (``policy.train_head_chunk_rows``): each trainer-facing loss called on windows of
prediction rows returns shares that add up to its full-logits loss, metric sums and gradient.

For SFT, GRPO (all four loss types, with a reference KL and seed 002's token-level advantage terms)
and top-k distillation (forward / reverse / mixed, with and without ``zero_outside_topk``): windows
of 1, 3 and more than T rows, float64, ragged batches (padding, a dropped sample, a sample with no
target). The full-logits values are checked against plain-Python brute force (SFT, GRPO) so the
equality is not just "two library paths agree".

Mutation check (run by hand when this file was written): making ``normalize_token_loss`` divide a
window by its own token counts (ignoring ``full_mask``) fails
``test_grpo_windows_add_up_to_full_logits`` for ``grpo`` and ``bnpo`` (4 of its 8 cases); dividing the SFT window by its own token count instead of ``counts.tokens`` fails
``test_sft_windows_add_up_to_full_logits``.
"""

from __future__ import annotations

import math

import pytest
import torch

from nemo_distill.algorithms.distillation_loss import TEACHER_TOPK_INDICES, TEACHER_TOPK_LOGITS, TopkDistillationLoss
from nemo_distill.algorithms.grpo_loss import (
    ADVANTAGES,
    KL_GATES,
    OLD_LOGPROBS,
    REFERENCE_LOGPROBS,
    TOKEN_ADVANTAGE_TERMS,
    GRPOLoss,
)
from nemo_distill.algorithms.loss_functions import GRPO_LOSS_TYPES, check_row_window, window_tokens
from nemo_distill.algorithms.sft import SFTLoss
from nemo_distill.data.batch import TokenBatch
from nemo_distill.models.policy.interfaces import StepCounts

F64 = torch.float64
B, T, V, K = 4, 9, 13, 4
WINDOWS = (1, 3, T + 4)


def _batch(seed: int) -> tuple[torch.Tensor, TokenBatch]:
    """float64 logits [B, T, V] and a right-padded batch: ragged prompts/responses, a dropped sample
    (sample_mask 0) and, in row 3, a response that is all prompt (no target)."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, dtype=F64, generator=generator) * 2
    input_ids = torch.randint(0, V, (B, T), generator=generator)
    lengths, prompts = [T, 6, 8, 5], [2, 1, 3, 5]
    attention_mask = torch.zeros(B, T, dtype=torch.long)
    loss_mask = torch.zeros(B, T)
    for row in range(B):
        attention_mask[row, : lengths[row]] = 1
        loss_mask[row, prompts[row] : lengths[row]] = 1.0
        input_ids[row, lengths[row] :] = 0
    sample_mask = torch.tensor([1.0, 1.0, 0.0, 1.0])
    return logits, TokenBatch(input_ids=input_ids, attention_mask=attention_mask, loss_mask=loss_mask, sample_mask=sample_mask)


def _counts(batch: TokenBatch, micro_batches: int = 2) -> StepCounts:
    # Pretend this micro-batch is half of a step: global counts larger than its own.
    targets = batch.valid_target_tokens()[:, 1:]
    return StepCounts(tokens=float(targets.sum()) + 7.0, sequences=float((targets.sum(1) > 0).sum()) + 2.0,
                      micro_batches=micro_batches)


def _windowed(loss_fn, logits: torch.Tensor, batch: TokenBatch, counts: StepCounts, window: int):
    """What the worker does: the loss on each window of prediction rows, summed; metrics summed."""
    total, sums = torch.zeros((), dtype=F64), {}
    for start in range(0, T, window):
        rows = slice(start, min(start + window, T))
        loss, metrics = loss_fn(logits[:, rows], batch, counts=counts, rows=rows)
        total = total + loss
        for name, value in metrics.items():
            sums[name] = sums.get(name, 0.0) + value
    return total, sums


def _assert_windows_match_full(loss_fn, logits, batch, counts) -> tuple[torch.Tensor, dict]:
    full_logits = logits.clone().requires_grad_()
    full, full_metrics = loss_fn(full_logits, batch, counts=counts)
    full.backward()
    assert full_logits.grad.abs().sum() > 0
    for window in WINDOWS:
        split_logits = logits.clone().requires_grad_()
        total, sums = _windowed(loss_fn, split_logits, batch, counts, window)
        total.backward()
        assert abs(total.item() - full.item()) <= 1e-12, (window, total.item(), full.item())
        torch.testing.assert_close(split_logits.grad, full_logits.grad, rtol=0, atol=1e-12)
        assert sums.keys() == full_metrics.keys()
        for name, value in full_metrics.items():
            assert float(sums[name]) == pytest.approx(float(value), rel=1e-12, abs=1e-12), (window, name)
    return full, {name: float(value) for name, value in full_metrics.items()}


def _logp(logits: torch.Tensor, b: int, row: int, token: int, temperature: float = 1.0) -> float:
    """Plain-float log-softmax of one logits row at one token."""
    values = [float(x) / temperature for x in logits[b, row]]
    top = max(values)
    return values[token] - top - math.log(sum(math.exp(v - top) for v in values))


def test_sft_windows_add_up_to_full_logits():
    logits, batch = _batch(seed=0)
    counts = _counts(batch)
    full, metrics = _assert_windows_match_full(SFTLoss(logprob_chunk_size=2), logits, batch, counts)
    mask = batch.valid_target_tokens()
    nll = -sum(_logp(logits, b, t - 1, int(batch.input_ids[b, t])) for b in range(B) for t in range(1, T) if mask[b, t])
    assert full.item() == pytest.approx(nll / counts.tokens, rel=1e-12)
    assert metrics == pytest.approx({"nll_sum": nll, "tokens": float(mask[:, 1:].sum())}, rel=1e-12)


def _grpo_batch(seed: int) -> tuple[torch.Tensor, TokenBatch]:
    logits, batch = _batch(seed)
    generator = torch.Generator().manual_seed(seed + 100)
    extras = {
        ADVANTAGES: torch.randn(B, dtype=F64, generator=generator),
        OLD_LOGPROBS: -2.5 + 0.4 * torch.randn(B, T, dtype=F64, generator=generator),
        REFERENCE_LOGPROBS: -2.5 + 0.4 * torch.randn(B, T, dtype=F64, generator=generator),
        TOKEN_ADVANTAGE_TERMS: 0.3 * torch.randn(B, T, dtype=F64, generator=generator),
        KL_GATES: torch.tensor([1.0, 0.5, 0.0, 1.0], dtype=F64),
    }
    return logits, TokenBatch(input_ids=batch.input_ids, attention_mask=batch.attention_mask, loss_mask=batch.loss_mask,
                              sample_mask=batch.sample_mask, extras=extras)


def _grpo_brute_force(loss_fn: GRPOLoss, logits, batch, counts) -> float:
    """Plain-float GRPOLoss of one micro-batch (per token: clipped surrogate + beta k3, token-level advantages)."""
    mask, extras, temperature = batch.valid_target_tokens(), batch.extras, loss_fn.temperature
    per_sequence, total, seq_tokens = [], 0.0, []
    for b in range(B):
        terms = []
        for t in range(1, T):
            if not mask[b, t]:
                continue
            lp = _logp(logits, b, t - 1, int(batch.input_ids[b, t]), temperature)
            adv = float(extras[ADVANTAGES][b]) + float(extras[TOKEN_ADVANTAGE_TERMS][b, t]) \
                - float(extras[KL_GATES][b]) * loss_fn.token_student_tau * lp
            ratio = math.exp(lp - float(extras[OLD_LOGPROBS][b, t]))
            clipped = min(max(ratio, 1 - loss_fn.clip_eps_low), 1 + loss_fn.clip_eps_high)
            d = float(extras[REFERENCE_LOGPROBS][b, t]) - lp
            terms.append(-min(ratio * adv, clipped * adv) + loss_fn.beta * (math.exp(d) - d - 1))
        total += sum(terms)
        seq_tokens.append(len(terms))
        per_sequence.append(sum(terms) / max(len(terms), 1))
    if loss_fn.loss_type == "grpo":
        return sum(per_sequence) / counts.sequences
    if loss_fn.loss_type == "dr_grpo":
        return total / (counts.sequences * loss_fn.max_new_tokens)
    if loss_fn.loss_type == "dapo":
        return total / counts.tokens
    return total / sum(seq_tokens) / counts.micro_batches  # bnpo: this micro-batch's own token count


@pytest.mark.parametrize("loss_type", GRPO_LOSS_TYPES)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_grpo_windows_add_up_to_full_logits(loss_type, temperature):
    logits, batch = _grpo_batch(seed=1)
    counts = _counts(batch)
    loss_fn = GRPOLoss(loss_type=loss_type, beta=0.1, max_new_tokens=7, temperature=temperature, token_student_tau=0.4,
                       clip_eps_low=0.1, clip_eps_high=0.15, logprob_chunk_size=2)
    full, metrics = _assert_windows_match_full(loss_fn, logits, batch, counts)
    assert full.item() == pytest.approx(_grpo_brute_force(loss_fn, logits, batch, counts), rel=1e-12)
    assert metrics["tokens"] == float(batch.valid_target_tokens()[:, 1:].sum())
    assert 0 < metrics["clipped_tokens"] < metrics["tokens"]  # the data exercise clipping


def _topk_batch(seed: int) -> tuple[torch.Tensor, TokenBatch]:
    logits, batch = _batch(seed)
    generator = torch.Generator().manual_seed(seed + 200)
    teacher = torch.randn(B, T, V, dtype=F64, generator=generator) * 2
    values, indices = torch.topk(teacher, K, dim=-1)
    return logits, TokenBatch(input_ids=batch.input_ids, attention_mask=batch.attention_mask, loss_mask=batch.loss_mask,
                              sample_mask=batch.sample_mask, extras={TEACHER_TOPK_LOGITS: values, TEACHER_TOPK_INDICES: indices})


@pytest.mark.parametrize("kl_type", ["forward", "reverse", "mixed"])
@pytest.mark.parametrize("zero_outside_topk", [False, True])
def test_topk_distillation_windows_add_up_to_full_logits(kl_type, zero_outside_topk):
    logits, batch = _topk_batch(seed=2)
    loss_fn = TopkDistillationLoss(kl_type=kl_type, mixed_kl_weight=0.3, zero_outside_topk=zero_outside_topk, temperature=0.8)
    _assert_windows_match_full(loss_fn, logits, batch, _counts(batch))


def test_window_tokens_and_checks():
    assert window_tokens(slice(0, 3), 9) == slice(1, 4)
    assert window_tokens(slice(6, 9), 9) == slice(7, 9)  # the last row predicts nothing
    assert window_tokens(slice(8, 9), 9) == slice(9, 9)
    logits = torch.zeros(2, 3, 5)
    assert check_row_window(None, logits, 9) == slice(0, 3)
    for bad in (slice(0, 2), slice(7, 10), slice(0, 6, 2), slice(None, 3)):
        with pytest.raises(ValueError, match="rows"):
            check_row_window(bad, logits, 9)


def test_a_window_with_only_the_last_row_contributes_zero():
    logits, batch = _batch(seed=3)
    rows = slice(T - 1, T)
    loss, metrics = SFTLoss()(logits[:, rows].clone().requires_grad_(), batch, counts=_counts(batch), rows=rows)
    assert loss.item() == 0.0 and metrics == {"nll_sum": 0.0, "tokens": 0.0}
