"""generate_rollouts' stopping metrics: ``truncation_rate`` counts exactly the samples that ended
without EOS or stop string (``finish_reason == "length"``), ``natural_termination_rate`` the others;
prompts too long to generate for count in neither (hand-counted)."""

from __future__ import annotations

from nemo_distill.algorithms.rollouts import generate_rollouts
from nemo_distill.data.processors import ProcessedPrompt
from nemo_distill.data.records import ProblemRecord
from nemo_distill.environments.config import EnvConfig
from nemo_distill.environments.registry import build_environment
from nemo_distill.models.generation.interfaces import GeneratedSample, GenerationOutput, SamplingParams

EOS, PAD = 2, 0


class ScriptedGeneration:
    """Returns fixed samples ``(tokens, text, finish_reason)`` per generated prompt, n per prompt."""

    def __init__(self, script: list[list[tuple[list[int], str, str]]]):
        self.script = script
        self.requests = []

    def generate(self, request) -> GenerationOutput:
        self.requests.append(request)
        samples = [GeneratedSample(i, tokens, [-0.1] * len(tokens), text, reason)
                   for i, rows in enumerate(self.script) for tokens, text, reason in rows]
        return GenerationOutput(samples=samples)


def _prompt(answer: str, too_long: bool = False) -> ProcessedPrompt:
    record = ProblemRecord(problem=f"q{answer}", answer=answer, record_id=f"t-{answer}")
    return ProcessedPrompt(record=record, user_message=record.problem, prompt_text=record.problem, prompt_token_ids=[5, 6, 7],
                           too_long=too_long)


def test_truncation_counts_only_samples_without_eos_or_stop_string():
    script = [
        [([9, 9, EOS], "x", "stop"),            # EOS
         ([9, 9, 9, 9], "\\boxed{1}", "length")],  # budget ran out (even with a correct answer)
        [([EOS], "", "stop"),                   # empty response: EOS first
         ([9, 9], "so \\boxed{2}", "stop")],    # a stop string
    ]
    generation = ScriptedGeneration(script)
    prompts = [_prompt("1"), _prompt("7", too_long=True), _prompt("2")]
    rollouts = generate_rollouts(generation, prompts, SamplingParams(temperature=1.0, n=2, max_new_tokens=4),
                                 environment=build_environment(EnvConfig()), pad_token_id=PAD, max_total_length=32)
    # the too-long prompt was never sent to the generation workers
    assert [len(p) for p in generation.requests[0].prompt_token_ids] == [3, 3]
    assert [s.finish_reason for s in rollouts.samples] == ["stop", "length", "length", "length", "stop", "stop"]
    # 4 generated samples: 1 truncated, 3 stopped by themselves; the 2 placeholder samples count in neither
    assert rollouts.metrics["truncation_rate"] == 1 / 4
    assert rollouts.metrics["natural_termination_rate"] == 3 / 4
    assert rollouts.metrics["mean_gen_tokens_per_sample"] == (3 + 4 + 1 + 2) / 4
    assert rollouts.metrics["prompts_too_long"] == 1.0
    assert rollouts.token_batch.sample_mask.tolist() == [1, 1, 0, 0, 1, 1]
    assert rollouts.rewards == [0.0, 1.0, 0.0, 0.0, 0.0, 1.0]  # the empty response scores 0, a truncated right answer 1
    assert rollouts.token_batch.loss_mask.sum(dim=1).tolist() == [3, 4, 0, 0, 1, 2]


def test_every_prompt_too_long_gives_zero_rates_not_a_division_error():
    generation = ScriptedGeneration([])
    rollouts = generate_rollouts(generation, [_prompt("1", too_long=True)], SamplingParams(temperature=1.0, n=2, max_new_tokens=4),
                                 environment=build_environment(EnvConfig()), pad_token_id=PAD, max_total_length=32)
    assert generation.requests == []
    assert rollouts.metrics["truncation_rate"] == 0.0 and rollouts.metrics["natural_termination_rate"] == 0.0
