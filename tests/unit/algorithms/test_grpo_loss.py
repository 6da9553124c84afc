"""GRPO loss: hand-computed normalisations, clipping and its gradients, k3 KL, masks, and the
trainer's micro-batched multi-rank path (:class:`GRPOLoss`) against the whole-batch ``grpo_loss``.

Expected values are written out by hand or computed by plain-float Python loops, never by the
library's own reductions.
"""

from __future__ import annotations

import math

import pytest
import torch

from nemo_distill.algorithms.grpo_loss import (
    ADVANTAGES,
    KL_GATES,
    OLD_LOGPROBS,
    REFERENCE_LOGPROBS,
    TOKEN_ADVANTAGE_TERMS,
    GRPOLoss,
    finalize_metrics,
)
from nemo_distill.algorithms.loss_functions import (
    GRPO_LOSS_TYPES,
    clipped_surrogate_per_token,
    grpo_loss,
    k3_kl_per_token,
    normalize_token_loss,
)
from nemo_distill.data.batch import TokenBatch
from nemo_distill.models.policy.interfaces import StepCounts
from nemo_distill.models.policy.logprobs import token_logprobs

F64 = torch.float64

# B = 3, T = 4, ragged: 3, 2 and 1 target tokens; position 0 is never a target.
MASK = [[0, 1, 1, 1], [0, 1, 1, 0], [0, 0, 0, 1]]
MAX_NEW_TOKENS = 4


def _mask() -> torch.Tensor:
    return torch.tensor(MASK, dtype=F64)


# ---------------------------------------------------------------------------------------------
# Plain-float reference implementation (independent of the library).
# ---------------------------------------------------------------------------------------------


def _ref_token_loss(lp, old, adv, *, eps_low=0.2, eps_high=0.2, dual_c=None, beta=0.0, ref=None):
    ratio = math.exp(lp - old)
    clipped_ratio = min(max(ratio, 1.0 - eps_low), 1.0 + eps_high)
    surrogate = min(ratio * adv, clipped_ratio * adv)
    if dual_c is not None and adv < 0:
        surrogate = max(surrogate, dual_c * adv)
    loss = -surrogate
    if beta:
        d = ref - lp
        loss += beta * (math.exp(d) - d - 1.0)
    return loss


def _ref_reduce(token_losses, mask, loss_type, *, max_new_tokens=MAX_NEW_TOKENS, num_micro_batches=1):
    """``token_losses`` / ``mask``: lists of lists of floats; the whole batch is the step."""
    rows = [[v for v, m in zip(row, mrow) if m] for row, mrow in zip(token_losses, mask)]
    rows = [row for row in rows if row]  # sequences with at least one target token
    total = sum(sum(row) for row in rows)
    tokens = sum(len(row) for row in rows)
    if loss_type == "grpo":
        return sum(sum(row) / len(row) for row in rows) / len(rows)
    if loss_type == "dr_grpo":
        return total / (len(rows) * max_new_tokens)
    if loss_type == "dapo":
        return total / tokens
    return total / tokens / num_micro_batches  # bnpo, one micro-batch's share


# ---------------------------------------------------------------------------------------------
# Normalisation, hand-computed.
# ---------------------------------------------------------------------------------------------

# Per-token losses; masked entries hold garbage that must not leak in.
TOKEN_LOSS = [[float("inf"), 1.0, 2.0, 3.0], [float("nan"), 4.0, 5.0, -float("inf")], [7.0, 9.0, 9.0, 6.0]]


