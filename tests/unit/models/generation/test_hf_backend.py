"""HFGenerationWorker on a tiny random Qwen3: sampling, log-probs, stopping, seeds, weights, sleep."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from nemo_distill.models.generation.config import GenerationConfig
from nemo_distill.models.generation.hf_backend import HFGenerationWorker, finalize_response
from nemo_distill.models.loading import resolve_dtype
from nemo_distill.models.generation.interfaces import GenerationRequest, SamplingParams

PROMPT_TEXTS = ["Hello there, how are", "The capital of France is a city called", "Hi"]
LOGPROB_TOLERANCE = 1e-4  # fp32, left-padded KV-cache decode vs one unpadded forward (interfaces docstring)
# Workers run in fp32 even where a GPU would make "auto" pick bf16: these tests compare exact argmaxes.


@pytest.fixture(scope="module")
def worker(tiny_model_dir) -> HFGenerationWorker:
    return HFGenerationWorker(tiny_model_dir, GenerationConfig(), precision="float32")


@pytest.fixture(scope="module")
def prompts(worker) -> list[list[int]]:
    prompts = [worker.tokenizer.encode(text) for text in PROMPT_TEXTS]
    assert len({len(p) for p in prompts}) == len(prompts)  # different lengths: left padding matters
    return prompts


def generate(worker, prompts, **sampling) -> list:
    return worker.generate(GenerationRequest(prompts, SamplingParams(**sampling))).samples


def reference_logits(model, prompt: list[int], response: list[int]) -> torch.Tensor:
    """``[len(response), V]`` float64 CPU logits predicting each response token, from one unpadded forward."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + response], device=model.device)).logits[0].double().cpu()
    return logits[len(prompt) - 1 : len(prompt) - 1 + len(response)]


def test_shapes_counts_and_prompt_major_order(worker, prompts):
    samples = generate(worker, prompts, temperature=1.0, max_new_tokens=6, n=3, seed=0)
    assert [s.prompt_index for s in samples] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for sample in samples:
        assert 1 <= len(sample.response_token_ids) <= 6
        assert len(sample.response_logprobs) == len(sample.response_token_ids)
        assert all(lp <= 0.0 and math.isfinite(lp) for lp in sample.response_logprobs)
        if sample.finish_reason == "length":
            assert len(sample.response_token_ids) == 6
        assert sample.text == worker.tokenizer.decode(sample.response_token_ids, skip_special_tokens=True)
    # the n samples of one prompt are independent draws
    assert len({tuple(s.response_token_ids) for s in samples[:3]}) > 1


def test_greedy_is_argmax_of_raw_logits_and_logprobs_match_a_forward(worker, prompts):
    samples = generate(worker, prompts, temperature=0.0, max_new_tokens=8, n=2)
    assert [s.prompt_index for s in samples] == [0, 0, 1, 1, 2, 2]
    assert samples[0].response_token_ids == samples[1].response_token_ids  # greedy: n identical samples
    for sample in samples:
        logits = reference_logits(worker.model, prompts[sample.prompt_index], sample.response_token_ids)
        assert sample.response_token_ids == logits.argmax(dim=-1).tolist()
        expected = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(sample.response_token_ids)[:, None]).squeeze(1)
        torch.testing.assert_close(torch.tensor(sample.response_logprobs, dtype=torch.float64), expected, atol=LOGPROB_TOLERANCE, rtol=0)


def test_sampled_logprobs_are_raw_and_filters_apply(worker, prompts):
    top_k = 20
    samples = generate(worker, prompts, temperature=0.7, top_k=top_k, top_p=0.9, max_new_tokens=8, n=2, seed=3)
    for sample in samples:
        logits = reference_logits(worker.model, prompts[sample.prompt_index], sample.response_token_ids)
        tokens = torch.tensor(sample.response_token_ids)[:, None]
        raw = torch.log_softmax(logits, dim=-1).gather(1, tokens).squeeze(1)  # temperature 1, unfiltered
        torch.testing.assert_close(torch.tensor(sample.response_logprobs, dtype=torch.float64), raw, atol=LOGPROB_TOLERANCE, rtol=0)
        # top-k was applied: every sampled token is among the k largest raw logits
        rank = (logits > logits.gather(1, tokens)).sum(dim=1)
        assert int(rank.max()) < top_k


def test_top_k_one_sampling_equals_greedy(worker, prompts):
    greedy = generate(worker, prompts, temperature=0.0, max_new_tokens=6)
    sampled = generate(worker, prompts, temperature=1.3, top_k=1, max_new_tokens=6, seed=11)
    assert [s.response_token_ids for s in sampled] == [s.response_token_ids for s in greedy]


