"""Context-distillation building blocks. Every test name contains ``context_distillation``: the
runbook (seed 003, section 2.1) selects them with ``-k context_distillation``."""

from __future__ import annotations

import pytest
import torch

from nemo_distill.algorithms.context_distillation_utils import (
    ContextDistillationStats,
    ContextTeacherInput,
    align_teacher_topk_to_student,
    build_context_teacher_input,
    extract_first_think_span,
    format_first_sample_debug,
    student_rows_for_response,
    summarize_context_inputs,
    teacher_rows_for_response,
    validate_teacher_prefix_template,
)


def char_tokenize(text: str) -> list[int]:
    """One token per character (its code point): lengths and truncation are easy to check by hand."""
    return [ord(c) for c in text]


def char_detokenize(ids: list[int]) -> str:
    return "".join(chr(i) for i in ids)


RESPONSE = "<think>add 2 and 2</think> The answer is 4."
RESPONSE_IDS = [1000 + i for i in range(6)]  # the student's response tokens (opaque here)


def build(**overrides) -> ContextTeacherInput:
    kwargs = dict(
        problem="2+2?",
        response_text=RESPONSE,
        response_token_ids=RESPONSE_IDS,
        tokenize=char_tokenize,
        template="P:{problem} T:{trace}|",
        max_teacher_sequence_length=100,
        bos_token_id=1,
    )
    kwargs.update(overrides)
    return build_context_teacher_input(**kwargs)


# --- extract_first_think_span -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("no tags at all", ""),
        ("", ""),
        (None, ""),
        ("<think>first</think> middle <think>second</think>", "first"),
        ("<think>never closed", ""),
        ("closing only</think>", ""),
        ("<think></think> answer", ""),
        ("<think>   \n\t </think>", ""),
        ("<think>  padded trace \n</think>", "padded trace"),
        ("<think>\nline one\nline two\n</think>\nanswer", "line one\nline two"),
        ("Sure. <think>after leading text</think>", "after leading text"),
        ("<think>outer <think>inner</think> rest</think>", "outer <think>inner"),
    ],
    ids=[
        "no_span", "empty_text", "none_text", "several_spans_first", "unclosed", "closing_only",
        "empty_span", "whitespace_span", "stripped", "multi_line", "leading_text", "nested",
    ],
)
def test_context_distillation_extract_first_think_span(text, expected):
    assert extract_first_think_span(text) == expected


# --- template validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "You are given a problem and a trace: {problem} + {trace}. Solve it on your own.",
        "only {problem}",
        "no fields",
        "literal {{braces}} and {trace!r}",
    ],
)
def test_context_distillation_template_validation_accepts(template):
    validate_teacher_prefix_template(template)


@pytest.mark.parametrize(
    "template,named",
    [
        ("{problem} {}", r"\{\}"),
        ("{problem} {0}", r"\{0\}"),
        ("{problem} {solution}", r"\{solution\}"),
        ("{problem.upper}", r"\{problem\.upper\}"),
        ("{trace[0]}", r"\{trace\[0\]\}"),
        ("{problem", "not a valid format string"),
        ("{problem:d}", "cannot be formatted"),
    ],
)
def test_context_distillation_template_validation_rejects_with_field_named(template, named):
    with pytest.raises(ValueError, match=named) as info:
        validate_teacher_prefix_template(template)
    assert "{problem}" in str(info.value) and "{trace}" in str(info.value)


# --- build_context_teacher_input ----------------------------------------------------------------


def test_context_distillation_teacher_input_is_prefix_then_exact_response():
    result = build()
    prefix_text = "P:2+2? T:add 2 and 2|"
    assert result.teacher_context_text == prefix_text
    assert result.teacher_input_ids == char_tokenize(prefix_text) + RESPONSE_IDS
    assert result.prefix_length == len(prefix_text)
    assert result.response_length == 6
    assert not result.dropped and result.drop_reason is None and not result.prefix_truncated
    assert result.trace == "add 2 and 2"
    assert result.trace_token_count == len("add 2 and 2")


def test_context_distillation_render_prefix_is_applied_before_tokenising():
    result = build(render_prefix=lambda text: f"<user>{text}</user>")
    assert result.teacher_context_text == "<user>P:2+2? T:add 2 and 2|</user>"
    assert char_detokenize(result.teacher_input_ids[: result.prefix_length]) == result.teacher_context_text


def test_context_distillation_prefix_is_left_truncated_keeping_its_tail():
    # Budget = 10 - 6 = 4 prefix tokens: the last four characters of the prefix survive.
    result = build(max_teacher_sequence_length=10)
    assert result.prefix_truncated and not result.dropped
    assert result.prefix_length == 4
    assert char_detokenize(result.teacher_input_ids[:4]) == "d 2|"
    assert result.teacher_input_ids[4:] == RESPONSE_IDS
    assert len(result.teacher_input_ids) == 10
    # The budget exactly fits: no truncation.
    exact = build(max_teacher_sequence_length=len("P:2+2? T:add 2 and 2|") + 6)
    assert not exact.prefix_truncated and exact.prefix_length == len("P:2+2? T:add 2 and 2|")


