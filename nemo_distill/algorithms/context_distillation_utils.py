"""Context / self-distillation V1 building blocks (seed 003, sections 2.3, 4, 5.3, 5.4).

Pure functions on strings and token-id lists: no Ray, no torch.distributed.

* trace = the first ``<think>...</think>`` span of the student's response, stripped.
* teacher input = tokens of ``template.format(problem=..., trace=...)`` then the student's exact
  response tokens; the prefix is left-truncated (its tail kept) to fit
  ``max_teacher_sequence_length``.
* alignment ``response_token_index``: logits row ``t`` predicts token ``t + 1``, so the teacher row
  predicting response token ``j`` is ``prefix_length + j - 1`` and the student's is
  ``prompt_length + j - 1``.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Callable

import torch

_THINK_SPAN = re.compile(r"<think>(.*?)</think>", re.DOTALL)
TEMPLATE_FIELDS = ("problem", "trace")
DROP_REASONS = ("too_long_response", "invalid_message", "no_prefix_budget", "missing_trace")
MISSING_TRACE_POLICIES = ("empty", "drop")


def extract_first_think_span(text: str) -> str:
    """Inner text of the first closed ``<think>...</think>`` span, stripped; ``""`` if there is none."""
    match = _THINK_SPAN.search(text or "")
    return match.group(1).strip() if match else ""


def validate_teacher_prefix_template(template: str) -> None:
    """Only ``{problem}`` and ``{trace}`` may appear; raise ``ValueError`` naming any other field."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ValueError(f"teacher prefix template is not a valid format string: {err}") from err
    for _, name, _, _ in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS:
            shown = "{}" if name == "" else "{" + name + "}"
            raise ValueError(f"teacher prefix template uses the field {shown}; only {{problem}} and {{trace}} are allowed")


@dataclass
class ContextTeacherInput:
    """One sample's teacher sequence and what happened while building it."""

    teacher_input_ids: list[int]  # prefix tokens, then the student's exact response tokens
    prefix_length: int
    response_length: int
    prefix_truncated: bool
    dropped: bool
    drop_reason: str | None  # one of DROP_REASONS
    trace: str
    trace_token_count: int
    teacher_context_text: str  # the formatted template (before truncation)


def _dropped(reason: str, *, trace: str, trace_tokens: int, response_length: int, context: str = "") -> ContextTeacherInput:
    return ContextTeacherInput([], 0, response_length, False, True, reason, trace, trace_tokens, context)


def build_context_teacher_input(
    *,
    problem: str | None,
    response_text: str,
    response_token_ids: list[int],
    tokenize: Callable[[str], list[int]],
    template: str,
    max_teacher_sequence_length: int,
    bos_token_id: int | None,
    missing_trace_policy: str = "empty",
    render_prefix: Callable[[str], str] | None = None,
) -> ContextTeacherInput:
    """Teacher input for one sample (see module docstring). Drop reasons:

    * ``invalid_message``: no problem text to put in the template;
    * ``missing_trace``: no ``<think>`` span and ``missing_trace_policy == "drop"``;
    * ``too_long_response``: the response alone fills ``max_teacher_sequence_length``;
    * ``no_prefix_budget``: the prefix came out empty and there is no BOS to stand in for it.

    ``render_prefix`` turns the formatted template into the text that is tokenised (e.g. a user
    turn of the chat template, ending with the assistant header); None tokenises it as is.
    """
    if missing_trace_policy not in MISSING_TRACE_POLICIES:
        raise ValueError(f"missing_trace_policy '{missing_trace_policy}' is not one of {MISSING_TRACE_POLICIES}")
    response_length = len(response_token_ids)
    trace = extract_first_think_span(response_text)
    trace_tokens = len(tokenize(trace)) if trace else 0
    if not problem or not problem.strip():
        return _dropped("invalid_message", trace=trace, trace_tokens=trace_tokens, response_length=response_length)
    if not trace and missing_trace_policy == "drop":
        return _dropped("missing_trace", trace=trace, trace_tokens=0, response_length=response_length)
    context = template.format(problem=problem, trace=trace)
    if render_prefix is not None:
        context = render_prefix(context)
    if response_length >= max_teacher_sequence_length:
        return _dropped("too_long_response", trace=trace, trace_tokens=trace_tokens, response_length=response_length, context=context)
    budget = max_teacher_sequence_length - response_length
    prefix = tokenize(context)
    truncated = len(prefix) > budget
    if truncated:
        prefix = prefix[len(prefix) - budget :]  # keep the tail: it sits next to the response
    if not prefix:
        if bos_token_id is None:
            return _dropped("no_prefix_budget", trace=trace, trace_tokens=trace_tokens, response_length=response_length, context=context)
        prefix = [bos_token_id]
    return ContextTeacherInput(
        teacher_input_ids=list(prefix) + list(response_token_ids),
        prefix_length=len(prefix),
        response_length=response_length,
        prefix_truncated=truncated,
        dropped=False,
        drop_reason=None,
        trace=trace,
        trace_token_count=trace_tokens,
        teacher_context_text=context,
    )


