"""Context / self-distillation V1 building blocks (seed 003, sections 2.3, 4, 5.3, 5.4).

Pure functions on strings and token-id lists: no Ray, no torch.distributed.

* trace: the first ``<think>...</think>`` span of the student's own response, stripped
  (:func:`extract_first_think_span`).
* teacher input: the tokens of ``template.format(problem=..., trace=...)`` (the "prefix"), then the
  student's exact response tokens (:func:`build_context_teacher_input`). The prefix is
  LEFT-truncated (its tail kept, the part next to the response) to fit
  ``max_teacher_sequence_length``; the response is never cut.
* alignment ``response_token_index``: logits row ``t`` predicts token ``t + 1``, so the teacher row
  that predicts response token ``j`` is ``prefix_length + j − 1`` and the student row is
  ``prompt_length + j − 1`` (:func:`align_teacher_topk_to_student`).
* metrics: ``context_distillation_*`` per step (:class:`ContextDistillationStats`).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, fields
from typing import Callable

import torch

_THINK_SPAN = re.compile(r"<think>(.*?)</think>", re.DOTALL)
TEMPLATE_FIELDS = ("problem", "trace")
DROP_REASONS = ("too_long_response", "invalid_message", "no_prefix_budget", "missing_trace")
MISSING_TRACE_POLICIES = ("empty", "drop")


def extract_first_think_span(text: str | None) -> str:
    """Inner text of the first ``<think>...</think>`` span, stripped; ``""`` when there is none.

    "First span" runs from the first ``<think>`` to the first ``</think>`` after it (no nesting):
    ``"<think>a <think>b</think>"`` gives ``"a <think>b"``. An unclosed ``<think>`` or a response
    with no opening tag gives ``""``. Spans may cover several lines.
    """
    match = _THINK_SPAN.search(text or "")
    return match.group(1).strip() if match else ""


def validate_teacher_prefix_template(template: str) -> None:
    """Raise ``ValueError`` unless ``template`` uses only the fields ``{problem}`` and ``{trace}``.

    Rejected: positional ``{}`` / ``{0}``, any other name, attribute or index access
    (``{problem.x}``, ``{trace[0]}``), unbalanced braces, and format specs that fail on a string
    (``{problem:d}``). Literal braces are written ``{{`` and ``}}``.
    """
    if not isinstance(template, str):
        raise ValueError(f"teacher_prefix_template must be a string, got {type(template).__name__}")
    allowed = ", ".join("{" + name + "}" for name in TEMPLATE_FIELDS)
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ValueError(f"teacher_prefix_template {template!r} is not a valid format string ({err}); allowed fields: {allowed}") from err
    for _, name, _, _ in parsed:
        if name is not None and name not in TEMPLATE_FIELDS:
            shown = "{" + name + "}"
            raise ValueError(
                f"teacher_prefix_template uses the field {shown}; allowed fields: {allowed} "
                "(write a literal brace as {{ or }})"
            )
    try:
        template.format(problem="problem", trace="trace")
    except (ValueError, TypeError, KeyError, IndexError) as err:
        raise ValueError(f"teacher_prefix_template {template!r} cannot be formatted ({err}); allowed fields: {allowed}") from err


@dataclass
class ContextTeacherInput:
    """One sample's teacher sequence and what happened while building it.

    ``teacher_input_ids[:prefix_length]`` is the (possibly truncated) prefix and
    ``teacher_input_ids[prefix_length:]`` the student's response tokens; empty when ``dropped``.
    """

    teacher_input_ids: list[int]
    prefix_length: int
    response_length: int
    prefix_truncated: bool
    dropped: bool
    drop_reason: str | None  # None, or one of DROP_REASONS
    trace: str  # the extracted trace ("" when there was none)
    trace_token_count: int  # len(tokenize(trace)); 0 for an empty trace
    teacher_context_text: str  # the formatted (and rendered) prefix text, before truncation; "" if never built


def _dropped(reason: str, *, trace: str, trace_token_count: int, response_length: int, context: str = "") -> ContextTeacherInput:
    return ContextTeacherInput(
        teacher_input_ids=[],
        prefix_length=0,
        response_length=response_length,
        prefix_truncated=False,
        dropped=True,
        drop_reason=reason,
        trace=trace,
        trace_token_count=trace_token_count,
        teacher_context_text=context,
    )


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
    """The teacher input of one sample (see the module docstring).

    Args:
        problem: the original user problem (``problem_source = original_user_problem``).
        response_text: the student's decoded response (where the trace is looked for).
        response_token_ids: the student's exact response tokens; copied unchanged.
        tokenize: text -> token ids, without special tokens.
        template: ``teacher_prefix_template`` with ``{problem}`` / ``{trace}``.
        max_teacher_sequence_length: the most tokens the teacher sequence may have.
        bos_token_id: stands in for a prefix that came out empty (the teacher needs one token
            before the response: its row ``prefix_length − 1`` predicts response token 0).
        missing_trace_policy: ``"empty"`` (use ``trace = ""``) or ``"drop"``.
        render_prefix: optional text -> text applied to the formatted template before
            tokenisation (e.g. wrap it as a chat user turn).

    Checks, in this order, each dropping the sample with that ``drop_reason``:

    1. ``invalid_message``: ``problem`` is missing or blank.
    2. ``missing_trace``: no trace and ``missing_trace_policy == "drop"``.
    3. ``too_long_response``: ``len(response) >= max_teacher_sequence_length`` (no room for even
       one prefix token).
    4. ``no_prefix_budget``: the prefix tokenised to nothing and there is no BOS to stand in.

    Otherwise the prefix is left-truncated to ``max_teacher_sequence_length − len(response)``
    tokens (``prefix_truncated`` set), which is always >= 1 after check 3.
    """
    if missing_trace_policy not in MISSING_TRACE_POLICIES:
        raise ValueError(f"missing_trace_policy={missing_trace_policy!r} is not supported; allowed values: {list(MISSING_TRACE_POLICIES)}")
    if max_teacher_sequence_length < 1:
        raise ValueError(f"max_teacher_sequence_length must be >= 1, got {max_teacher_sequence_length}")
    response_length = len(response_token_ids)
    trace = extract_first_think_span(response_text)
    trace_token_count = len(tokenize(trace)) if trace else 0
    if problem is None or not str(problem).strip():
        return _dropped("invalid_message", trace=trace, trace_token_count=trace_token_count, response_length=response_length)
    if not trace and missing_trace_policy == "drop":
        return _dropped("missing_trace", trace=trace, trace_token_count=0, response_length=response_length)
    context = template.format(problem=problem, trace=trace)
    if render_prefix is not None:
        context = render_prefix(context)
    if response_length >= max_teacher_sequence_length:
        return _dropped(
            "too_long_response", trace=trace, trace_token_count=trace_token_count, response_length=response_length, context=context
        )
    budget = max_teacher_sequence_length - response_length
    prefix = list(tokenize(context))
    truncated = len(prefix) > budget
    if truncated:
        prefix = prefix[len(prefix) - budget :]  # keep the tail: it sits next to the response
    if not prefix:
        if bos_token_id is None:
            return _dropped(
                "no_prefix_budget", trace=trace, trace_token_count=trace_token_count, response_length=response_length, context=context
            )
        prefix = [bos_token_id]
    return ContextTeacherInput(
        teacher_input_ids=prefix + list(response_token_ids),
        prefix_length=len(prefix),
        response_length=response_length,
        prefix_truncated=truncated,
        dropped=False,
        drop_reason=None,
        trace=trace,
        trace_token_count=trace_token_count,
        teacher_context_text=context,
    )


def _prediction_rows(context_length: int, response_length: int) -> list[int]:
    # Row t of the logits predicts token t + 1; response token j sits at context_length + j.
    return [context_length + j - 1 for j in range(response_length)]


def teacher_rows_for_response(prefix_length: int, response_length: int) -> list[int]:
    """Teacher logits rows predicting response tokens ``0..response_length−1``: ``prefix_length + j − 1``."""
    return _prediction_rows(prefix_length, response_length)


def student_rows_for_response(prompt_length: int, response_length: int) -> list[int]:
    """Student logits rows predicting response tokens ``0..response_length−1``: ``prompt_length + j − 1``."""
    return _prediction_rows(prompt_length, response_length)


def align_teacher_topk_to_student(
    teacher_topk_values: torch.Tensor,
    teacher_topk_indices: torch.Tensor,
    *,
    prefix_length: int,
    prompt_length: int,
    response_length: int,
    student_seq_len: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move one sample's teacher top-k rows onto the student's rows.

    Args:
        teacher_topk_values: ``[T_teacher, K]`` (logits, or whatever the caller stores per row).
        teacher_topk_indices: ``[T_teacher, K]`` int vocabulary ids.
        prefix_length / prompt_length: tokens before the response in the teacher / student sequence.
        response_length: response tokens (the same tokens in both sequences).
        student_seq_len: ``T_student``, the padded student length.

    Returns ``values [T_student, K]``, ``indices [T_student, K]`` and ``row_mask [T_student]``
    (float, 1 where a teacher row landed). Teacher row ``prefix_length + j − 1`` goes to student
    row ``prompt_length + j − 1``; rows outside either sequence (e.g. ``j = 0`` with an empty
    prompt) are skipped. Elsewhere values and indices are 0 and the mask is 0.
    """
    if teacher_topk_values.dim() != 2 or teacher_topk_values.shape != teacher_topk_indices.shape:
        raise ValueError(
            f"teacher top-k values {tuple(teacher_topk_values.shape)} and indices {tuple(teacher_topk_indices.shape)} "
            "must both be [T_teacher, K]"
        )
    k = teacher_topk_values.shape[-1]
    values = teacher_topk_values.new_zeros(student_seq_len, k)
    indices = teacher_topk_indices.new_zeros(student_seq_len, k)
    row_mask = torch.zeros(student_seq_len, dtype=torch.float32, device=teacher_topk_values.device)
    teacher_rows = torch.tensor(teacher_rows_for_response(prefix_length, response_length), dtype=torch.long)
    student_rows = torch.tensor(student_rows_for_response(prompt_length, response_length), dtype=torch.long)
    keep = (teacher_rows >= 0) & (teacher_rows < teacher_topk_values.shape[0]) & (student_rows >= 0) & (student_rows < student_seq_len)
    teacher_rows = teacher_rows[keep].to(teacher_topk_values.device)
    student_rows = student_rows[keep].to(teacher_topk_values.device)
    values[student_rows] = teacher_topk_values[teacher_rows]
    indices[student_rows] = teacher_topk_indices[teacher_rows]
    row_mask[student_rows] = 1.0
    return values, indices, row_mask


