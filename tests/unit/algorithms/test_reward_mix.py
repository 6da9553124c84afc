"""Seed 002's reward mix: gates, advantages in both baseline modes, metrics, and the teacher scoring glue.

Expected values come from plain-float Python loops, not from the library's advantage functions.
"""

from __future__ import annotations

import pytest
import torch

from nemo_distill.algorithms.grpo_config import ContextDistillationRewardConfig
from nemo_distill.algorithms.reward_mix import mixed_advantages, score_with_teacher, teacher_prompt_ids
from nemo_distill.algorithms.rollouts import RolloutBatch
from nemo_distill.data.collate import build_token_batch
from nemo_distill.data.processors import ProcessedPrompt
from nemo_distill.data.records import ProblemRecord
from nemo_distill.models.generation.interfaces import GeneratedSample

F64 = torch.float64
GROUP = 4


def _inputs(seed: int, num_groups: int = 3, seq_len: int = 6):
    """Rewards of 0/1, and teacher / student log-probs that are 0 off the response mask (as produced upstream)."""
    generator = torch.Generator().manual_seed(seed)
    n = num_groups * GROUP
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0][:n])
    mask = torch.zeros(n, seq_len)
    for row in range(n):
        start = 1 + row % 2
        mask[row, start : start + 1 + row % (seq_len - start)] = 1.0
    teacher = -torch.rand(n, seq_len, dtype=F64, generator=generator) * 3 * mask
    student = -torch.rand(n, seq_len, dtype=F64, generator=generator) * 3 * mask
    return rewards, teacher, student, mask


def _gates(rewards: list[float], kl_only_incorrect: bool) -> list[float]:
    if not kl_only_incorrect:
        return [1.0] * len(rewards)
    out = []
    for g in range(0, len(rewards), GROUP):
        mean = sum(rewards[g : g + GROUP]) / GROUP
        out += [1.0 - mean] * GROUP
    return out


def _centred(values: list[float]) -> list[float]:
    out = []
    for g in range(0, len(values), GROUP):
        group = values[g : g + GROUP]
        mean = sum(group) / GROUP
        out += [v - mean for v in group]
    return out


def _cfg(**kwargs) -> ContextDistillationRewardConfig:
    return ContextDistillationRewardConfig(**kwargs)


def test_gate_table_kl_only_incorrect():
    rewards = torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0, 1.0, 0.0, 0.0])
    _, teacher, student, mask = _inputs(0)
    result = mixed_advantages(_cfg(teacher_tau=1.0, kl_only_incorrect=True), rewards, teacher, student, mask, group_size=GROUP)
    # All wrong -> 1, all right -> 0, 1 of 4 right -> 0.75.
    assert result.gates.tolist() == [1.0] * 4 + [0.0] * 4 + [0.75] * 4
    assert result.metrics["kl_gate_mean"] == pytest.approx((4 + 0 + 3) / 12)
    ungated = mixed_advantages(_cfg(teacher_tau=1.0), rewards, teacher, student, mask, group_size=GROUP)
    assert ungated.gates.tolist() == [1.0] * 12


@pytest.mark.parametrize("kl_only_incorrect", [False, True])
@pytest.mark.parametrize(
    "taus", [(1.0, 0.5, 0.3), (0.0, 0.5, 0.3), (1.0, 0.0, 0.3), (1.0, 0.5, 0.0), (2.0, 0.0, 0.0)],
    ids=["all", "adv_tau_0", "teacher_tau_0", "student_tau_0", "task_only"],
)
def test_full_baseline_matches_brute_force_and_sums_to_zero(taus, kl_only_incorrect):
    adv_tau, teacher_tau, student_tau = taus
    rewards, teacher, student, mask = _inputs(1)
    cfg = _cfg(adv_tau=adv_tau, teacher_tau=teacher_tau, student_tau=student_tau, kl_only_incorrect=kl_only_incorrect)
    result = mixed_advantages(cfg, rewards, teacher, student, mask, group_size=GROUP)
    assert result.token_terms is None
    gates = _gates(rewards.tolist(), kl_only_incorrect)
    teacher_sums = [sum(row) for row in (teacher * mask).tolist()]
    student_sums = [sum(row) for row in (student * mask).tolist()]
    full = [adv_tau * r + g * (teacher_tau * t - student_tau * s)
            for r, g, t, s in zip(rewards.tolist(), gates, teacher_sums, student_sums)]
    assert result.advantages.tolist() == pytest.approx(_centred(full), rel=1e-5, abs=1e-5)
    group_sums = result.advantages.reshape(-1, GROUP).sum(dim=1)
    assert group_sums.abs().max().item() < 1e-5