def response_prediction_rows(context_length: int, response_length: int) -> list[int]:
    """Rows of the logits that predict response tokens ``0..response_length-1`` after ``context_length`` tokens."""
    return [context_length + j - 1 for j in range(response_length)]


def align_teacher_topk_to_student(
    teacher_topk_values: torch.Tensor,
    teacher_topk_indices: torch.Tensor,
    *,
    prefix_length: int,
    prompt_length: int,
    response_length: int,
    student_seq_len: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Place teacher rows ``[T_teacher, K]`` at the student's rows ``[T_student, K]``.

    Row ``prefix_length + j - 1`` of the teacher (predicting response token ``j``) goes to row
    ``prompt_length + j - 1`` of the student. Returns values, indices and a ``[T_student]`` row mask
    (1 where a teacher row landed); rows beyond either sequence are left out.
    """
    k = teacher_topk_values.shape[-1]
    values = teacher_topk_values.new_zeros(student_seq_len, k)
    indices = teacher_topk_indices.new_zeros(student_seq_len, k)
    row_mask = torch.zeros(student_seq_len, dtype=torch.float32)
    teacher_rows = torch.tensor(response_prediction_rows(prefix_length, response_length), dtype=torch.long)
    student_rows = torch.tensor(response_prediction_rows(prompt_length, response_length), dtype=torch.long)
    keep = (teacher_rows >= 0) & (teacher_rows < teacher_topk_values.shape[0]) & (student_rows >= 0) & (student_rows < student_seq_len)
    teacher_rows, student_rows = teacher_rows[keep], student_rows[keep]
    values[student_rows] = teacher_topk_values[teacher_rows]
    indices[student_rows] = teacher_topk_indices[teacher_rows]
    row_mask[student_rows] = 1.0
    return values, indices, row_mask


def summarize_context_inputs(inputs: list[ContextTeacherInput]) -> dict[str, float]:
    """Per-step ``context_distillation_*`` metrics over all samples of the step."""
    count = len(inputs)
    valid = [x for x in inputs if not x.dropped]
    with_trace = [x for x in inputs if x.trace]
    truncated = sum(x.prefix_truncated for x in valid)
    metrics = {
        "context_distillation_trace_coverage": len(with_trace) / count if count else 0.0,
        "context_distillation_trace_mean_chars": sum(len(x.trace) for x in with_trace) / len(with_trace) if with_trace else 0.0,
        "context_distillation_trace_mean_tokens": sum(x.trace_token_count for x in with_trace) / len(with_trace) if with_trace else 0.0,
        "context_distillation_prefix_truncation_count": float(truncated),
        "context_distillation_prefix_truncation_rate": truncated / len(valid) if valid else 0.0,
        "context_distillation_dropped_samples": float(count - len(valid)),
        "context_distillation_valid_samples": float(len(valid)),
    }
    for reason in DROP_REASONS:
        metrics[f"context_distillation_dropped_{reason}"] = float(sum(x.drop_reason == reason for x in inputs))
    return metrics


def format_first_sample_debug(teacher_input: ContextTeacherInput, generation_text: str, tokenizer) -> str:
    """Human-readable view of one sample: generation, trace, teacher context, the text the teacher scores."""
    scored = tokenizer.decode(teacher_input.teacher_input_ids) if teacher_input.teacher_input_ids else "<dropped>"
    return "\n".join(
        [
            "=== context distillation: first sample ===",
            f"--- student generation ---\n{generation_text}",
            f"--- trace (first <think> span, {teacher_input.trace_token_count} tokens) ---\n{teacher_input.trace or '<empty>'}",
            f"--- teacher context ---\n{teacher_input.teacher_context_text}",
            f"--- teacher scores (prefix {teacher_input.prefix_length} tokens"
            f"{', truncated' if teacher_input.prefix_truncated else ''} + response {teacher_input.response_length}) ---\n{scored}",
            f"--- dropped: {teacher_input.drop_reason} ---" if teacher_input.dropped else "=== end ===",
        ]
    )
