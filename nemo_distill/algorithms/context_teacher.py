"""Glue between student rollouts and the context teacher (seed 003, sections 2.3 and 4).

The teacher of context self-distillation reads ``template.format(problem, trace)`` and then the
student's exact response tokens. This module builds that teacher batch from a
:class:`~nemo_distill.algorithms.rollouts.RolloutBatch` and maps the teacher's top-k rows back
onto the student's rows, using the pure helpers of ``context_distillation_utils``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from nemo_distill.algorithms.context_distillation_utils import (
    ContextTeacherInput,
    align_teacher_topk_to_student,
    build_context_teacher_input,
    summarize_context_inputs,
)
from nemo_distill.algorithms.distillation_config import ContextDistillationConfig
from nemo_distill.algorithms.rollouts import RolloutBatch
from nemo_distill.data.batch import TokenBatch
from nemo_distill.data.collate import build_token_batch


@dataclass
class ContextTeacherBatch:
    """The teacher's inputs for one step: ``batch`` row ``i`` is sample ``i``'s teacher sequence."""

    batch: TokenBatch
    inputs: list[ContextTeacherInput]
    metrics: dict[str, float]


def render_teacher_user_turn(
    tokenizer, text: str, *, chat_template: str | None = None, chat_template_kwargs: Mapping[str, Any] | None = None
) -> str:
    """``text`` as one user turn of the chat template, with the assistant generation prompt appended.

    Rendered exactly as the student's prompt is (:class:`~nemo_distill.data.processors.PromptProcessor`):
    the same template (``policy.tokenizer.chat_template`` or the tokenizer's own) and the same
    ``policy.tokenizer.chat_template_kwargs``. Otherwise the assistant header could differ: a
    Qwen3-style template with ``enable_thinking: false`` ends the student's prompt with an empty
    ``<think></think>`` block, and a teacher rendered without the kwarg would not see it before the
    same response tokens.
    """
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True,
        chat_template=chat_template or getattr(tokenizer, "chat_template", None), **dict(chat_template_kwargs or {}),
    )


def build_context_teacher_batch(
    rollouts: RolloutBatch,
    *,
    cfg: ContextDistillationConfig,
    template: str,
    tokenizer,
    max_teacher_sequence_length: int,
    chat_template: str | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> ContextTeacherBatch:
    """One :class:`ContextTeacherInput` per sample, padded into a teacher :class:`TokenBatch`.

    With ``cfg.teacher_prefix_chat_template`` the formatted prefix is rendered by
    :func:`render_teacher_user_turn` with ``chat_template`` / ``chat_template_kwargs``: pass the
    student's ``policy.tokenizer.chat_template`` and ``policy.tokenizer.chat_template_kwargs`` so
    both sides end their context with the same assistant header. Without any chat template
    (neither argument nor tokenizer) the prefix is the plain formatted text.

    Dropped samples (and samples whose student prompt was too long) get an empty
    teacher sequence of one BOS/pad token and sample mask 0.
    """

    def tokenize(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def render_as_user_turn(text: str) -> str:
        return render_teacher_user_turn(tokenizer, text, chat_template=chat_template, chat_template_kwargs=chat_template_kwargs)

    has_template = (chat_template or getattr(tokenizer, "chat_template", None)) is not None
    use_chat = cfg.teacher_prefix_chat_template and has_template
    fallback_token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.pad_token_id
    inputs, prefixes, responses, sample_mask = [], [], [], []
    for prompt, sample, student_valid in zip(rollouts.prompts, rollouts.samples, rollouts.token_batch.sample_mask.tolist()):
        teacher_input = build_context_teacher_input(
            problem=prompt.record.problem,
            response_text=sample.text,
            response_token_ids=list(sample.response_token_ids),
            tokenize=tokenize,
            template=template,
            max_teacher_sequence_length=max_teacher_sequence_length,
            bos_token_id=tokenizer.bos_token_id,
            missing_trace_policy=cfg.trace_extractor.missing_trace_policy,
            render_prefix=render_as_user_turn if use_chat else None,
        )
        inputs.append(teacher_input)
        keep = (not teacher_input.dropped) and student_valid > 0
        if keep:
            prefixes.append(teacher_input.teacher_input_ids[: teacher_input.prefix_length])
            responses.append(teacher_input.teacher_input_ids[teacher_input.prefix_length :])
        else:
            prefixes.append([fallback_token])
            responses.append([])
        sample_mask.append(1.0 if keep else 0.0)
    batch, _ = build_token_batch(prefixes, responses, pad_token_id=tokenizer.pad_token_id, sample_mask=sample_mask)
    return ContextTeacherBatch(batch=batch, inputs=inputs, metrics=summarize_context_inputs(inputs))


def align_context_topk(
    teacher: ContextTeacherBatch,
    rollouts: RolloutBatch,
    teacher_topk_values: torch.Tensor,
    teacher_topk_indices: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move each teacher row that predicts response token ``j`` onto the student row predicting it.

    Inputs ``[B, T_teacher, K]``; returns values and indices ``[B, T_student, K]`` and a row mask
    ``[B, T_student]`` (1 where a teacher row landed and the sample is valid).
    """
    student_seq_len = rollouts.token_batch.seq_len
    values, indices, row_masks = [], [], []
    for i, teacher_input in enumerate(teacher.inputs):
        valid = teacher.batch.sample_mask[i].item() > 0
        aligned_values, aligned_indices, row_mask = align_teacher_topk_to_student(
            teacher_topk_values[i],
            teacher_topk_indices[i],
            prefix_length=teacher_input.prefix_length if valid else 1,
            prompt_length=rollouts.prompt_lengths[i],
            response_length=teacher_input.response_length if valid else 0,
            student_seq_len=student_seq_len,
        )
        values.append(aligned_values)
        indices.append(aligned_indices)
        row_masks.append(row_mask * float(valid))
    return torch.stack(values), torch.stack(indices), torch.stack(row_masks)
