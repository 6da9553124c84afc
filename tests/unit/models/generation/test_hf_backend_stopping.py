"""Generation edge cases on a real (tiny) HFGenerationWorker, in-process: max_new_tokens bounds every
sample, an EOS as the first token gives an empty response ("stop"), an EOS at the last allowed token
is "stop" (not a truncation), and the rollout metrics count only samples without EOS or stop string
as truncated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_distill.algorithms.rollouts import generate_rollouts
from nemo_distill.data.processors import ProcessedPrompt
from nemo_distill.data.records import ProblemRecord
from nemo_distill.environments.config import EnvConfig
from nemo_distill.environments.registry import build_environment
from nemo_distill.models.generation.config import GenerationConfig
from nemo_distill.models.generation.hf_backend import HFGenerationWorker, finalize_response
from nemo_distill.models.generation.interfaces import GenerationRequest, SamplingParams

PROMPT_TEXTS = ["Hello there, how are", "The capital of France is a city called"]


@pytest.fixture(scope="module")
def worker(tiny_model_dir) -> HFGenerationWorker:
    return HFGenerationWorker(tiny_model_dir, GenerationConfig(), precision="float32")


@pytest.fixture(scope="module")
def prompts(worker) -> list[list[int]]:
    return [worker.tokenizer.encode(text) for text in PROMPT_TEXTS]


def generate(worker, prompts, **sampling):
    return worker.generate(GenerationRequest(prompts, SamplingParams(**sampling))).samples


def with_extra_eos(model_dir: str, target: Path, eos: int) -> HFGenerationWorker:
    """A worker on the same weights whose generation_config.json declares ``eos`` an EOS token too."""
    source = Path(model_dir)
    target.mkdir()
    for item in source.iterdir():
        if item.name != "generation_config.json":
            (target / item.name).symlink_to(item)
    config = json.loads((source / "generation_config.json").read_text())
    config["eos_token_id"] = [config["eos_token_id"], eos]
    (target / "generation_config.json").write_text(json.dumps(config))
    return HFGenerationWorker(str(target), GenerationConfig(), precision="float32")


@pytest.mark.parametrize("max_new_tokens", [1, 6])
def test_max_new_tokens_bounds_every_sampled_response(worker, prompts, max_new_tokens):
    samples = generate(worker, prompts, temperature=1.0, n=3, seed=0, max_new_tokens=max_new_tokens)
    assert len(samples) == 6
    for sample in samples:
        assert 1 <= len(sample.response_token_ids) <= max_new_tokens
        assert len(sample.response_logprobs) == len(sample.response_token_ids)
        ended_by_eos = sample.response_token_ids[-1] in worker.eos_token_ids
        # "length" exactly when the budget ran out without an EOS
        assert (sample.finish_reason == "length") == (len(sample.response_token_ids) == max_new_tokens and not ended_by_eos)


def test_eos_as_the_first_token_gives_an_empty_response_that_is_not_truncated(worker, prompts, tiny_model_dir, tmp_path):
    [full] = generate(worker, prompts[:1], temperature=0.0, max_new_tokens=4)
    first = full.response_token_ids[0]
    eos_worker = with_extra_eos(tiny_model_dir, tmp_path / "eos_first", first)
    [empty] = generate(eos_worker, prompts[:1], temperature=0.0, max_new_tokens=4)
    assert empty.response_token_ids == [first]  # the EOS is kept in the tokens (it is trained on)...
    assert empty.text == ""  # ...and skipped in the text
    assert empty.finish_reason == "stop"

    # through the rollout: scored (reward 0, no answer), not truncated, the EOS in the loss mask
    record = ProblemRecord(problem="p", answer="4", record_id="t-0")
    prompt = ProcessedPrompt(record=record, user_message="p", prompt_text=PROMPT_TEXTS[0], prompt_token_ids=prompts[0], too_long=False)
    rollouts = generate_rollouts(eos_worker, [prompt], SamplingParams(temperature=0.0, max_new_tokens=4),
                                 environment=build_environment(EnvConfig()), pad_token_id=eos_worker.pad_token_id,
                                 max_total_length=64)
    assert rollouts.rewards == [0.0]
    assert rollouts.metrics["truncation_rate"] == 0.0 and rollouts.metrics["natural_termination_rate"] == 1.0
    assert rollouts.metrics["mean_gen_tokens_per_sample"] == 1.0
    assert rollouts.token_batch.loss_mask[0].sum().item() == 1


def test_eos_at_the_last_allowed_token_is_a_stop_not_a_truncation(worker, prompts, tiny_model_dir, tmp_path):
    budget = 6
    [full] = generate(worker, prompts[:1], temperature=0.0, max_new_tokens=budget)
    assert full.finish_reason == "length" and len(full.response_token_ids) == budget
    last = full.response_token_ids[-1]
    if last in full.response_token_ids[:-1]:
        pytest.fail("the greedy response repeats its last token; pick another prompt for this test")
    eos_worker = with_extra_eos(tiny_model_dir, tmp_path / "eos_last", last)
    [stopped] = generate(eos_worker, prompts[:1], temperature=0.0, max_new_tokens=budget)
    assert stopped.response_token_ids == full.response_token_ids
    assert stopped.finish_reason == "stop"


def test_a_stop_string_in_the_last_allowed_token_is_a_stop(worker, prompts):
    budget = 5
    [full] = generate(worker, prompts[1:], temperature=0.0, max_new_tokens=budget)
    decode = lambda ids: worker.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    added = decode(full.response_token_ids)[len(decode(full.response_token_ids[:-1])):]
    stop = added.strip()[:1] or added[:1]
    assert stop and stop not in decode(full.response_token_ids[:-1]), "the last token's text also occurs earlier"
    [cut] = generate(worker, prompts[1:], temperature=0.0, max_new_tokens=budget, stop_strings=[stop])
    assert cut.response_token_ids == full.response_token_ids and cut.finish_reason == "stop"
    assert cut.text.endswith(stop)


@pytest.mark.parametrize("stop_strings", [None, ["a"]])
def test_finalize_response_lone_eos_is_an_empty_stop(stop_strings):
    tokens, logprobs, text, reason = finalize_response([7], [-0.5], eos_token_ids={7}, stop_strings=stop_strings,
                                                       decode=lambda ids: "".join("a" for i in ids if i != 7))
    assert (tokens, logprobs, text, reason) == ([7], [-0.5], "", "stop")
