"""Losses against float64 brute-force references written independently here (plain-Python loops)."""

from __future__ import annotations

import math

import pytest
import torch

from nemo_distill.algorithms.loss_functions import (
    masked_token_mean,
    nll_loss,
    policy_gradient_loss,
    selected_token_logprobs,
    topk_kl_loss,
    topk_kl_per_token,
)

KL_CASES = [(kl_type, zero) for kl_type in ("forward", "reverse", "mixed") for zero in (False, True)]


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _reference_row_kl(student_row, teacher_values, teacher_ids, kl_type, weight, zero_outside_topk) -> float:
    """One row's KL by the written-out definition (NeMo-RL semantics), in Python floats."""
    student_row = [float(x) for x in student_row]
    teacher_values = [float(x) for x in teacher_values]
    teacher_ids = [int(i) for i in teacher_ids]
    teacher_lse = _logsumexp(teacher_values)
    log_q = [t - teacher_lse for t in teacher_values]
    if zero_outside_topk:
        full_lse = _logsumexp(student_row)
        log_p = [student_row[i] - full_lse for i in teacher_ids]
    else:
        gathered = [student_row[i] for i in teacher_ids]
        gathered_lse = _logsumexp(gathered)
        log_p = [g - gathered_lse for g in gathered]
    forward = sum(math.exp(lq) * (lq - lp) for lq, lp in zip(log_q, log_p))
    reverse = sum(math.exp(lp) * (lp - lq) for lq, lp in zip(log_q, log_p))
    if zero_outside_topk:
        for v in range(len(student_row)):
            if v not in teacher_ids:
                log_pv = student_row[v] - full_lse
                reverse += math.exp(log_pv) * (log_pv + 100.0)
    if kl_type == "forward":
        return forward
    if kl_type == "reverse":
        return reverse
    return weight * forward + (1 - weight) * reverse


def _reference_loss(student, teacher_values, teacher_ids, mask, kl_type, weight, zero, normalizer=None) -> float:
    total, count = 0.0, 0.0
    for b in range(student.shape[0]):
        for t in range(student.shape[1]):
            m = float(mask[b, t])
            if m:
                kl = _reference_row_kl(student[b, t].tolist(), teacher_values[b, t].tolist(), teacher_ids[b, t].tolist(), kl_type, weight, zero)
                total += m * kl
                count += m
    if normalizer is not None:
        return total / normalizer
    return total / count if count else 0.0


