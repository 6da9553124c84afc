"""The context teacher's prefix is rendered with the student's chat template and its kwargs (issue 11, item 2).

A Qwen3-style template reads ``enable_thinking``: with ``false`` the assistant header ends with an
empty think block. With the teacher template ``{problem}`` the teacher must then see exactly the
student's context: the same prompt tokens, then the same response tokens.
"""

from __future__ import annotations

import pytest

from nemo_distill.algorithms.context_teacher import build_context_teacher_batch, render_teacher_user_turn
from nemo_distill.algorithms.distillation_config import ContextDistillationConfig
from nemo_distill.algorithms.rollouts import RolloutBatch
from nemo_distill.data.collate import build_token_batch
from nemo_distill.data.datasets import ProblemRecord
from nemo_distill.data.processors import PromptProcessor
from nemo_distill.models.generation.interfaces import GeneratedSample

# A minimal Qwen3-like template: the generation prompt gets an empty think block when thinking is off.
THINKING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
EMPTY_THINK = "<|im_start|>assistant\n<think>\n\n</think>\n\n"
PROBLEM = "What is 2 + 3?"
RESPONSE = "The answer is 5."


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = THINKING_TEMPLATE
    return tok


def _rollouts(tokenizer, processor: PromptProcessor) -> RolloutBatch:
    prompt = processor.process(ProblemRecord(problem=PROBLEM, answer="5", record_id="t-0"))
    response_ids = tokenizer(RESPONSE, add_special_tokens=False)["input_ids"]
    sample = GeneratedSample(prompt_index=0, response_token_ids=response_ids, response_logprobs=[0.0] * len(response_ids),
                             text=RESPONSE, finish_reason="stop")
    batch, prompt_lengths = build_token_batch([prompt.prompt_token_ids], [response_ids], pad_token_id=tokenizer.pad_token_id or 0)
    return RolloutBatch(prompts=[prompt], samples=[sample], rewards=[1.0], token_batch=batch, prompt_lengths=prompt_lengths, metrics={})


@pytest.mark.parametrize("enable_thinking", [False, True])
def test_teacher_with_problem_template_sees_exactly_the_students_context(tokenizer, enable_thinking):
    kwargs = {"enable_thinking": enable_thinking}
    processor = PromptProcessor(tokenizer, prompt_template=None, system_prompt=None, chat_template_kwargs=kwargs,
                                max_input_seq_length=256)
    rollouts = _rollouts(tokenizer, processor)
    assert rollouts.prompts[0].prompt_text.endswith(EMPTY_THINK) == (not enable_thinking)

    teacher = build_context_teacher_batch(
        rollouts, cfg=ContextDistillationConfig(enabled=True, teacher_prefix_template="{problem}"), template="{problem}",
        tokenizer=tokenizer, max_teacher_sequence_length=256, chat_template_kwargs=kwargs,
    )
    teacher_input = teacher.inputs[0]
    assert teacher_input.teacher_context_text == rollouts.prompts[0].prompt_text
    student_ids = rollouts.prompts[0].prompt_token_ids + rollouts.samples[0].response_token_ids
    assert teacher_input.teacher_input_ids == student_ids
    assert teacher_input.prefix_length == rollouts.prompt_lengths[0]


def test_without_the_kwargs_the_teacher_header_differs(tokenizer):
    # What the teacher saw before the fix: the template's default (thinking on), no empty think block.
    rendered = render_teacher_user_turn(tokenizer, PROBLEM)
    assert not rendered.endswith(EMPTY_THINK)
    assert render_teacher_user_turn(tokenizer, PROBLEM, chat_template_kwargs={"enable_thinking": False}).endswith(EMPTY_THINK)


def test_config_chat_template_overrides_the_tokenizers_for_the_teacher_too(tokenizer):
    override = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
    processor = PromptProcessor(tokenizer, prompt_template=None, system_prompt=None, chat_template=override,
                                max_input_seq_length=256)
    rollouts = _rollouts(tokenizer, processor)
    teacher = build_context_teacher_batch(
        rollouts, cfg=ContextDistillationConfig(enabled=True), template="{problem}", tokenizer=tokenizer,
        max_teacher_sequence_length=256, chat_template=override,
    )
    assert teacher.inputs[0].teacher_context_text == f"[user] {PROBLEM}\n[assistant] " == rollouts.prompts[0].prompt_text


def test_prefix_chat_template_off_uses_the_plain_text(tokenizer):
    processor = PromptProcessor(tokenizer, prompt_template=None, system_prompt=None, max_input_seq_length=256)
    rollouts = _rollouts(tokenizer, processor)
    teacher = build_context_teacher_batch(
        rollouts, cfg=ContextDistillationConfig(enabled=True, teacher_prefix_chat_template=False), template="Q: {problem}",
        tokenizer=tokenizer, max_teacher_sequence_length=256, chat_template_kwargs={"enable_thinking": False},
    )
    assert teacher.inputs[0].teacher_context_text == f"Q: {PROBLEM}"