@pytest.mark.parametrize("kl_only_incorrect", [False, True])
@pytest.mark.parametrize(
    "taus", [(1.0, 0.5, 0.3), (0.0, 0.5, 0.3), (1.0, 0.0, 0.3), (1.0, 0.5, 0.0)],
    ids=["all", "adv_tau_0", "teacher_tau_0", "student_tau_0"],
)
def test_token_level_mode(taus, kl_only_incorrect):
    adv_tau, teacher_tau, student_tau = taus
    rewards, teacher, student, mask = _inputs(2)
    cfg = _cfg(adv_tau=adv_tau, teacher_tau=teacher_tau, student_tau=student_tau, use_full_reward_baseline=False,
               kl_only_incorrect=kl_only_incorrect)
    result = mixed_advantages(cfg, rewards, teacher, student, mask, group_size=GROUP)
    gates = _gates(rewards.tolist(), kl_only_incorrect)
    # Only the task reward is centred.
    assert result.advantages.tolist() == pytest.approx([adv_tau * c for c in _centred(rewards.tolist())], abs=1e-7)
    expected_terms = [[g * teacher_tau * t * m for t, m in zip(t_row, m_row)]
                      for g, t_row, m_row in zip(gates, teacher.tolist(), mask.tolist())]
    assert result.token_terms is not None and result.token_terms.shape == mask.shape
    assert result.token_terms.tolist() == [pytest.approx(row, abs=1e-7) for row in expected_terms]
    if teacher_tau == 0.0:
        assert (result.token_terms == 0).all()
    # combined_advantage: mean over masked tokens of |A + gate*teacher_tau*t - gate*student_tau*s|.
    total, tokens = 0.0, 0.0
    for row in range(mask.shape[0]):
        a, g = adv_tau * _centred(rewards.tolist())[row], gates[row]
        for col in range(mask.shape[1]):
            if mask[row, col]:
                total += abs(a + g * teacher_tau * teacher[row, col].item() - g * student_tau * student[row, col].item())
                tokens += 1
    assert result.metrics["combined_advantage"] == pytest.approx(total / tokens, rel=1e-5)


@pytest.mark.parametrize("use_full_reward_baseline", [True, False])
def test_unscored_samples_stay_out_of_the_group_baseline(use_full_reward_baseline):
    """A sample the teacher could not score (valid 0: its mask row is 0, so its sums are an empty 0) must
    not pull its group's mean toward 0; it gets advantage 0 and stays out of the sum means."""
    rewards, teacher, student, mask = _inputs(5)
    valid = torch.ones(12)
    valid[[1, 4, 5, 6, 7]] = 0.0  # one dropped in group 0, all of group 1 dropped, none in group 2
    mask = mask * valid[:, None]
    teacher, student = teacher * mask, student * mask
    cfg = _cfg(adv_tau=1.0, teacher_tau=0.5, student_tau=0.3, use_full_reward_baseline=use_full_reward_baseline)
    result = mixed_advantages(cfg, rewards, teacher, student, mask, group_size=GROUP, valid=valid)
    teacher_sums = [sum(row) for row in teacher.tolist()]
    student_sums = [sum(row) for row in student.tolist()]
    if use_full_reward_baseline:
        per_sample = [r + 0.5 * t - 0.3 * s for r, t, s in zip(rewards.tolist(), teacher_sums, student_sums)]
    else:
        per_sample = rewards.tolist()
    expected = []
    for g in range(0, 12, GROUP):
        kept = [per_sample[i] for i in range(g, g + GROUP) if valid[i]]
        mean = sum(kept) / len(kept) if kept else 0.0
        expected += [per_sample[i] - mean if valid[i] else 0.0 for i in range(g, g + GROUP)]
    assert result.advantages.tolist() == pytest.approx(expected, abs=1e-6)
    assert result.advantages[4:8].abs().max() == 0.0  # a group with nothing kept is all 0
    assert result.advantages[:4].sum().abs() < 1e-6  # the kept samples of a group still sum to 0
    kept_rows = [i for i in range(12) if valid[i]]
    assert result.metrics["teacher_logprob_sum_mean"] == pytest.approx(sum(teacher_sums[i] for i in kept_rows) / len(kept_rows), rel=1e-6)
    assert result.metrics["student_logprob_sum_mean"] == pytest.approx(sum(student_sums[i] for i in kept_rows) / len(kept_rows), rel=1e-6)
    # Without valid (the old behaviour) group 0's mean would include the dropped sample's bare task reward.
    unmasked = mixed_advantages(cfg, rewards, teacher, student, mask, group_size=GROUP)
    assert unmasked.advantages[:4].tolist() != pytest.approx(expected[:4], abs=1e-6)