@dataclass
class ContextDistillationStats:
    """One step's context-distillation health, over all samples of the step (dropped included).

    Means of trace length are over the samples that have a trace; the truncation rate is over
    the samples that were kept (dropped ones have no prefix).
    """

    trace_coverage: float  # share of samples with a non-empty trace
    trace_mean_chars: float
    trace_mean_tokens: float
    prefix_truncation_count: float
    prefix_truncation_rate: float
    dropped_samples: float
    dropped_too_long_response: float
    dropped_invalid_message: float
    dropped_no_prefix_budget: float
    dropped_missing_trace: float
    valid_samples: float

    @classmethod
    def from_inputs(cls, inputs: list[ContextTeacherInput]) -> "ContextDistillationStats":
        count = len(inputs)
        valid = [x for x in inputs if not x.dropped]
        with_trace = [x for x in inputs if x.trace]
        truncated = sum(x.prefix_truncated for x in valid)
        drops = {reason: float(sum(x.drop_reason == reason for x in inputs)) for reason in DROP_REASONS}
        return cls(
            trace_coverage=len(with_trace) / count if count else 0.0,
            trace_mean_chars=sum(len(x.trace) for x in with_trace) / len(with_trace) if with_trace else 0.0,
            trace_mean_tokens=sum(x.trace_token_count for x in with_trace) / len(with_trace) if with_trace else 0.0,
            prefix_truncation_count=float(truncated),
            prefix_truncation_rate=truncated / len(valid) if valid else 0.0,
            dropped_samples=float(count - len(valid)),
            dropped_too_long_response=drops["too_long_response"],
            dropped_invalid_message=drops["invalid_message"],
            dropped_no_prefix_budget=drops["no_prefix_budget"],
            dropped_missing_trace=drops["missing_trace"],
            valid_samples=float(len(valid)),
        )

    def as_metrics(self) -> dict[str, float]:
        """``{"context_distillation_<field>": value}`` for every field."""
        return {f"context_distillation_{f.name}": float(getattr(self, f.name)) for f in fields(self)}