def test_seed_makes_runs_reproducible_and_calls_differ(tiny_model_dir, worker, prompts):
    other = HFGenerationWorker(tiny_model_dir, GenerationConfig(), precision="float32")
    calls = [dict(temperature=1.0, max_new_tokens=6, n=2, seed=123)] * 2
    first_run = [[s.response_token_ids for s in generate(other, prompts, **kwargs)] for kwargs in calls]
    other.num_generate_calls = 0  # a fresh worker's state: its first call again
    second_run = [[s.response_token_ids for s in generate(other, prompts, **kwargs)] for kwargs in calls]
    assert first_run == second_run  # same seed, same call sequence -> same samples
    assert first_run[0] != first_run[1]  # the k-th call uses seed + k: no repeated samples across steps
    different_seed = [s.response_token_ids for s in generate(other, prompts, temperature=1.0, max_new_tokens=6, n=2, seed=124)]
    assert different_seed != first_run[0]


def test_stop_string_cuts_tokens_and_text(worker, prompts):
    [full] = generate(worker, prompts[:1], temperature=0.0, max_new_tokens=12)
    decode = lambda ids: worker.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    # a stop string made of the first characters that a later token (the 5th or after) adds
    position = next(j for j in range(4, 12) if len(decode(full.response_token_ids[: j + 1])) > len(decode(full.response_token_ids[:j])))
    stop = decode(full.response_token_ids[: position + 1])[len(decode(full.response_token_ids[:position])) :][:2]
    shortest = next(k for k in range(1, 13) if stop in decode(full.response_token_ids[:k]))  # brute force
    [cut] = generate(worker, prompts[:1], temperature=0.0, max_new_tokens=12, stop_strings=["@never@", stop])
    assert cut.finish_reason == "stop"
    assert cut.response_token_ids == full.response_token_ids[:shortest]
    assert cut.response_logprobs == pytest.approx(full.response_logprobs[:shortest], abs=1e-6)
    full_text = decode(full.response_token_ids)
    assert cut.text == full_text[: full_text.index(stop) + len(stop)]


@pytest.fixture(scope="module")
def eos_model_dir(tiny_model_dir, tmp_path_factory) -> tuple[str, int]:
    """The tiny model, with the greedy response's 4th token declared an extra EOS in generation_config.json."""
    source = Path(tiny_model_dir)
    target = tmp_path_factory.mktemp("tiny_eos")
    for item in source.iterdir():
        if item.name != "generation_config.json":
            (target / item.name).symlink_to(item)
    return str(target), json.loads((source / "generation_config.json").read_text())


def test_eos_from_generation_config_stops_with_reason_stop(worker, prompts, eos_model_dir):
    target, generation_config = eos_model_dir
    [full] = generate(worker, prompts[:1], temperature=0.0, max_new_tokens=10)
    eos = full.response_token_ids[3]
    stop_at = full.response_token_ids.index(eos)
    generation_config["eos_token_id"] = [generation_config["eos_token_id"], eos]
    (Path(target) / "generation_config.json").write_text(json.dumps(generation_config))
    eos_worker = HFGenerationWorker(target, GenerationConfig(), precision="float32")
    assert eos in eos_worker.eos_token_ids and worker.tokenizer.eos_token_id in eos_worker.eos_token_ids
    [stopped] = generate(eos_worker, prompts[:1], temperature=0.0, max_new_tokens=10)
    assert stopped.finish_reason == "stop"
    assert stopped.response_token_ids == full.response_token_ids[: stop_at + 1]  # EOS kept
    assert full.finish_reason == "length" and len(full.response_token_ids) == 10


def test_chunking_by_max_batch_size_keeps_results(tiny_model_dir, worker, prompts):
    chunked = HFGenerationWorker(tiny_model_dir, GenerationConfig(max_batch_size=1), precision="float32")
    expected = generate(worker, prompts, temperature=0.0, max_new_tokens=5, n=2)
    got = generate(chunked, prompts, temperature=0.0, max_new_tokens=5, n=2)
    assert [(s.prompt_index, s.response_token_ids) for s in got] == [(s.prompt_index, s.response_token_ids) for s in expected]