@pytest.mark.parametrize(
    "loss_type, num_micro_batches, expected",
    [
        ("grpo", 1, (2.0 + 4.5 + 6.0) / 3),  # sequence means 6/3, 9/2, 6/1, then their mean
        ("dr_grpo", 1, 21.0 / (3 * 4)),  # token sum / (B * max_new_tokens)
        ("dapo", 1, 21.0 / 6),  # token sum / masked tokens
        ("bnpo", 1, 21.0 / 6),  # this micro-batch's token mean
        ("bnpo", 2, 21.0 / 6 / 2),  # ... divided by the number of micro-batches
    ],
)
def test_normalize_token_loss_hand_computed(loss_type, num_micro_batches, expected):
    loss = normalize_token_loss(
        torch.tensor(TOKEN_LOSS, dtype=F64), _mask(), loss_type=loss_type, num_sequences=3, num_tokens=6,
        max_new_tokens=MAX_NEW_TOKENS, num_micro_batches=num_micro_batches,
    )
    assert loss.dtype == F64
    assert loss.item() == pytest.approx(expected, rel=1e-15, abs=0)


def test_normalize_token_loss_rejects_bad_inputs():
    with pytest.raises(ValueError, match="loss_type"):
        normalize_token_loss(torch.zeros(3, 4), _mask(), loss_type="ppo", num_sequences=3, num_tokens=6)
    with pytest.raises(ValueError, match="max_new_tokens"):
        normalize_token_loss(torch.zeros(3, 4), _mask(), loss_type="dr_grpo", num_sequences=3, num_tokens=6)


# Log-probs chosen so that tokens land on every branch: inside the band, clipped above / below,
# and A of both signs.
LOGPROBS = [[0.0, -1.0, -0.5, -2.0], [0.0, 0.5, -1.2, 0.0], [0.0, 0.0, 0.0, -0.7]]
OLD = [[0.0, -1.1, -0.9, -1.5], [0.0, -0.1, -0.6, 0.0], [0.0, 0.0, 0.0, -0.75]]
ADV = [0.5, -1.5, 2.0]


@pytest.mark.parametrize("loss_type", GRPO_LOSS_TYPES)
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"clip_eps_low": 0.1, "clip_eps_high": 0.3},
        {"dual_clip_c": 1.5},
        {"beta": 0.05},
    ],
    ids=["symmetric", "clip_higher", "dual_clip", "beta"],
)
def test_grpo_loss_hand_computed(loss_type, options):
    ref = [[0.0, -0.8, -0.4, -2.5], [0.0, -0.2, -1.0, 0.0], [0.0, 0.0, 0.0, -0.1]]
    eps_low, eps_high = options.get("clip_eps_low", 0.2), options.get("clip_eps_high", 0.2)
    token_losses = [
        [
            _ref_token_loss(LOGPROBS[b][t], OLD[b][t], ADV[b], eps_low=eps_low, eps_high=eps_high,
                            dual_c=options.get("dual_clip_c"), beta=options.get("beta", 0.0), ref=ref[b][t])
            for t in range(4)
        ]
        for b in range(3)
    ]
    expected = _ref_reduce(token_losses, MASK, loss_type)
    loss, metrics = grpo_loss(
        torch.tensor(LOGPROBS, dtype=F64), torch.tensor(OLD, dtype=F64), torch.tensor(ADV, dtype=F64), _mask(),
        loss_type=loss_type, max_new_tokens=MAX_NEW_TOKENS, ref_logprobs=torch.tensor(ref, dtype=F64), **options,
    )
    assert loss.item() == pytest.approx(expected, rel=1e-13, abs=1e-15)
    k3 = [math.exp(ref[b][t] - LOGPROBS[b][t]) - (ref[b][t] - LOGPROBS[b][t]) - 1 for b in range(3) for t in range(4) if MASK[b][t]]
    assert metrics["kl"] == pytest.approx(sum(k3) / len(k3), rel=1e-13)
    approx_kl = [OLD[b][t] - LOGPROBS[b][t] for b in range(3) for t in range(4) if MASK[b][t]]
    assert metrics["approx_kl"] == pytest.approx(sum(approx_kl) / len(approx_kl), rel=1e-13)


