"""Advantages: hand-computed examples, seed 002's gate table, and group invariants (hypothesis)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nemo_distill.algorithms.advantages import (
    grpo_advantages,
    kl_gates,
    sequence_level_advantages,
    token_level_kl_advantages,
)


def test_sequence_level_advantages_hand_example_two_groups_of_two():
    task = torch.tensor([1.0, 0.0, 0.0, 0.0])
    teacher = torch.tensor([-2.0, -4.0, -1.0, -3.0])
    student = torch.tensor([-3.0, -3.0, -2.0, -2.0])
    # r = 1*task + (0.5*teacher - 0.25*student):
    #   [1 - 1 + 0.75, 0 - 2 + 0.75, -0.5 + 0.5, -1.5 + 0.5] = [0.75, -1.25, 0.0, -1.0]
    # group means 0.5*(0.75 - 1.25) = -0.25 and -0.5 -> A = [1.0, -1.0, 0.5, -0.5]
    advantages = sequence_level_advantages(task, teacher, student, group_size=2, adv_tau=1.0, teacher_tau=0.5, student_tau=0.25)
    torch.testing.assert_close(advantages, torch.tensor([1.0, -1.0, 0.5, -0.5]))


def test_sequence_level_advantages_kl_only_incorrect_gates_by_group_mean():
    # Group 0: one of two correct -> gate 0.5; group 1: both incorrect -> gate 1.
    task = torch.tensor([1.0, 0.0, 0.0, 0.0])
    teacher = torch.tensor([-2.0, -4.0, -1.0, -3.0])
    student = torch.zeros(4)
    # r = task + gate*teacher = [1 - 1, 0 - 2, -1, -3] = [0, -2, -1, -3]; A = [1, -1, 1, -1]
    advantages = sequence_level_advantages(
        task, teacher, student, group_size=2, adv_tau=1.0, teacher_tau=1.0, student_tau=1.0, kl_only_incorrect=True
    )
    torch.testing.assert_close(advantages, torch.tensor([1.0, -1.0, 1.0, -1.0]))


@pytest.mark.parametrize(
    "group_rewards,gate",
    [([0.0, 0.0, 0.0, 0.0], 1.0), ([1.0, 1.0, 1.0, 1.0], 0.0), ([0.0, 1.0, 0.0, 0.0], 0.75)],
    ids=["all_incorrect", "all_correct", "one_of_four_correct"],
)
def test_kl_gates_seed_002_table(group_rewards, gate):
    gates = kl_gates(torch.tensor(group_rewards + [1.0, 1.0, 0.0, 1.0]), group_size=4)
    torch.testing.assert_close(gates, torch.tensor([gate] * 4 + [0.25] * 4))


def test_all_correct_group_with_gate_has_no_kl_signal():
    task = torch.ones(4)
    teacher = torch.tensor([-1.0, -5.0, -2.0, -9.0])
    advantages = sequence_level_advantages(
        task, teacher, teacher * 2, group_size=4, adv_tau=1.0, teacher_tau=1.0, student_tau=1.0, kl_only_incorrect=True
    )
    torch.testing.assert_close(advantages, torch.zeros(4))


def test_tau_zero_edge_cases():
    task = torch.tensor([1.0, 0.0, 1.0, 1.0])
    teacher = torch.tensor([-2.0, -4.0, -1.0, -3.0])
    student = torch.tensor([-1.0, -7.0, -2.0, -2.0])
    pure_rl = sequence_level_advantages(task, teacher, student, group_size=2, adv_tau=1.0, teacher_tau=0.0, student_tau=0.0)
    torch.testing.assert_close(pure_rl, torch.tensor([0.5, -0.5, 0.0, 0.0]))
    pure_distill = sequence_level_advantages(task, teacher, student, group_size=2, adv_tau=0.0, teacher_tau=1.0, student_tau=1.0)
    # teacher - student = [-1, 3, 1, -1] -> centred [-2, 2, 1, -1]
    torch.testing.assert_close(pure_distill, torch.tensor([-2.0, 2.0, 1.0, -1.0]))
    everything_off = sequence_level_advantages(task, teacher, student, group_size=2, adv_tau=0.0, teacher_tau=0.0, student_tau=0.0)
    torch.testing.assert_close(everything_off, torch.zeros(4))


def test_group_size_one_gives_zero_advantages():
    values = torch.tensor([3.0, -1.0, 2.0])
    torch.testing.assert_close(
        sequence_level_advantages(values, values, values, group_size=1, adv_tau=1.0, teacher_tau=1.0, student_tau=0.5), torch.zeros(3)
    )
    torch.testing.assert_close(grpo_advantages(values, group_size=1), torch.zeros(3))


finite = st.floats(min_value=-50.0, max_value=50.0, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    group_size=st.integers(min_value=1, max_value=5),
    num_groups=st.integers(min_value=1, max_value=4),
    taus=st.tuples(finite, finite, finite),
    gate=st.booleans(),
    data=st.data(),
)
def test_sequence_level_advantages_sum_to_zero_per_group(group_size, num_groups, taus, gate, data):
    n = group_size * num_groups
    task = torch.tensor(data.draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=n, max_size=n)), dtype=torch.float64)
    teacher = torch.tensor(data.draw(st.lists(finite, min_size=n, max_size=n)), dtype=torch.float64)
    student = torch.tensor(data.draw(st.lists(finite, min_size=n, max_size=n)), dtype=torch.float64)
    adv_tau, teacher_tau, student_tau = taus
    advantages = sequence_level_advantages(
        task, teacher, student, group_size=group_size, adv_tau=adv_tau, teacher_tau=teacher_tau, student_tau=student_tau, kl_only_incorrect=gate
    )
    assert advantages.shape == (n,)
    group_sums = advantages.reshape(num_groups, group_size).sum(dim=1)
    torch.testing.assert_close(group_sums, torch.zeros(num_groups, dtype=torch.float64), atol=1e-9, rtol=0)
    # Same thing written out per sample: A_i = r_i - mean(r of i's group).
    for i in range(n):
        members = range((i // group_size) * group_size, (i // group_size + 1) * group_size)
        gate_i = 1.0 - sum(float(task[j]) for j in members) / group_size if gate else 1.0

        def reward(j):
            return adv_tau * float(task[j]) + gate_i * (teacher_tau * float(teacher[j]) - student_tau * float(student[j]))

        expected = reward(i) - sum(reward(j) for j in members) / group_size
        assert float(advantages[i]) == pytest.approx(expected, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    group_size=st.integers(min_value=2, max_value=6),
    num_groups=st.integers(min_value=1, max_value=3),
    normalize=st.booleans(),
    data=st.data(),
)
def test_grpo_advantages_sum_to_zero_and_have_unit_std(group_size, num_groups, normalize, data):
    n = group_size * num_groups
    rewards = torch.tensor(data.draw(st.lists(finite, min_size=n, max_size=n)), dtype=torch.float64)
    advantages = grpo_advantages(rewards, group_size=group_size, normalize_std=normalize, eps=0.0)
    grouped = advantages.reshape(num_groups, group_size)
    torch.testing.assert_close(grouped.sum(dim=1), torch.zeros(num_groups, dtype=torch.float64), atol=1e-9, rtol=0)
    for g in range(num_groups):
        rewards_g = rewards.reshape(num_groups, group_size)[g]
        if normalize and rewards_g.std() > 1e-6:
            assert float(grouped[g].std()) == pytest.approx(1.0, rel=1e-9)
        elif not normalize:
            torch.testing.assert_close(grouped[g], rewards_g - rewards_g.mean())


def test_grpo_advantages_hand_example():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0])
    # group [1, 0, 0, 0]: mean 0.25, unbiased std sqrt(0.25) = 0.5 -> [1.5, -0.5, -0.5, -0.5]
    gr = grpo_advantages(rewards[:4], group_size=4, eps=0.0)
    torch.testing.assert_close(gr, torch.tensor([1.5, -0.5, -0.5, -0.5]))
    dr = grpo_advantages(rewards[:4], group_size=4, normalize_std=False)
    torch.testing.assert_close(dr, torch.tensor([0.75, -0.25, -0.25, -0.25]))
    with_eps = grpo_advantages(rewards[:4], group_size=4, eps=0.5)
    torch.testing.assert_close(with_eps, torch.tensor([0.75, -0.25, -0.25, -0.25]))
    # A constant group stays exactly 0, even with eps = 0 (no 0/0).
    constant = grpo_advantages(rewards[4:], group_size=2, eps=0.0)
    assert torch.equal(constant, torch.zeros(2))


def test_token_level_kl_advantages_hand_example():
    task = torch.tensor([1.0, 0.0, 0.0, 0.0])
    teacher = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0], [-0.5, -0.5, -0.5], [-2.0, -2.0, -2.0]])
    student = torch.tensor([[-2.0, -2.0, -2.0], [-1.0, -3.0, -1.0], [-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    advantages = token_level_kl_advantages(
        task, teacher, student, mask, group_size=2, adv_tau=2.0, teacher_tau=1.0, student_tau=0.5
    )
    # base: 2*(task - group mean) = [1, -1, 0, 0]; kl_t = teacher_t - 0.5*student_t.
    expected = torch.tensor(
        [
            [1 + (-1 + 1), 1 + (-2 + 1), 0.0],
            [-1 + (-1 + 0.5), -1 + (-1 + 1.5), -1 + (-1 + 0.5)],
            [0 + (-0.5 + 0.5), 0.0, 0.0],
            [0 + (-2 + 0.5)] * 3,
        ]
    )
    torch.testing.assert_close(advantages, expected)
    gated = token_level_kl_advantages(
        task, teacher, student, mask, group_size=2, adv_tau=2.0, teacher_tau=1.0, student_tau=0.5, kl_only_incorrect=True
    )
    # Group 0 gate 0.5, group 1 gate 1.
    expected_gated = expected.clone()
    expected_gated[:2] = (torch.tensor([[1.0], [-1.0]]) + 0.5 * (teacher[:2] - 0.5 * student[:2])) * mask[:2]
    torch.testing.assert_close(gated, expected_gated)


def test_token_level_kl_part_does_not_cancel_across_the_group():
    task = torch.zeros(2)
    teacher = torch.full((2, 3), -1.0)
    advantages = token_level_kl_advantages(
        task, teacher, torch.zeros(2, 3), torch.ones(2, 3), group_size=2, adv_tau=1.0, teacher_tau=1.0, student_tau=1.0
    )
    assert math.isclose(float(advantages.sum()), -6.0)


def test_advantages_errors_name_the_problem():
    four = torch.zeros(4)
    with pytest.raises(ValueError, match="group_size=3"):
        sequence_level_advantages(four, four, four, group_size=3, adv_tau=1.0, teacher_tau=1.0, student_tau=1.0)
    with pytest.raises(ValueError, match="group_size must be >= 1, got 0"):
        sequence_level_advantages(four, four, four, group_size=0, adv_tau=1.0, teacher_tau=1.0, student_tau=1.0)
    with pytest.raises(ValueError, match="same length"):
        sequence_level_advantages(four, torch.zeros(2), four, group_size=2, adv_tau=1.0, teacher_tau=1.0, student_tau=1.0)
    with pytest.raises(ValueError, match="1-D"):
        sequence_level_advantages(torch.zeros(2, 2), four, four, group_size=2, adv_tau=1.0, teacher_tau=1.0, student_tau=1.0)
    with pytest.raises(ValueError, match="group_size=3"):
        grpo_advantages(four, group_size=3)
    with pytest.raises(ValueError, match="group_size=3"):
        kl_gates(four, group_size=3)
    with pytest.raises(ValueError, match="student_token_logprobs"):
        token_level_kl_advantages(
            four, torch.zeros(4, 3), torch.zeros(4, 2), torch.ones(4, 3), group_size=2, adv_tau=1.0, teacher_tau=1.0, student_tau=1.0
        )


def test_sequence_level_advantages_valid_samples_hand_example():
    # Group (r = 1, 0, 1, 0) with all KL sums 0; sample 2 dropped: mean of kept = (1 + 0 + 0) / 3.
    task = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    zeros = torch.zeros(4, dtype=torch.float64)
    valid = torch.tensor([1.0, 1.0, 0.0, 1.0])
    advantages = sequence_level_advantages(task, zeros, zeros, group_size=4, adv_tau=1.0, teacher_tau=1.0, student_tau=1.0, valid=valid)
    assert advantages.tolist() == pytest.approx([2 / 3, -1 / 3, 0.0, -1 / 3], abs=1e-12)
    with pytest.raises(ValueError, match="same length"):
        sequence_level_advantages(task, zeros, zeros, group_size=4, adv_tau=1.0, teacher_tau=1.0, student_tau=1.0, valid=valid[:3])