def test_static_cache_with_padded_rows_and_prompts_gives_the_same_samples(tiny_model_dir, worker, prompts):
    # 3 prompts x 2 samples in chunks of 4 rows: chunk 2 holds 1 real prompt and 1 padding copy;
    # prompts are left-padded to 16 tokens. Greedy tokens and raw log-probs must not change.
    static = HFGenerationWorker(tiny_model_dir, GenerationConfig(max_batch_size=4, hf_static_cache=True, static_cache_pad_to=16),
                                precision="float32")
    for sampling in ({"temperature": 0.0, "n": 2}, {"temperature": 1.0, "n": 2, "top_k": 1}):
        expected = generate(worker, prompts, max_new_tokens=5, **sampling)
        got = generate(static, prompts, max_new_tokens=5, **sampling)
        assert [(s.prompt_index, s.response_token_ids) for s in got] == [(s.prompt_index, s.response_token_ids) for s in expected]
        for a, b in zip(got, expected):
            assert a.response_logprobs == pytest.approx(b.response_logprobs, abs=LOGPROB_TOLERANCE)


def test_left_pad_rounds_up_to_a_multiple():
    from nemo_distill.data.collate import left_pad

    input_ids, attention_mask = left_pad([[5, 6, 7], [8]], pad_token_id=0, multiple_of=4)
    assert input_ids.tolist() == [[0, 5, 6, 7], [0, 0, 0, 8]] and attention_mask.sum(1).tolist() == [3, 1]
    assert left_pad([[1] * 5], 0, multiple_of=4)[0].shape == (1, 8)
    with pytest.raises(ValueError, match="multiple_of must be >= 1"):
        left_pad([[1]], 0, multiple_of=0)


def test_update_weights_switches_the_model(tiny_model_dir, worker, prompts, tmp_path_factory):
    from nemo_distill.models.loading import load_causal_lm
    from nemo_distill.models.tiny import build_tiny_model

    other_dir = build_tiny_model(tmp_path_factory.mktemp("tiny_seed1"), seed=1)
    target = HFGenerationWorker(tiny_model_dir, GenerationConfig(), precision="float32")
    reference = HFGenerationWorker(other_dir, GenerationConfig(), precision="float32")
    state = load_causal_lm(other_dir).state_dict()
    names = list(state)
    buckets = [{name: state[name] for name in names[:5]}, {name: state[name] for name in names[5:]}]
    stats = target.update_weights(iter(buckets))
    assert (stats.num_buckets, stats.num_tensors) == (2, len(names))
    assert stats.num_bytes == sum(t.numel() * t.element_size() for t in state.values())
    expected = [s.response_token_ids for s in generate(reference, prompts, temperature=0.0, max_new_tokens=6)]
    assert [s.response_token_ids for s in generate(target, prompts, temperature=0.0, max_new_tokens=6)] == expected
    assert expected != [s.response_token_ids for s in generate(worker, prompts, temperature=0.0, max_new_tokens=6)]


def test_update_weights_errors_name_the_tensor(tiny_model_dir):
    target = HFGenerationWorker(tiny_model_dir, GenerationConfig(), precision="float32")
    params = dict(target.model.named_parameters())
    name = "model.norm.weight"
    with pytest.raises(KeyError, match="no parameter or buffer named 'model.nrom.weight'"):
        target.update_weights([{"model.nrom.weight": params[name]}])
    with pytest.raises(ValueError, match=r"'model.norm.weight' has shape \(3,\), the generation model expects \(64,\)"):
        target.update_weights([{name: torch.zeros(3)}])
    with pytest.raises(ValueError, match=r"parameter\(s\) were not in any bucket, e.g. \['model.embed_tokens.weight'"):
        target.update_weights([{name: torch.full((64,), 2.0)}])
    stats = target.update_weights([{name: torch.full((64,), 2.0, dtype=torch.float64)}], strict=False)
    assert stats.num_tensors == 1 and torch.equal(params[name].cpu(), torch.full((64,), 2.0))  # cast to the model's dtype


def test_tied_parameters_count_as_loaded_under_either_name(tiny_model_dir):
    target = HFGenerationWorker(tiny_model_dir, GenerationConfig(), precision="float32")
    target.model.lm_head.weight = target.model.model.embed_tokens.weight  # tie them, as tied checkpoints do
    state = {name: p.detach().clone() + 1 for name, p in target.model.named_parameters() if name != "lm_head.weight"}
    target.update_weights([state])  # strict passes: lm_head.weight shares embed_tokens.weight's storage
    assert torch.equal(target.model.lm_head.weight, state["model.embed_tokens.weight"])


def test_sleep_wake_lifecycle_on_cpu(tiny_model_dir, prompts):
    target = HFGenerationWorker(tiny_model_dir, GenerationConfig(), precision="float32")
    target.sleep()
    assert target.is_asleep
    samples = generate(target, prompts[:1], temperature=0.0, max_new_tokens=3)  # forgot wake_up(): still served
    assert len(samples) == 1 and target.is_asleep
    target.wake_up()
    assert not target.is_asleep
    assert target.get_lifecycle_events() == ["sleep", "auto_wake_up", "wake_up"]