def test_grpo_loss_clip_fraction_hand_counted():
    # Ratios on the 6 target tokens (eps 0.2): e^0.1 (in), e^0.4 A>0 (clipped), e^-0.5 A>0 (not clipped:
    # min is the unclipped r*A), e^0.6 A<0 (not clipped: r*A is the smaller; dual_clip_c=1.5 would cap
    # it), e^-0.6 A<0 (clipped: r < 0.8), e^0.05 (in): 2 of 6.
    _, metrics = grpo_loss(torch.tensor(LOGPROBS, dtype=F64), torch.tensor(OLD, dtype=F64), torch.tensor(ADV, dtype=F64), _mask(),
                           loss_type="grpo")
    assert metrics["clip_fraction"] == pytest.approx(2 / 6, rel=1e-15)
    assert "kl" not in metrics


# ---------------------------------------------------------------------------------------------
# Ratio 1 on the first minibatch.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss_type", GRPO_LOSS_TYPES)
def test_ratio_is_exactly_one_when_logprobs_equal_old(loss_type):
    torch.manual_seed(0)
    logprobs = torch.randn(3, 4, dtype=F64).requires_grad_()
    advantages = torch.tensor([0.7, -1.3, 0.4], dtype=F64)
    _, clipped, log_ratio = clipped_surrogate_per_token(logprobs, logprobs.detach().clone(), advantages, _mask())
    assert torch.equal(log_ratio, torch.zeros_like(log_ratio)) and not clipped.any()
    loss, metrics = grpo_loss(logprobs, logprobs.detach().clone(), advantages, _mask(), loss_type=loss_type,
                              max_new_tokens=MAX_NEW_TOKENS)
    counts = [sum(row) for row in MASK]  # 3, 2, 1 tokens
    adv = advantages.tolist()
    expected = {
        "grpo": -sum(adv) / 3,  # every sequence's token mean is -A_i
        "dr_grpo": -sum(a * n for a, n in zip(adv, counts)) / (3 * MAX_NEW_TOKENS),
        "dapo": -sum(a * n for a, n in zip(adv, counts)) / 6,
        "bnpo": -sum(a * n for a, n in zip(adv, counts)) / 6,
    }[loss_type]
    assert loss.item() == pytest.approx(expected, rel=1e-14)
    assert metrics["clip_fraction"] == 0.0 and metrics["approx_kl"] == 0.0
    loss.backward()
    # d/d logp of -r*A at r = 1 is -A times the token's weight in the normalisation.
    weight = {"grpo": [[0, 1 / 9, 1 / 9, 1 / 9], [0, 1 / 6, 1 / 6, 0], [0, 0, 0, 1 / 3]],
              "dr_grpo": [[m / 12 for m in row] for row in MASK]}.get(loss_type, [[m / 6 for m in row] for row in MASK])
    expected_grad = torch.tensor([[-adv[b] * weight[b][t] for t in range(4)] for b in range(3)], dtype=F64)
    torch.testing.assert_close(logprobs.grad, expected_grad, rtol=1e-14, atol=1e-16)


# ---------------------------------------------------------------------------------------------
# Clipping cuts the gradient where it should.
# ---------------------------------------------------------------------------------------------


def _token_grads(ratios, advantages, **options):
    """Gradient of the summed per-token loss wrt log-probs, for tokens with the given ratios (old = 0)."""
    logprobs = torch.log(torch.tensor([ratios], dtype=F64)).requires_grad_()
    loss, clipped, _ = clipped_surrogate_per_token(
        logprobs, torch.zeros_like(logprobs), torch.tensor([advantages], dtype=F64), torch.ones_like(logprobs), **options
    )
    loss.sum().backward()
    return loss.detach()[0].tolist(), logprobs.grad[0].tolist(), clipped[0].tolist()