def summarize_context_inputs(inputs: list[ContextTeacherInput]) -> dict[str, float]:
    """The step's ``context_distillation_*`` metrics (see :class:`ContextDistillationStats`)."""
    return ContextDistillationStats.from_inputs(inputs).as_metrics()


def format_first_sample_debug(teacher_input: ContextTeacherInput, generation_text: str, tokenizer=None) -> str:
    """A human-readable view of one sample, printed once at the first step when
    ``distillation.context_distillation.print_first_sample=true``: the student's generation,
    the trace, the teacher context, and the exact text the teacher scores (decoded with
    ``tokenizer.decode``; raw token ids without a tokenizer)."""
    if not teacher_input.teacher_input_ids:
        scored = "<dropped: nothing scored>"
    elif tokenizer is None:
        scored = str(teacher_input.teacher_input_ids)
    else:
        scored = tokenizer.decode(teacher_input.teacher_input_ids)
    truncated = ", truncated" if teacher_input.prefix_truncated else ""
    return "\n".join(
        [
            "=== context distillation: first sample ===",
            f"--- student generation ---\n{generation_text}",
            f"--- trace (first <think> span, {teacher_input.trace_token_count} tokens) ---\n{teacher_input.trace or '<empty>'}",
            f"--- teacher context ---\n{teacher_input.teacher_context_text or '<none>'}",
            f"--- teacher scores (prefix {teacher_input.prefix_length} tokens{truncated} + response "
            f"{teacher_input.response_length} tokens) ---\n{scored}",
            f"=== dropped: {teacher_input.drop_reason} ===" if teacher_input.dropped else "=== end ===",
        ]
    )