def test_context_distillation_one_token_budget_keeps_the_last_prefix_token():
    result = build(max_teacher_sequence_length=7)
    assert result.prefix_truncated and result.prefix_length == 1
    assert result.teacher_input_ids == [ord("|")] + RESPONSE_IDS


def test_context_distillation_drop_too_long_response():
    for max_len in (6, 5):  # the response alone fills (or overflows) the teacher sequence
        result = build(max_teacher_sequence_length=max_len)
        assert result.dropped and result.drop_reason == "too_long_response"
        assert result.teacher_input_ids == [] and result.prefix_length == 0 and result.response_length == 6


@pytest.mark.parametrize("problem", [None, "", "   \n"])
def test_context_distillation_drop_invalid_message(problem):
    result = build(problem=problem)
    assert result.dropped and result.drop_reason == "invalid_message"
    assert result.trace == "add 2 and 2"  # the trace is still reported for metrics


def test_context_distillation_missing_trace_policy_empty_and_drop():
    kept = build(response_text="The answer is 4.")
    assert not kept.dropped and kept.trace == "" and kept.trace_token_count == 0
    assert kept.teacher_context_text == "P:2+2? T:|"
    dropped = build(response_text="The answer is 4.", missing_trace_policy="drop")
    assert dropped.dropped and dropped.drop_reason == "missing_trace"
    with pytest.raises(ValueError, match=r"missing_trace_policy='skip'.*empty.*drop"):
        build(missing_trace_policy="skip")


def test_context_distillation_empty_prefix_falls_back_to_bos_or_drops_no_prefix_budget():
    with_bos = build(template="{trace}", response_text="no trace here", bos_token_id=7)
    assert not with_bos.dropped and with_bos.teacher_input_ids == [7] + RESPONSE_IDS and with_bos.prefix_length == 1
    without_bos = build(template="{trace}", response_text="no trace here", bos_token_id=None)
    assert without_bos.dropped and without_bos.drop_reason == "no_prefix_budget"


def test_context_distillation_drop_reasons_are_checked_in_documented_order():
    # invalid_message wins over missing_trace, which wins over too_long_response.
    assert build(problem="", response_text="x", missing_trace_policy="drop", max_teacher_sequence_length=2).drop_reason == "invalid_message"
    assert build(response_text="x", missing_trace_policy="drop", max_teacher_sequence_length=2).drop_reason == "missing_trace"


# --- alignment ---------------------------------------------------------------------------------


def test_context_distillation_row_indices_follow_logits_row_t_predicts_token_t_plus_1():
    assert teacher_rows_for_response(prefix_length=5, response_length=3) == [4, 5, 6]
    assert student_rows_for_response(prompt_length=2, response_length=3) == [1, 2, 3]
    assert teacher_rows_for_response(prefix_length=1, response_length=0) == []


def test_context_distillation_alignment_on_hand_built_sequences():
    # Teacher: 4 prefix tokens + 3 response tokens = 7 rows; student: 2 prompt + 3 response, padded to 6.
    prefix_length, prompt_length, response_length, k = 4, 2, 3, 2
    teacher_values = torch.arange(7 * k, dtype=torch.float32).reshape(7, k)  # row r holds [2r, 2r+1]
    teacher_indices = 100 + torch.arange(7 * k).reshape(7, k)
    values, indices, row_mask = align_teacher_topk_to_student(
        teacher_values, teacher_indices, prefix_length=prefix_length, prompt_length=prompt_length,
        response_length=response_length, student_seq_len=6,
    )
    # Response token j: teacher row 3 + j -> student row 1 + j.
    expected_values = torch.zeros(6, k)
    expected_values[1:4] = torch.tensor([[6.0, 7.0], [8.0, 9.0], [10.0, 11.0]])
    expected_indices = torch.zeros(6, k, dtype=torch.long)
    expected_indices[1:4] = torch.tensor([[106, 107], [108, 109], [110, 111]])
    assert torch.equal(values, expected_values)
    assert torch.equal(indices, expected_indices)
    assert torch.equal(row_mask, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0, 0.0]))


def test_context_distillation_alignment_with_token_sequences_predicts_the_same_tokens():
    # Build real sequences and check: the student row and the teacher row that get paired both
    # predict the same next token.
    teacher_input = build()
    prompt = [9, 8, 7]
    student_seq = prompt + RESPONSE_IDS + [0, 0]  # right-padded
    teacher_seq = teacher_input.teacher_input_ids
    teacher_len = len(teacher_seq)
    # Fake "top-1": each teacher row stores the id of the token that follows it.
    next_ids = torch.tensor(teacher_seq[1:] + [-1])[:, None]
    values, indices, row_mask = align_teacher_topk_to_student(
        next_ids.float(), next_ids, prefix_length=teacher_input.prefix_length, prompt_length=len(prompt),
        response_length=teacher_input.response_length, student_seq_len=len(student_seq),
    )
    assert teacher_len == teacher_input.prefix_length + len(RESPONSE_IDS)
    for row in range(len(student_seq)):
        if row_mask[row]:
            assert int(indices[row, 0]) == student_seq[row + 1]
    assert int(row_mask.sum()) == len(RESPONSE_IDS)