def test_clipping_cuts_gradient_outside_the_band():
    ratios = [1.5, 1.1, 0.5, 0.5, 0.9, 1.5]
    advantages = [2.0, 2.0, 2.0, -1.0, -1.0, -1.0]
    losses, grads, clipped = _token_grads(ratios, advantages)
    # A > 0, r > 1 + eps: clipped, no gradient; loss = -(1.2 * A).
    assert clipped[0] and grads[0] == 0.0 and losses[0] == pytest.approx(-2.4, rel=1e-15)
    # Inside the band: gradient -A * r (d r / d logp = r).
    assert not clipped[1] and grads[1] == pytest.approx(-2.0 * 1.1, rel=1e-14)
    # A > 0, r < 1 - eps: min picks the unclipped r*A, so the gradient stays (pessimistic bound).
    assert not clipped[2] and grads[2] == pytest.approx(-2.0 * 0.5, rel=1e-14)
    # A < 0, r < 1 - eps: clipped, no gradient; loss = -(0.8 * A).
    assert clipped[3] and grads[3] == 0.0 and losses[3] == pytest.approx(0.8, rel=1e-15)
    # A < 0 inside the band, and A < 0 with r > 1 + eps (unclipped branch is the smaller): gradient -A * r.
    assert not clipped[4] and grads[4] == pytest.approx(0.9, rel=1e-14)
    assert not clipped[5] and grads[5] == pytest.approx(1.5, rel=1e-14) and losses[5] == pytest.approx(1.5, rel=1e-14)


def test_clip_higher_uses_separate_bounds():
    ratios = [1.25, 1.25, 0.85, 0.85]
    advantages = [1.0, 1.0, -1.0, -1.0]
    _, grads_sym, clipped_sym = _token_grads(ratios, advantages, clip_eps_low=0.2, clip_eps_high=0.2)
    assert clipped_sym == [True, True, False, False] and grads_sym[0] == 0.0 and grads_sym[2] != 0.0
    # clip_eps_high = 0.28 lets r = 1.25 through; clip_eps_low = 0.1 now clips r = 0.85 for A < 0.
    losses, grads, clipped = _token_grads(ratios, advantages, clip_eps_low=0.1, clip_eps_high=0.28)
    assert clipped == [False, False, True, True]
    assert grads[0] == pytest.approx(-1.25, rel=1e-14) and grads[2] == 0.0
    assert losses[0] == pytest.approx(-1.25, rel=1e-14) and losses[2] == pytest.approx(0.9, rel=1e-14)
    # The upper bound 1 + 0.28 still clips a larger ratio.
    losses, grads, clipped = _token_grads([1.4], [1.0], clip_eps_low=0.1, clip_eps_high=0.28)
    assert clipped == [True] and grads == [0.0] and losses[0] == pytest.approx(-1.28, rel=1e-14)


def test_dual_clip_caps_negative_advantage_loss():
    ratios = [5.0, 2.0, 5.0, 0.5]
    advantages = [-1.0, -1.0, 1.0, -1.0]
    losses, grads, clipped = _token_grads(ratios, advantages, dual_clip_c=3.0)
    # A < 0 and r*A < c*A: the loss is capped at -c*A = 3 and the gradient is 0.
    assert losses[0] == pytest.approx(3.0, rel=1e-15) and grads[0] == 0.0 and clipped[0]
    # Below the cap: unchanged (loss -r*A = 2, gradient -A*r = 2).
    assert losses[1] == pytest.approx(2.0, rel=1e-14) and grads[1] == pytest.approx(2.0, rel=1e-14) and not clipped[1]
    # A > 0 is untouched by the dual clip: ordinary clipping.
    assert losses[2] == pytest.approx(-1.2, rel=1e-15) and grads[2] == 0.0 and clipped[2]
    # A < 0 clipped from below stays the ordinary clipped value (-0.8 * A), not the cap.
    assert losses[3] == pytest.approx(0.8, rel=1e-15) and grads[3] == 0.0
    # Without the dual clip the first token's loss is -r*A = 5 with gradient 5.
    losses, grads, _ = _token_grads(ratios[:1], advantages[:1])
    assert losses[0] == pytest.approx(5.0, rel=1e-14) and grads[0] == pytest.approx(5.0, rel=1e-14)


@pytest.mark.parametrize("bad", [1.0, 0.5])
def test_dual_clip_must_exceed_one(bad):
    with pytest.raises(ValueError, match="dual_clip_c"):
        _token_grads([1.0], [1.0], dual_clip_c=bad)