def test_invalid_requests(worker, prompts):
    with pytest.raises(ValueError, match=r"prompts \[1\] are empty"):
        generate(worker, [prompts[0], []], temperature=0.0, max_new_tokens=2)
    with pytest.raises(ValueError, match=r"top_p=1.5 must be in \(0, 1\]"):
        generate(worker, prompts, top_p=1.5)
    assert generate(worker, [], temperature=0.0) == []


def test_resolve_dtype():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert resolve_dtype("auto", cpu) == torch.float32 and resolve_dtype("auto", gpu) == torch.bfloat16
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16 and resolve_dtype("float32", gpu) == torch.float32
    with pytest.raises(ValueError, match="precision 'fp16' is not one of"):
        resolve_dtype("fp16", cpu)


# -- finalize_response: hand-made rows, one character string per token ---------------------------

VOCAB = {1: "a", 2: "b", 3: "<eos>", 4: "cd", 5: "\n\nx", 6: "e"}


def decode(ids: list[int]) -> str:
    return "".join(VOCAB[i] for i in ids if i != 3)  # 3 is special: skipped like skip_special_tokens


def finalize(tokens, stop_strings=None):
    return finalize_response(tokens, [float(-i) for i in range(len(tokens))], eos_token_ids={3}, stop_strings=stop_strings, decode=decode)


@pytest.mark.parametrize(
    "tokens, stop_strings, expected_tokens, expected_text, reason",
    [
        ([1, 2, 4], None, [1, 2, 4], "abcd", "length"),
        ([1, 3, 2, 2], None, [1, 3], "a", "stop"),  # EOS kept in the tokens, skipped in the text
        ([1, 2, 4, 6], ["bc"], [1, 2, 4], "abc", "stop"),  # stop string spans tokens; text cut after it
        ([1, 5, 2, 3], ["\n"], [1, 5], "a\n", "stop"),  # the stopping token carries more than the stop string
        ([1, 3, 4], ["cd"], [1, 3], "a", "stop"),  # EOS first: the later stop string does not matter
        ([4, 1, 2, 3], ["ab", "d"], [4], "cd", "stop"),  # the earliest-ending stop string wins
        ([1, 2, 6], ["zz"], [1, 2, 6], "abe", "length"),
        ([], ["a"], [], "", "length"),
    ],
)
def test_finalize_response(tokens, stop_strings, expected_tokens, expected_text, reason):
    got_tokens, got_logprobs, text, got_reason = finalize(tokens, stop_strings)
    assert (got_tokens, text, got_reason) == (expected_tokens, expected_text, reason)
    assert got_logprobs == [float(-i) for i in range(len(expected_tokens))]


@pytest.mark.gpu
def test_gpu_bf16_generation_sleep_refit_and_wake(tiny_model_dir):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    worker = HFGenerationWorker(tiny_model_dir, GenerationConfig())  # auto precision: bf16 on GPU
    assert worker.dtype == torch.bfloat16 and next(worker.model.parameters()).device.type == "cuda"
    prompts = [worker.tokenizer.encode(text) for text in PROMPT_TEXTS]
    before = generate(worker, prompts, temperature=0.0, max_new_tokens=6, n=2)
    for sample in before:
        logits = reference_logits(worker.model, prompts[sample.prompt_index], sample.response_token_ids)
        expected = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(sample.response_token_ids)[:, None]).squeeze(1)
        torch.testing.assert_close(torch.tensor(sample.response_logprobs, dtype=torch.float64), expected, atol=5e-2, rtol=0)

    awake_bytes = torch.cuda.memory_allocated()
    weight_bytes = sum(p.numel() * p.element_size() for p in worker.model.parameters())
    state = {name: tensor.detach().cpu().clone() for name, tensor in worker.model.state_dict().items()}
    worker.sleep()
    assert all(p.device.type == "cpu" for p in worker.model.parameters())
    # The weights left the GPU (what stays, e.g. cuBLAS's workspace, is not the model's).
    assert awake_bytes - torch.cuda.memory_allocated() >= 0.9 * weight_bytes
    worker.update_weights([state])  # a refit while asleep lands in the CPU copy
    worker.wake_up()
    assert all(p.device.type == "cuda" for p in worker.model.parameters())
    after = generate(worker, prompts, temperature=0.0, max_new_tokens=6, n=2)
    assert [s.response_token_ids for s in after] == [s.response_token_ids for s in before]