def test_teacher_kl_metric_is_masked_token_mean():
    rewards, teacher, student, mask = _inputs(3)
    result = mixed_advantages(_cfg(teacher_tau=1.0), rewards, teacher, student, mask, group_size=GROUP)
    diffs = [s - t for s_row, t_row, m_row in zip(student.tolist(), teacher.tolist(), mask.tolist())
             for s, t, m in zip(s_row, t_row, m_row) if m]
    assert result.metrics["teacher_kl"] == pytest.approx(sum(diffs) / len(diffs), rel=1e-6)
    assert result.metrics["teacher_logprob_sum_mean"] == pytest.approx(sum(sum(r) for r in (teacher * mask).tolist()) / 12, rel=1e-6)
    assert result.metrics["student_logprob_sum_mean"] == pytest.approx(sum(sum(r) for r in (student * mask).tolist()) / 12, rel=1e-6)


@pytest.mark.parametrize("kl_only_incorrect", [False, True])
def test_kl_terms_cancel_when_teacher_equals_student(kl_only_incorrect):
    rewards, _, student, mask = _inputs(4)
    pure_rl = mixed_advantages(_cfg(adv_tau=0.7), rewards, student, student, mask, group_size=GROUP)
    expected = [0.7 * c for c in _centred(rewards.tolist())]
    for full in (True, False):
        cfg = _cfg(adv_tau=0.7, teacher_tau=0.4, student_tau=0.4, use_full_reward_baseline=full, kl_only_incorrect=kl_only_incorrect)
        result = mixed_advantages(cfg, rewards, student.clone(), student, mask, group_size=GROUP)
        assert result.metrics["teacher_kl"] == 0.0
        assert result.advantages.tolist() == pytest.approx(expected, abs=1e-7)
        if full:
            assert torch.equal(result.advantages, pure_rl.advantages)  # exactly: tau*S - tau*S == 0
        else:
            # The loss adds token_terms and subtracts gate*student_tau*log p: with log p = the teacher's, 0.
            gates = result.gates[:, None]
            leftover = result.token_terms - gates * 0.4 * student * mask
            assert torch.equal(leftover, torch.zeros_like(leftover))
            assert result.metrics["combined_advantage"] == pytest.approx(
                sum(abs(expected[r]) * mask[r].sum().item() for r in range(12)) / mask.sum().item(), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# score_with_teacher: the teacher's response columns land on the student's.
# ---------------------------------------------------------------------------------------------


def _ids(text: str) -> list[int]:
    return [1 + ord(c) % 50 for c in text]


class FakeProcessor:
    """One token per character; no chat template."""

    def process_user_message(self, record, user_message):
        ids = _ids(user_message)
        return ProcessedPrompt(record, user_message, user_message, ids, False)


class FakeScorer:
    """Position- and token-dependent 'log-probs': ``-(row + 0.01 * column + 0.0001 * token)``."""

    def __init__(self):
        self.batches = []

    def get_logprobs(self, batch, *, targets_only=False):
        self.batches.append(batch)
        rows = torch.arange(batch.size, dtype=torch.float32)[:, None]
        columns = torch.arange(batch.seq_len, dtype=torch.float32)[None, :]
        logprobs = -(rows + 0.01 * columns + 0.0001 * batch.input_ids.float())
        # targets_only promises only the loss_mask tokens: the strictest reading zeroes the rest, so a
        # caller that read a prompt column would see 0 and fail the expected values.
        return logprobs * batch.loss_mask if targets_only else logprobs


CONTEXT = "CTX: "
MESSAGES = ["abc", "defghij"]  # student prompts of 3 and 7 tokens; teacher prompts of 8 and 12
RESPONSES = [[5, 6, 7], [8], [9, 10, 11, 12], [13, 14]]


def _rollouts() -> RolloutBatch:
    prompts = [FakeProcessor().process_user_message(ProblemRecord(problem=m, answer="1", record_id=f"t-{i}"), m)
               for i, m in enumerate(MESSAGES) for _ in range(2)]
    samples = [GeneratedSample(prompt_index=i // 2, response_token_ids=r, response_logprobs=[-0.5] * len(r), text="x",
                               finish_reason="stop") for i, r in enumerate(RESPONSES)]
    token_batch, prompt_lengths = build_token_batch([p.prompt_token_ids for p in prompts], RESPONSES, pad_token_id=0)
    return RolloutBatch(prompts, samples, [1.0, 0.0, 0.0, 1.0], token_batch, prompt_lengths, {})


def test_teacher_prompt_ids_prepend_context():
    rollouts = _rollouts()
    assert teacher_prompt_ids(FakeProcessor(), rollouts, CONTEXT) == [_ids(CONTEXT + m) for m in MESSAGES for _ in range(2)]


def test_score_with_teacher_aligns_response_columns():
    rollouts = _rollouts()
    scorer = FakeScorer()
    scores = score_with_teacher(scorer, FakeProcessor(), rollouts, CONTEXT, pad_token_id=0, max_total_length=64)
    assert scores.scored.tolist() == [1.0] * 4
    (teacher_batch,) = scorer.batches
    student = rollouts.token_batch
    assert scores.token_logprobs.shape == student.input_ids.shape
    expected = torch.zeros(student.input_ids.shape)
    for row, response in enumerate(RESPONSES):
        student_start = len(MESSAGES[row // 2])
        teacher_start = len(CONTEXT) + student_start
        # The teacher saw the student's response right after its own (longer) prompt.
        assert teacher_batch.input_ids[row, teacher_start : teacher_start + len(response)].tolist() == response
        assert student.input_ids[row, student_start : student_start + len(response)].tolist() == response
        for j, token in enumerate(response):
            expected[row, student_start + j] = -(row + 0.01 * (teacher_start + j) + 0.0001 * token)
    torch.testing.assert_close(scores.token_logprobs, expected, rtol=0, atol=1e-6)
    # Nothing off the student's response columns.
    assert (scores.token_logprobs[student.loss_mask == 0] == 0).all()


def test_score_with_teacher_marks_too_long_samples_unscored():
    rollouts = _rollouts()
    # Teacher lengths: 8+3, 8+1, 12+4, 12+2 -> only the third exceeds 15.
    scorer = FakeScorer()
    scores = score_with_teacher(scorer, FakeProcessor(), rollouts, CONTEXT, pad_token_id=0, max_total_length=15)
    assert scores.scored.tolist() == [1.0, 1.0, 0.0, 1.0]
    assert (scores.token_logprobs[2] == 0).all()
    assert (scores.token_logprobs[[0, 1, 3]] != 0).sum().item() == 3 + 1 + 2
    (teacher_batch,) = scorer.batches
    assert teacher_batch.seq_len <= 15 and teacher_batch.sample_mask.tolist() == [1.0, 1.0, 0.0, 1.0]