# ---------------------------------------------------------------------------------------------
# k3 KL.
# ---------------------------------------------------------------------------------------------


def test_k3_is_nonnegative_and_zero_when_equal():
    torch.manual_seed(1)
    logprobs = -torch.rand(16, 32, dtype=F64) * 10
    ref = -torch.rand(16, 32, dtype=F64) * 10
    mask = (torch.rand(16, 32) > 0.3).to(F64)
    kl = k3_kl_per_token(logprobs, ref, mask)
    assert (kl >= 0).all() and (kl[mask == 0] == 0).all() and (kl[mask != 0] > 0).all()
    assert torch.equal(k3_kl_per_token(logprobs, logprobs.clone(), mask), torch.zeros_like(kl))
    b, t = 3, 5
    d = ref[b, t].item() - logprobs[b, t].item()
    assert kl[b, t].item() == pytest.approx(math.exp(d) - d - 1.0, rel=1e-14)


@pytest.mark.parametrize("loss_type", GRPO_LOSS_TYPES)
def test_beta_adds_beta_times_k3_per_token(loss_type):
    torch.manual_seed(2)
    logprobs, old, ref = (-torch.rand(3, 4, dtype=F64) for _ in range(3))
    advantages = torch.randn(3, dtype=F64)
    common = dict(loss_type=loss_type, max_new_tokens=MAX_NEW_TOKENS, ref_logprobs=ref)
    base, metrics = grpo_loss(logprobs, old, advantages, _mask(), beta=0.0, **common)
    with_kl, _ = grpo_loss(logprobs, old, advantages, _mask(), beta=0.25, **common)
    k3 = [[math.exp(ref[b, t].item() - logprobs[b, t].item()) - (ref[b, t].item() - logprobs[b, t].item()) - 1
           for t in range(4)] for b in range(3)]
    expected = _ref_reduce([[0.25 * v for v in row] for row in k3], MASK, loss_type)
    assert (with_kl - base).item() == pytest.approx(expected, rel=1e-12)
    # Policy == reference: the KL term and the metric are 0.
    same, same_metrics = grpo_loss(logprobs, old, advantages, _mask(), loss_type=loss_type, max_new_tokens=MAX_NEW_TOKENS,
                                   ref_logprobs=logprobs.clone(), beta=0.25)
    assert same.item() == base.item() and same_metrics["kl"] == 0.0


def test_beta_needs_reference():
    with pytest.raises(ValueError, match="ref_logprobs"):
        grpo_loss(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(3), _mask(), loss_type="grpo", beta=0.1)


# ---------------------------------------------------------------------------------------------
# Masked garbage never reaches the loss or its gradient.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss_type", GRPO_LOSS_TYPES)
def test_masked_garbage_gives_finite_loss_and_gradient(loss_type):
    torch.manual_seed(3)
    mask = _mask()
    garbage = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e308], dtype=F64)
    values = -torch.rand(3, 4, dtype=F64)
    picks = torch.randint(0, 4, (3, 4))
    logprobs = torch.where(mask != 0, values, garbage[picks]).requires_grad_()
    old = torch.where(mask != 0, values - 0.1, garbage[(picks + 1) % 4])
    ref = torch.where(mask != 0, values + 0.1, garbage[(picks + 2) % 4])
    loss, metrics = grpo_loss(logprobs, old, torch.tensor([1.0, -2.0, 0.5], dtype=F64), mask, loss_type=loss_type,
                              max_new_tokens=MAX_NEW_TOKENS, beta=0.1, ref_logprobs=ref, dual_clip_c=3.0)
    loss.backward()
    assert torch.isfinite(loss) and all(math.isfinite(v) for v in metrics.values())
    assert torch.isfinite(logprobs.grad).all() and (logprobs.grad[mask == 0] == 0).all()
    # And the value equals the loss with the garbage replaced by anything finite.
    clean, _ = grpo_loss(torch.where(mask != 0, values, 0.0), torch.where(mask != 0, values - 0.1, 0.0),
                         torch.tensor([1.0, -2.0, 0.5], dtype=F64), mask, loss_type=loss_type, max_new_tokens=MAX_NEW_TOKENS,
                         beta=0.1, ref_logprobs=torch.where(mask != 0, values + 0.1, 0.0), dual_clip_c=3.0)
    assert loss.item() == clean.item()