def test_context_distillation_alignment_skips_rows_outside_the_sequences():
    teacher_values = torch.ones(4, 1)
    # Empty student prompt: response token 0 has no student row (row -1) and is skipped.
    _, _, row_mask = align_teacher_topk_to_student(
        teacher_values, torch.zeros(4, 1, dtype=torch.long), prefix_length=1, prompt_length=0, response_length=3, student_seq_len=3
    )
    assert torch.equal(row_mask, torch.tensor([1.0, 1.0, 0.0]))
    # A student shorter than prompt + response keeps only the rows that fit.
    _, _, row_mask = align_teacher_topk_to_student(
        teacher_values, torch.zeros(4, 1, dtype=torch.long), prefix_length=1, prompt_length=2, response_length=3, student_seq_len=3
    )
    assert torch.equal(row_mask, torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="T_teacher, K"):
        align_teacher_topk_to_student(
            teacher_values, torch.zeros(3, 1, dtype=torch.long), prefix_length=1, prompt_length=2, response_length=3, student_seq_len=3
        )


# --- metrics ------------------------------------------------------------------------------------

METRIC_NAMES = {
    "context_distillation_trace_coverage",
    "context_distillation_trace_mean_chars",
    "context_distillation_trace_mean_tokens",
    "context_distillation_prefix_truncation_count",
    "context_distillation_prefix_truncation_rate",
    "context_distillation_dropped_samples",
    "context_distillation_dropped_too_long_response",
    "context_distillation_dropped_invalid_message",
    "context_distillation_dropped_no_prefix_budget",
    "context_distillation_dropped_missing_trace",
    "context_distillation_valid_samples",
}


def test_context_distillation_metrics_on_a_hand_built_list():
    inputs = [
        build(),  # trace "add 2 and 2" (11 chars), kept, not truncated
        build(max_teacher_sequence_length=10),  # trace 11 chars, kept, truncated
        build(response_text="<think>abcd</think>", max_teacher_sequence_length=3),  # trace 4 chars, too long
        build(problem=""),  # trace 11 chars, invalid message
        build(response_text="none", missing_trace_policy="drop"),  # no trace, missing_trace
        build(response_text="none"),  # no trace, kept
        build(template="{trace}", response_text="none", bos_token_id=None),  # no trace, no_prefix_budget
    ]
    metrics = summarize_context_inputs(inputs)
    assert set(metrics) == METRIC_NAMES
    assert metrics["context_distillation_trace_coverage"] == pytest.approx(4 / 7)
    assert metrics["context_distillation_trace_mean_chars"] == pytest.approx((11 + 11 + 4 + 11) / 4)
    assert metrics["context_distillation_trace_mean_tokens"] == pytest.approx((11 + 11 + 4 + 11) / 4)
    assert metrics["context_distillation_prefix_truncation_count"] == 1.0
    assert metrics["context_distillation_prefix_truncation_rate"] == pytest.approx(1 / 3)
    assert metrics["context_distillation_dropped_samples"] == 4.0
    assert metrics["context_distillation_dropped_too_long_response"] == 1.0
    assert metrics["context_distillation_dropped_invalid_message"] == 1.0
    assert metrics["context_distillation_dropped_missing_trace"] == 1.0
    assert metrics["context_distillation_dropped_no_prefix_budget"] == 1.0
    assert metrics["context_distillation_valid_samples"] == 3.0
    assert ContextDistillationStats.from_inputs(inputs).valid_samples == 3.0


def test_context_distillation_metrics_of_an_empty_step_are_zero():
    metrics = summarize_context_inputs([])
    assert set(metrics) == METRIC_NAMES
    assert all(value == 0.0 for value in metrics.values())


def test_context_distillation_first_sample_debug_shows_every_part():
    class CharTokenizer:
        def decode(self, ids):
            return char_detokenize([i for i in ids if i < 1000]) + f"<+{sum(i >= 1000 for i in ids)} response tokens>"

    text = format_first_sample_debug(build(), RESPONSE, CharTokenizer())
    for part in (RESPONSE, "add 2 and 2", "P:2+2? T:add 2 and 2|", "<+6 response tokens>", "prefix 21 tokens + response 6 tokens"):
        assert part in text
    dropped = format_first_sample_debug(build(problem=""), RESPONSE)
    assert "dropped: invalid_message" in dropped and "nothing scored" in dropped


def test_first_sample_debug_names_the_real_config_key():
    # Issue 11 item 6: the docstring named a `--print-first-sample` flag that no entry point has.
    from nemo_distill.algorithms.distillation_config import ContextDistillationConfig

    doc = format_first_sample_debug.__doc__
    assert "--print-first-sample" not in doc
    assert "distillation.context_distillation.print_first_sample=true" in doc
    assert hasattr(ContextDistillationConfig(), "print_first_sample")
