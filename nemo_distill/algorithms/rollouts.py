"""Student rollouts shared by every on-policy algorithm: prompts -> samples -> rewards -> batch.

One call of :func:`generate_rollouts` does the "generation -> environment -> train batch" part
of a step (DESIGN.md, "One distillation step"); distillation, GRPO and the pseudo-labeller all
start from the :class:`RolloutBatch` it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from nemo_distill.data.batch import TokenBatch
from nemo_distill.data.collate import build_token_batch
from nemo_distill.data.processors import ProcessedPrompt
from nemo_distill.models.generation.interfaces import GeneratedSample, GenerationRequest, SamplingParams


@dataclass
class RolloutBatch:
    """``n`` samples per prompt, prompt-major: sample ``i`` answers ``prompts[i]``.

    ``token_batch`` holds prompt + response tokens right-padded, ``loss_mask`` on response
    tokens; ``prompt_lengths[i]`` is where sample ``i``'s response starts.
    """

    prompts: list[ProcessedPrompt]
    samples: list[GeneratedSample]
    rewards: list[float]
    token_batch: TokenBatch
    prompt_lengths: list[int]
    metrics: dict[str, float]

    @property
    def response_lengths(self) -> list[int]:
        return [len(sample.response_token_ids) for sample in self.samples]

    def sampling_logprobs(self) -> torch.Tensor:
        """``[N, T]`` token-layout log-probs the generation engine reported for each sampled token
        (0 on prompt and padding positions), aligned with ``token_batch.input_ids``."""
        batch = self.token_batch
        logprobs = torch.zeros(batch.input_ids.shape, dtype=torch.float32)
        for row, (sample, start) in enumerate(zip(self.samples, self.prompt_lengths)):
            values = sample.response_logprobs[: max(batch.seq_len - start, 0)]
            if values:
                logprobs[row, start : start + len(values)] = torch.tensor(values, dtype=torch.float32)
        return logprobs * batch.loss_mask.float()


def sample_rows(rollouts: RolloutBatch, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of ``train_data_step{N}.jsonl`` / ``val_data_step{N}.jsonl`` (the first ``limit`` samples)."""
    return [
        {"problem": p.record.problem, "answer": p.record.answer, "response": s.text, "reward": r, "finish_reason": s.finish_reason}
        for p, s, r in list(zip(rollouts.prompts, rollouts.samples, rollouts.rewards))[:limit]
    ]


def _empty_sample(prompt_index: int) -> GeneratedSample:
    return GeneratedSample(prompt_index=prompt_index, response_token_ids=[], response_logprobs=[], text="", finish_reason="length")


def generate_rollouts(
    generation,
    prompts: list[ProcessedPrompt],
    sampling: SamplingParams,
    *,
    environment,
    pad_token_id: int,
    max_total_length: int,
) -> RolloutBatch:
    """Sample ``sampling.n`` responses per prompt, score them, and build the training batch.

    ``generation`` is anything with ``generate(GenerationRequest) -> GenerationOutput`` (the
    generation worker group). Prompts flagged ``too_long`` are not generated for: they keep an
    empty response and sample mask 0, so batch shapes stay fixed for data-parallel sharding.
    """
    runnable = [i for i, prompt in enumerate(prompts) if not prompt.too_long]
    samples_per_prompt: dict[int, list[GeneratedSample]] = {i: [] for i in range(len(prompts))}
    if runnable:
        output = generation.generate(GenerationRequest(prompt_token_ids=[prompts[i].prompt_token_ids for i in runnable], sampling=sampling))
        for sample in output.samples:
            original_index = runnable[sample.prompt_index]
            sample.prompt_index = original_index
            samples_per_prompt[original_index].append(sample)
    for i in range(len(prompts)):
        if not samples_per_prompt[i]:
            samples_per_prompt[i] = [_empty_sample(i) for _ in range(sampling.n)]

    sample_prompts = [prompts[i] for i in range(len(prompts)) for _ in range(sampling.n)]
    samples = [sample for i in range(len(prompts)) for sample in samples_per_prompt[i]]
    result = environment.evaluate([s.text for s in samples], [p.record.answer for p in sample_prompts])
    rewards = list(result.rewards)
    sample_mask = [0.0 if prompt.too_long else 1.0 for prompt in sample_prompts]
    token_batch, prompt_lengths = build_token_batch(
        [p.prompt_token_ids for p in sample_prompts],
        [s.response_token_ids for s in samples],
        pad_token_id=pad_token_id,
        sample_mask=sample_mask,
        max_total_length=max_total_length,
    )
    generated = [s for s, p in zip(samples, sample_prompts) if not p.too_long]
    num_generated = max(len(generated), 1)
    metrics = {
        "mean_gen_tokens_per_sample": sum(len(s.response_token_ids) for s in generated) / num_generated,
        "truncation_rate": sum(s.finish_reason == "length" for s in generated) / num_generated,
        "natural_termination_rate": sum(s.finish_reason == "stop" for s in generated) / num_generated,
        "reward_mean": sum(rewards) / max(len(rewards), 1),
        "prompts_too_long": float(sum(p.too_long for p in prompts)),
        **result.metrics,
    }
    return RolloutBatch(sample_prompts, samples, rewards, token_batch, prompt_lengths, metrics)