def _random_case(batch=2, seq=5, vocab=11, k=4, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    student = (torch.randn(batch, seq, vocab, generator=gen) * 2).to(dtype)
    teacher_values = (torch.randn(batch, seq, k, generator=gen) * 2).to(dtype)
    teacher_ids = torch.stack(
        [torch.stack([torch.randperm(vocab, generator=gen)[:k] for _ in range(seq)]) for _ in range(batch)]
    )
    mask = torch.rand(batch, seq, generator=gen) > 0.35
    mask[0, 0] = True
    return student, teacher_values, teacher_ids, mask


@pytest.mark.parametrize("kl_type,zero", KL_CASES)
def test_topk_kl_loss_matches_brute_force(kl_type, zero):
    student, teacher_values, teacher_ids, mask = _random_case(seed=1)
    loss = topk_kl_loss(student, teacher_values, teacher_ids, mask, kl_type=kl_type, mixed_kl_weight=0.3, zero_outside_topk=zero)
    expected = _reference_loss(student.double(), teacher_values.double(), teacher_ids, mask, kl_type, 0.3, zero)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("kl_type,zero", KL_CASES)
def test_topk_kl_per_token_matches_brute_force_on_every_row(kl_type, zero):
    student, teacher_values, teacher_ids, _ = _random_case(seed=2, batch=3, seq=4)
    per_token = topk_kl_per_token(student, teacher_values, teacher_ids, kl_type=kl_type, mixed_kl_weight=0.7, zero_outside_topk=zero)
    assert per_token.shape == (3, 4)
    for b in range(3):
        for t in range(4):
            expected = _reference_row_kl(student[b, t].tolist(), teacher_values[b, t].tolist(), teacher_ids[b, t].tolist(), kl_type, 0.7, zero)
            assert per_token[b, t].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_topk_kl_bf16_logits_are_upcast_before_the_softmax():
    student, teacher_values, teacher_ids, mask = _random_case(seed=3, dtype=torch.bfloat16)
    loss = topk_kl_loss(student, teacher_values, teacher_ids, mask, kl_type="reverse", zero_outside_topk=True)
    # bf16 -> float64 is exact, so the reference sees the same numbers; only the fp32 maths differs.
    expected = _reference_loss(student.double(), teacher_values.double(), teacher_ids, mask, "reverse", 0.5, True)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_topk_kl_reverse_tail_counts_once_on_a_hand_example():
    # V = 3, K = {0}; student uniform; teacher top-1 has q = 1.
    # forward = 1 * (0 - log(1/3)) = log 3; reverse in K = (1/3)(log(1/3) - 0);
    # tail = 2 * (1/3)(log(1/3) + 100).
    student = torch.zeros(1, 1, 3)
    teacher_values = torch.tensor([[[5.0]]])
    teacher_ids = torch.tensor([[[0]]])
    mask = torch.ones(1, 1)
    third = 1.0 / 3.0
    expected_reverse = third * math.log(third) + 2 * third * (math.log(third) + 100.0)
    reverse = topk_kl_loss(student, teacher_values, teacher_ids, mask, kl_type="reverse", zero_outside_topk=True)
    forward = topk_kl_loss(student, teacher_values, teacher_ids, mask, kl_type="forward", zero_outside_topk=True)
    assert reverse.item() == pytest.approx(expected_reverse, rel=1e-6)
    assert forward.item() == pytest.approx(math.log(3.0), rel=1e-6)
    # Renormalised over K = {0} both distributions are the point mass: KL 0.
    assert topk_kl_loss(student, teacher_values, teacher_ids, mask, kl_type="mixed").item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("zero", [False, True])
@pytest.mark.parametrize("kl_type", ["forward", "reverse"])
def test_topk_kl_with_k_equal_vocab_is_the_full_kl(kl_type, zero):
    gen = torch.Generator().manual_seed(4)
    batch, seq, vocab = 2, 3, 7
    student = torch.randn(batch, seq, vocab, generator=gen, dtype=torch.float64)
    teacher_full = torch.randn(batch, seq, vocab, generator=gen, dtype=torch.float64)
    ids = torch.stack([torch.stack([torch.randperm(vocab, generator=gen) for _ in range(seq)]) for _ in range(batch)])
    teacher_values = torch.gather(teacher_full, -1, ids)
    mask = torch.ones(batch, seq)
    log_p, log_q = torch.log_softmax(student, -1), torch.log_softmax(teacher_full, -1)
    if kl_type == "forward":
        full_kl = (log_q.exp() * (log_q - log_p)).sum(-1)
    else:
        full_kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    loss = topk_kl_loss(student, teacher_values, ids, mask, kl_type=kl_type, zero_outside_topk=zero)
    torch.testing.assert_close(loss, full_kl.mean(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kl_type,zero", KL_CASES)
def test_topk_kl_all_zero_mask_gives_zero_and_finite_gradients(kl_type, zero):
    student, teacher_values, teacher_ids, mask = _random_case(seed=5)
    student.requires_grad_(True)
    loss = topk_kl_loss(student, teacher_values, teacher_ids, torch.zeros_like(mask), kl_type=kl_type, zero_outside_topk=zero)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(student.grad, torch.zeros_like(student))


def test_topk_kl_masked_rows_may_hold_garbage():
    student, teacher_values, teacher_ids, mask = _random_case(seed=6)
    clean = topk_kl_loss(student, teacher_values, teacher_ids, mask, kl_type="forward")
    student[~mask] = float("nan")
    teacher_values[~mask] = float("inf")
    assert torch.isfinite(topk_kl_loss(student, teacher_values, teacher_ids, mask, kl_type="forward"))
    assert topk_kl_loss(student, teacher_values, teacher_ids, mask, kl_type="forward").item() == pytest.approx(clean.item())


@pytest.mark.parametrize("kl_type,zero", KL_CASES)
def test_topk_kl_normalizer_divides_the_masked_sum(kl_type, zero):
    student, teacher_values, teacher_ids, mask = _random_case(seed=7)
    loss = topk_kl_loss(student, teacher_values, teacher_ids, mask, kl_type=kl_type, zero_outside_topk=zero, normalizer=37)
    expected = _reference_loss(student.double(), teacher_values.double(), teacher_ids, mask, kl_type, 0.5, zero, normalizer=37)
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-7)
    tensor_normalizer = topk_kl_loss(
        student, teacher_values, teacher_ids, mask, kl_type=kl_type, zero_outside_topk=zero, normalizer=torch.tensor(37.0)
    )
    assert tensor_normalizer.item() == pytest.approx(loss.item(), rel=1e-6)


@pytest.mark.parametrize("kl_type,zero", KL_CASES)
def test_topk_kl_chunked_equals_unchunked_values_and_gradients(kl_type, zero):
    student, teacher_values, teacher_ids, mask = _random_case(seed=8, seq=7)
    results = []
    for chunk_size in (None, 1, 3, 7, 100):
        logits = student.clone().requires_grad_(True)
        loss = topk_kl_loss(logits, teacher_values, teacher_ids, mask, kl_type=kl_type, zero_outside_topk=zero, chunk_size=chunk_size)
        loss.backward()
        results.append((loss.detach(), logits.grad))
    for loss, grad in results[1:]:
        torch.testing.assert_close(loss, results[0][0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(grad, results[0][1], rtol=1e-5, atol=1e-7)
    assert results[0][1].abs().sum() > 0


@pytest.mark.parametrize("kl_type,zero", KL_CASES)
def test_topk_kl_gradcheck(kl_type, zero):
    student, teacher_values, teacher_ids, mask = _random_case(batch=2, seq=3, vocab=5, k=3, seed=9, dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]], dtype=torch.float64)
    student.requires_grad_(True)

    def loss_of(logits):
        return topk_kl_loss(logits, teacher_values, teacher_ids, mask, kl_type=kl_type, mixed_kl_weight=0.4, zero_outside_topk=zero, chunk_size=2)

    assert torch.autograd.gradcheck(loss_of, (student,), eps=1e-6, atol=1e-6, fast_mode=True)


def test_topk_kl_mixed_weight_endpoints_are_forward_and_reverse():
    student, teacher_values, teacher_ids, mask = _random_case(seed=10)
    for zero in (False, True):
        forward = topk_kl_loss(student, teacher_values, teacher_ids, mask, kl_type="forward", zero_outside_topk=zero)
        reverse = topk_kl_loss(student, teacher_values, teacher_ids, mask, kl_type="reverse", zero_outside_topk=zero)
        mixed_1 = topk_kl_loss(student, teacher_values, teacher_ids, mask, kl_type="mixed", mixed_kl_weight=1.0, zero_outside_topk=zero)
        mixed_0 = topk_kl_loss(student, teacher_values, teacher_ids, mask, kl_type="mixed", mixed_kl_weight=0.0, zero_outside_topk=zero)
        torch.testing.assert_close(mixed_1, forward)
        torch.testing.assert_close(mixed_0, reverse)


def test_topk_kl_zero_outside_topk_never_saves_a_full_vocab_tensor_for_backward():
    batch, seq, vocab, k = 2, 64, 50, 4
    student, teacher_values, teacher_ids, mask = _random_case(batch=batch, seq=seq, vocab=vocab, k=k, seed=11, dtype=torch.bfloat16)
    student.requires_grad_(True)
    saved_vocab_elements = []

    def pack(tensor):
        if tensor.dim() == 3 and tensor.shape[-1] == vocab and tensor.untyped_storage().data_ptr() != student.untyped_storage().data_ptr():
            saved_vocab_elements.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = topk_kl_loss(student, teacher_values, teacher_ids, mask, kl_type="mixed", zero_outside_topk=True, chunk_size=8)
    loss.backward()
    # Only the recompute-in-backward chunks may build [B, c, V]; nothing of that size is kept.
    assert sum(saved_vocab_elements) == 0
    assert torch.isfinite(student.grad.float()).all()


def test_topk_kl_rejects_bad_kl_type_and_weight():
    student, teacher_values, teacher_ids, mask = _random_case()
    with pytest.raises(ValueError, match=r"kl_type='bogus'.*forward.*reverse.*mixed"):
        topk_kl_loss(student, teacher_values, teacher_ids, mask, kl_type="bogus")
    with pytest.raises(ValueError, match=r"mixed_kl_weight.*1.5"):
        topk_kl_loss(student, teacher_values, teacher_ids, mask, kl_type="mixed", mixed_kl_weight=1.5)
    with pytest.raises(ValueError, match="normalizer"):
        topk_kl_loss(student, teacher_values, teacher_ids, mask, kl_type="forward", normalizer=0)
    with pytest.raises(ValueError, match="align"):
        topk_kl_loss(student[:, :-1], teacher_values, teacher_ids, mask, kl_type="forward")


# ---------------------------------------------------------------- temperature on the student side
ALL_KL_CASES = [(kl_type, zero) for kl_type in ("forward", "reverse", "mixed") for zero in (False, True)]


def _self_distillation_case(temperature: float, *, k: int, vocab: int = 9, seed: int = 12):
    """float64 student logits and the top-k of the SAME logits divided by ``temperature`` (what the
    teacher worker returns for a teacher identical to the student)."""
    gen = torch.Generator().manual_seed(seed)
    student = torch.randn(2, 5, vocab, generator=gen, dtype=torch.float64) * 3
    teacher_values, teacher_ids = torch.topk(student / temperature, k, dim=-1)
    mask = torch.ones(2, 5, dtype=torch.float64)
    mask[1, 3:] = 0
    return student, teacher_values, teacher_ids, mask


@pytest.mark.parametrize("temperature", [0.7, 1.6])
@pytest.mark.parametrize("kl_type,zero", ALL_KL_CASES)
def test_topk_kl_teacher_identical_to_student_is_zero_at_any_temperature(kl_type, zero, temperature):
    # With zero_outside_topk the student is not renormalised over K, so it equals the teacher only
    # when K covers the vocabulary; renormalised over K it equals it for any K.
    vocab = 9
    for k in ([vocab] if zero else [3, vocab]):
        student, teacher_values, teacher_ids, mask = _self_distillation_case(temperature, k=k, vocab=vocab)
        logits = student.clone().requires_grad_(True)
        loss = topk_kl_loss(logits, teacher_values, teacher_ids, mask, kl_type=kl_type, mixed_kl_weight=0.3,
                            zero_outside_topk=zero, chunk_size=2, student_temperature=temperature)
        loss.backward()
        assert loss.dtype == torch.float64
        assert abs(loss.item()) < 1e-6, (k, loss.item())
        assert logits.grad.abs().max().item() < 1e-6, (k, logits.grad.abs().max().item())
        # The bug this guards against: the student left at T = 1 against a teacher at T != 1.
        unscaled = topk_kl_loss(student, teacher_values, teacher_ids, mask, kl_type=kl_type, mixed_kl_weight=0.3, zero_outside_topk=zero)
        assert unscaled.item() > 1e-3


@pytest.mark.parametrize("kl_type,zero", ALL_KL_CASES)
def test_topk_kl_student_temperature_matches_brute_force_on_scaled_logits(kl_type, zero):
    student, teacher_values, teacher_ids, mask = _random_case(seed=13)
    temperature = 0.7
    loss = topk_kl_loss(student, teacher_values, teacher_ids, mask, kl_type=kl_type, mixed_kl_weight=0.3, zero_outside_topk=zero,
                        student_temperature=temperature, chunk_size=2)
    expected = _reference_loss(student.double() / temperature, teacher_values.double(), teacher_ids, mask, kl_type, 0.3, zero)
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    per_token = topk_kl_per_token(student, teacher_values, teacher_ids, kl_type=kl_type, zero_outside_topk=zero,
                                  student_temperature=temperature)
    scaled_first = topk_kl_per_token(student / temperature, teacher_values, teacher_ids, kl_type=kl_type, zero_outside_topk=zero)
    torch.testing.assert_close(per_token, scaled_first, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kl_type,zero", ALL_KL_CASES)
def test_topk_kl_gradcheck_with_student_temperature(kl_type, zero):
    student, teacher_values, teacher_ids, _ = _random_case(batch=2, seq=3, vocab=5, k=3, seed=14, dtype=torch.float64)
    mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    student.requires_grad_(True)

    def loss_of(logits):
        return topk_kl_loss(logits, teacher_values, teacher_ids, mask, kl_type=kl_type, mixed_kl_weight=0.4, zero_outside_topk=zero,
                            chunk_size=2, student_temperature=0.6)

    assert torch.autograd.gradcheck(loss_of, (student,), eps=1e-6, atol=1e-6, fast_mode=True)


def test_topk_kl_student_temperature_builds_no_full_scaled_copy():
    # Not zero_outside_topk: the division happens after the gather, so no [B, c, V] tensor other
    # than the input is ever made, in forward or for backward.
    batch, seq, vocab, k = 2, 16, 50, 4
    student, teacher_values, teacher_ids, mask = _random_case(batch=batch, seq=seq, vocab=vocab, k=k, seed=15)
    student.requires_grad_(True)
    full_vocab = []

    def pack(tensor):
        if tensor.dim() == 3 and tensor.shape[-1] == vocab and tensor.untyped_storage().data_ptr() != student.untyped_storage().data_ptr():
            full_vocab.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = topk_kl_loss(student, teacher_values, teacher_ids, mask, kl_type="mixed", student_temperature=0.7, chunk_size=4)
    loss.backward()
    assert full_vocab == []


@pytest.mark.parametrize("bad", [0.0, -0.5, float("nan")])
def test_topk_kl_rejects_non_positive_student_temperature(bad):
    student, teacher_values, teacher_ids, mask = _random_case()
    with pytest.raises(ValueError, match="student_temperature must be > 0"):
        topk_kl_loss(student, teacher_values, teacher_ids, mask, kl_type="forward", student_temperature=bad)


def test_masked_token_mean_weights_and_empty_mask():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    assert masked_token_mean(values, mask).item() == pytest.approx((1 + 3 + 6) / 3)
    assert masked_token_mean(values, mask.bool(), normalizer=5).item() == pytest.approx(10 / 5)
    assert masked_token_mean(values, torch.zeros_like(mask)).item() == 0.0
    with pytest.raises(ValueError, match="shape"):
        masked_token_mean(values, mask[:, :2])


def test_selected_token_logprobs_and_nll_loss_by_hand():
    # Row (0, 0): logits log([1, 2, 3]) -> p = [1/6, 2/6, 3/6]; row (0, 1): uniform -> 1/3 each.
    logits = torch.log(torch.tensor([[[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]]]))
    targets = torch.tensor([[2, 1]])
    logprobs = selected_token_logprobs(logits, targets, chunk_size=1)
    torch.testing.assert_close(logprobs, torch.tensor([[math.log(0.5), math.log(1 / 3)]]))
    mask = torch.tensor([[1.0, 1.0]])
    assert nll_loss(logits, targets, mask).item() == pytest.approx(-(math.log(0.5) + math.log(1 / 3)) / 2)
    assert nll_loss(logits, targets, torch.tensor([[0.0, 1.0]])).item() == pytest.approx(math.log(3.0))
    assert nll_loss(logits, targets, mask, normalizer=4).item() == pytest.approx(-(math.log(0.5) + math.log(1 / 3)) / 4)


def test_nll_loss_gradient_is_softmax_minus_onehot_and_chunking_is_invisible():
    gen = torch.Generator().manual_seed(12)
    logits = torch.randn(2, 5, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 9, (2, 5), generator=gen)
    mask = torch.ones(2, 5)
    nll_loss(logits, targets, mask, chunk_size=2).backward()
    expected = (torch.softmax(logits.detach(), -1) - torch.nn.functional.one_hot(targets, 9)) / 10
    torch.testing.assert_close(logits.grad, expected)
    unchunked = selected_token_logprobs(logits.detach(), targets, chunk_size=100)
    torch.testing.assert_close(selected_token_logprobs(logits.detach(), targets, chunk_size=1), unchunked)


def test_policy_gradient_loss_clip_active_and_inactive_by_hand():
    # Four tokens: (ratio, advantage) = (e^0.5, +1) clipped at 1.2; (e^0.5, -1) unclipped;
    # (e^-0.7, +1) unclipped; (e^-0.7, -1) clipped at 0.8. A fifth, masked token is ignored.
    old = torch.zeros(1, 5)
    new = torch.tensor([[0.5, 0.5, -0.7, -0.7, 3.0]], requires_grad=True)
    advantages = torch.tensor([[1.0, -1.0, 1.0, -1.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    loss, metrics = policy_gradient_loss(new, old, advantages, mask, clip_eps_low=0.2, clip_eps_high=0.2)
    e_half, e_neg = math.exp(0.5), math.exp(-0.7)
    per_token = [-1.2 * 1.0, -(e_half * -1.0), -(e_neg * 1.0), -(0.8 * -1.0)]
    assert loss.item() == pytest.approx(sum(per_token) / 4, rel=1e-6)
    assert metrics["clip_fraction"] == pytest.approx(0.5)
    assert metrics["approx_kl"] == pytest.approx(-(0.5 + 0.5 - 0.7 - 0.7) / 4, rel=1e-6)
    loss.backward()
    # d/dlp of -r*A = -r*A on unclipped tokens; clipped and masked tokens get no gradient.
    torch.testing.assert_close(new.grad, torch.tensor([[0.0, e_half / 4, -e_neg / 4, 0.0, 0.0]]))


def test_policy_gradient_loss_sequence_advantages_broadcast_and_asymmetric_clip():
    old = torch.zeros(2, 2)
    new = torch.full((2, 2), 0.25)  # ratio e^0.25 ~ 1.284
    mask = torch.ones(2, 2)
    loss, metrics = policy_gradient_loss(new, old, torch.tensor([2.0, 1.0]), mask, clip_eps_low=0.2, clip_eps_high=0.28, normalizer=8)
    ratio = math.exp(0.25)  # inside [0.8, 1.28]? no: 1.284 > 1.28, so it clips at 1.28 for A > 0
    assert ratio > 1.28
    assert loss.item() == pytest.approx(-(1.28 * 2 * 2 + 1.28 * 1 * 2) / 8, rel=1e-6)
    assert metrics["clip_fraction"] == pytest.approx(1.0)
    loss_wide, metrics_wide = policy_gradient_loss(new, old, torch.tensor([2.0, 1.0]), mask, clip_eps_high=0.3)
    assert loss_wide.item() == pytest.approx(-(ratio * 2 * 2 + ratio * 2) / 4, rel=1e-6)
    assert metrics_wide["clip_fraction"] == 0.0
    with pytest.raises(ValueError, match="advantages"):
        policy_gradient_loss(new, old, torch.ones(3), mask)