# ---------------------------------------------------------------------------------------------
# THE KEY TEST: the trainer's micro-batched, multi-rank path equals the whole-batch grpo_loss.
# ---------------------------------------------------------------------------------------------

VOCAB = 11


def _rollout_batch(seed: int, *, reference: bool, batch_size: int = 8, seq_len: int = 9, temperature: float = 1.0):
    """Random float64 logits and a right-padded batch with ragged prompts / responses and one dropped sample."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch_size, seq_len, VOCAB, dtype=F64, generator=generator) * 2
    input_ids = torch.randint(0, VOCAB, (batch_size, seq_len), generator=generator)
    attention_mask = torch.zeros(batch_size, seq_len, dtype=torch.long)
    loss_mask = torch.zeros(batch_size, seq_len)
    for row in range(batch_size):
        prompt = 1 + row % 3
        length = min(seq_len, prompt + 1 + (row * 5) % (seq_len - prompt))  # at least one response token
        attention_mask[row, :length] = 1
        loss_mask[row, prompt:length] = 1.0
        input_ids[row, length:] = 0  # padding
    sample_mask = torch.ones(batch_size)
    if batch_size > 5:
        sample_mask[5] = 0.0  # a dropped sample: no target token, not a sequence
    with torch.no_grad():
        current = token_logprobs(logits, input_ids, temperature=temperature)
    extras = {
        ADVANTAGES: torch.randn(batch_size, dtype=F64, generator=generator),
        OLD_LOGPROBS: current + 0.3 * torch.randn(batch_size, seq_len, dtype=F64, generator=generator),
    }
    if reference:
        extras[REFERENCE_LOGPROBS] = current + 0.5 * torch.randn(batch_size, seq_len, dtype=F64, generator=generator)
    batch = TokenBatch(input_ids=input_ids, attention_mask=attention_mask, loss_mask=loss_mask, sample_mask=sample_mask, extras=extras)
    return logits, batch


def _micro_batched(loss_fn: GRPOLoss, logits: torch.Tensor, batch: TokenBatch, *, dp: int, micro_batch_size: int):
    """What the trainer does: shard over dp ranks, split into micro-batches, trim padding, sum."""
    mask = batch.valid_target_tokens()
    counts = StepCounts(
        tokens=float(mask.sum()), sequences=float((mask.sum(dim=1) > 0).sum()),
        micro_batches=dp * -(-batch.size // dp // micro_batch_size),
    )
    total = torch.zeros((), dtype=F64)
    sums: dict[str, float] = {}
    per_rank = batch.size // dp
    for rank, shard in enumerate(batch.shard(dp)):
        for index, micro in enumerate(shard.micro_batches(micro_batch_size)):
            start = rank * per_rank + index * micro_batch_size
            micro = micro.trim_padding()
            rows = logits[start : start + micro.size, : micro.seq_len]
            loss, metrics = loss_fn(rows, micro, counts=counts)
            total = total + loss
            for name, value in metrics.items():
                sums[name] = sums.get(name, 0.0) + value
    return total, sums, counts


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize(
    "options",
    [{}, {"beta": 0.1, "clip_eps_low": 0.15, "clip_eps_high": 0.28, "dual_clip_c": 2.0, "temperature": 0.7}],
    ids=["plain", "kl_cliphigher_dualclip_temperature"],
)
@pytest.mark.parametrize("micro_batch_size", [1, 2, 3])
def test_micro_batched_path_equals_whole_batch(loss_type, options, micro_batch_size):
    options = dict(options)
    temperature = options.pop("temperature", 1.0)
    logits, batch = _rollout_batch(seed=10 + micro_batch_size, reference="beta" in options, temperature=temperature)
    mask = batch.valid_target_tokens()

    whole_logits = logits.clone().requires_grad_()
    reference, reference_metrics = grpo_loss(
        token_logprobs(whole_logits, batch.input_ids, temperature=temperature), batch.extras[OLD_LOGPROBS],
        batch.extras[ADVANTAGES], mask, loss_type=loss_type, max_new_tokens=7,
        ref_logprobs=batch.extras.get(REFERENCE_LOGPROBS), **options,
    )
    reference.backward()

    loss_fn = GRPOLoss(loss_type=loss_type, max_new_tokens=7, temperature=temperature, logprob_chunk_size=2, **options)
    split_logits = logits.clone().requires_grad_()
    total, sums, counts = _micro_batched(loss_fn, split_logits, batch, dp=2, micro_batch_size=micro_batch_size)
    total.backward()

    assert 0.1 < reference_metrics["clip_fraction"] < 0.9  # the data exercise clipping
    assert abs(total.item() - reference.item()) <= 1e-10
    torch.testing.assert_close(split_logits.grad, whole_logits.grad, rtol=0, atol=1e-10)
    assert split_logits.grad.abs().sum() > 0
    means = finalize_metrics(sums)
    assert sums["tokens"] == counts.tokens
    assert means["clip_fraction"] == pytest.approx(reference_metrics["clip_fraction"], abs=1e-12)
    assert means["approx_kl"] == pytest.approx(reference_metrics["approx_kl"], abs=1e-12)
    if "beta" in options:
        assert means["kl"] == pytest.approx(reference_metrics["kl"], abs=1e-12)


def test_bnpo_single_micro_batch_equals_whole_batch():
    logits, batch = _rollout_batch(seed=3, reference=False)
    mask = batch.valid_target_tokens()
    whole_logits = logits.clone().requires_grad_()
    reference, _ = grpo_loss(token_logprobs(whole_logits, batch.input_ids), batch.extras[OLD_LOGPROBS], batch.extras[ADVANTAGES],
                             mask, loss_type="bnpo")
    reference.backward()
    split_logits = logits.clone().requires_grad_()
    total, _, counts = _micro_batched(GRPOLoss(loss_type="bnpo"), split_logits, batch, dp=1, micro_batch_size=batch.size)
    total.backward()
    assert counts.micro_batches == 1
    assert abs(total.item() - reference.item()) <= 1e-12
    torch.testing.assert_close(split_logits.grad, whole_logits.grad, rtol=0, atol=1e-12)


def test_bnpo_weights_micro_batches_equally():
    # bnpo over several micro-batches: the mean of each micro-batch's token mean (not the global token mean).
    logits, batch = _rollout_batch(seed=4, reference=False)
    total, _, counts = _micro_batched(GRPOLoss(loss_type="bnpo"), logits, batch, dp=2, micro_batch_size=2)
    assert counts.micro_batches == 4
    expected = 0.0
    for start in range(0, batch.size, 2):
        micro = batch.select(slice(start, start + 2))
        if micro.valid_target_tokens().sum() == 0:
            continue
        part, _ = grpo_loss(token_logprobs(logits[start : start + 2], micro.input_ids), micro.extras[OLD_LOGPROBS],
                            micro.extras[ADVANTAGES], micro.valid_target_tokens(), loss_type="dapo")
        expected += part.item() / 4
    assert total.item() == pytest.approx(expected, abs=1e-12)


def test_first_minibatch_ratio_is_one_through_the_trainer_path():
    logits, batch = _rollout_batch(seed=5, reference=False)
    batch.extras[OLD_LOGPROBS] = token_logprobs(logits, batch.input_ids)
    _, sums, _ = _micro_batched(GRPOLoss(loss_type="grpo"), logits, batch, dp=2, micro_batch_size=2)
    means = finalize_metrics(sums)
    assert means["clip_fraction"] == 0.0 and means["approx_kl"] == 0.0 and means["ratio_mean"] == 1.0


def test_finalize_metrics_means():
    means = finalize_metrics({"tokens": 4.0, "clipped_tokens": 1.0, "approx_kl_sum": 0.2, "entropy_sum": 8.0, "ratio_sum": 4.4,
                              "kl_sum": 0.4})
    assert means == pytest.approx({"clip_fraction": 0.25, "approx_kl": 0.05, "entropy": 2.0, "ratio_mean": 1.1, "kl": 0.1})
    assert "kl" not in finalize_metrics({"tokens": 0.0})


# ---------------------------------------------------------------------------------------------
# Seed 002 token-level mode: A + terms - gate * student_tau * log p (detached).
# ---------------------------------------------------------------------------------------------


def test_token_level_advantages_match_brute_force():
    logits, batch = _rollout_batch(seed=6, reference=False, batch_size=4, seq_len=6)
    generator = torch.Generator().manual_seed(7)
    terms = -torch.rand(4, 6, dtype=F64, generator=generator) * batch.loss_mask.to(F64)
    gates = torch.tensor([1.0, 0.75, 0.0, 0.25], dtype=F64)
    student_tau = 0.3
    batch.extras[TOKEN_ADVANTAGE_TERMS] = terms
    batch.extras[KL_GATES] = gates
    counts = StepCounts(tokens=float(batch.valid_target_tokens().sum()),
                        sequences=float((batch.valid_target_tokens().sum(1) > 0).sum()), micro_batches=1)
    trained = logits.clone().requires_grad_()
    loss, _ = GRPOLoss(loss_type="dapo", token_student_tau=student_tau)(trained, batch, counts=counts)

    # Brute force: log p from an explicit log_softmax and a shift, then a plain-float loop.
    logp = torch.log_softmax(logits, dim=-1)
    mask = batch.valid_target_tokens().tolist()
    ids, old, adv = batch.input_ids.tolist(), batch.extras[OLD_LOGPROBS].tolist(), batch.extras[ADVANTAGES].tolist()
    token_adv = [[0.0] * 6 for _ in range(4)]
    token_losses = [[0.0] * 6 for _ in range(4)]
    for b in range(4):
        for t in range(1, 6):
            lp = logp[b, t - 1, ids[b][t]].item()
            token_adv[b][t] = adv[b] + terms[b, t].item() - gates[b].item() * student_tau * lp
            token_losses[b][t] = _ref_token_loss(lp, old[b][t], token_adv[b][t])
    assert loss.item() == pytest.approx(_ref_reduce(token_losses, mask, "dapo"), rel=1e-12)

    # The student term is detached: the gradient is that of the surrogate with constant per-token advantages.
    loss.backward()
    constant = logits.clone().requires_grad_()
    expected, _ = grpo_loss(token_logprobs(constant, batch.input_ids), batch.extras[OLD_LOGPROBS], torch.tensor(token_adv, dtype=F64),
                            batch.valid_target_tokens(), loss_type="dapo")
    expected.backward()
    torch.testing.assert_close(trained.grad, constant.grad, rtol=0, atol=1e-12)


def test_token_level_terms_cancel_when_teacher_equals_trainer():
    logits, batch = _rollout_batch(seed=8, reference=False, batch_size=4, seq_len=6)
    tau, gates = 0.5, torch.tensor([1.0, 0.5, 0.5, 0.0], dtype=F64)
    counts = StepCounts(tokens=float(batch.valid_target_tokens().sum()),
                        sequences=float((batch.valid_target_tokens().sum(1) > 0).sum()), micro_batches=1)
    plain, _ = GRPOLoss(loss_type="grpo")(logits, batch, counts=counts)
    lp = token_logprobs(logits, batch.input_ids)
    batch.extras[TOKEN_ADVANTAGE_TERMS] = gates[:, None] * tau * lp * batch.loss_mask.to(F64)
    batch.extras[KL_GATES] = gates
    mixed, _ = GRPOLoss(loss_type="grpo", token_student_tau=tau)(logits, batch, counts=counts)
    assert mixed.item() == pytest.approx(plain.item(), abs=1e-13)
