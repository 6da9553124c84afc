"""StaticCacheSampler and ``hf_sampler: loop``: our token loop over a static KV cache gives what
transformers' ``generate`` gives (greedy tokens, raw log-probs, EOS, stop strings, sampling filters),
on left-padded float64 models of two architectures, and inside HFGenerationWorker."""

from __future__ import annotations

import itertools

import pytest
import torch

from nemo_distill.data.collate import left_pad
from nemo_distill.models.generation.config import GenerationConfig
from nemo_distill.models.generation.hf_backend import HFGenerationWorker
from nemo_distill.models.generation.interfaces import GenerationRequest, SamplingParams
from nemo_distill.models.generation.static_decode import StaticCacheSampler
from nemo_distill.models.loading import load_causal_lm

PROMPTS = [[5, 6, 7, 8, 9], [11, 12], [3, 4, 5, 6, 7, 8, 9, 10, 40, 41]]  # uneven: left padding matters
PAD = 0


@pytest.fixture(scope="module", params=["qwen3", "llama"])
def model64(request, tiny_model_dir, tiny_llama_dir):
    path = tiny_model_dir if request.param == "qwen3" else tiny_llama_dir
    return load_causal_lm(path, dtype=torch.float64, device=torch.device("cpu")).eval()


def reference_greedy(model, prompt: list[int], steps: int, eos: set[int]) -> tuple[list[int], list[float]]:
    """Greedy continuation of one unpadded prompt by full forwards (no cache), float64, with log-probs."""
    tokens, logprobs = [], []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([prompt + tokens])).logits[0, -1]
            token = int(logits.argmax())
            tokens.append(token)
            logprobs.append(float(torch.log_softmax(logits, dim=-1)[token]))
            if token in eos:
                break
    return tokens, logprobs


def sample(model, prompts, *, check: int = 16, **kwargs):
    """Eager :class:`StaticCacheSampler` on left-padded ``prompts``; ``check`` is its ``finished_check_every``."""
    input_ids, attention_mask = left_pad(prompts, PAD)
    options = dict(max_new_tokens=8, greedy=True, processors=[], eos_token_ids=[], pad_token_id=PAD) | kwargs
    return StaticCacheSampler(model, compile_decode=False, finished_check_every=check).sample(input_ids, attention_mask, **options)


def test_greedy_tokens_and_logprobs_match_full_forwards(model64):
    tokens, logprobs = sample(model64, PROMPTS, max_new_tokens=8)
    assert tokens.shape == logprobs.shape == (3, 8) and logprobs.dtype == torch.float32
    for row, prompt in enumerate(PROMPTS):
        expected_tokens, expected_logprobs = reference_greedy(model64, prompt, 8, eos=set())
        assert tokens[row].tolist() == expected_tokens
        torch.testing.assert_close(logprobs[row].double(), torch.tensor(expected_logprobs, dtype=torch.float64), atol=1e-6, rtol=0)


def test_greedy_matches_transformers_generate(model64):
    from transformers import GenerationConfig as HFGenerationConfig

    input_ids, attention_mask = left_pad(PROMPTS, PAD)
    config = HFGenerationConfig(max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=PAD)
    with torch.no_grad():
        expected = model64.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
    tokens, _ = sample(model64, PROMPTS, max_new_tokens=10)
    assert torch.equal(tokens, expected[:, input_ids.shape[1]:])


def test_rows_after_eos_get_pad_and_zero_logprob_and_the_loop_stops(model64):
    free, _ = sample(model64, PROMPTS, max_new_tokens=8)
    eos = int(free[0, 2])  # row 0 emits it at step 2 (maybe others too)
    tokens, logprobs = sample(model64, PROMPTS, max_new_tokens=8, eos_token_ids=[eos])
    for row in range(3):
        reference, _ = reference_greedy(model64, PROMPTS[row], 8, eos={eos})
        assert tokens[row, : len(reference)].tolist() == reference
        assert (tokens[row, len(reference):] == PAD).all() and (logprobs[row, len(reference):] == 0).all()
    # every row finished: with a check every 2 steps, the loop ends at the first even step count after the last EOS
    every_row_eos, _ = sample(model64, [PROMPTS[0]] * 2, max_new_tokens=8, eos_token_ids=[eos], check=2)
    assert every_row_eos.shape[1] == 4 and every_row_eos[:, 2].tolist() == [eos, eos]


def test_processors_see_raw_logits_and_logprobs_stay_raw(model64):
    seen = []

    def keep_two_smallest(_, scores):  # a filter greedy would never pick: proves the processed scores choose the token
        seen.append(scores.clone())
        kept = torch.full_like(scores, float("-inf"))
        smallest = scores.topk(2, dim=-1, largest=False).indices
        return kept.scatter(1, smallest, scores.gather(1, smallest))

    tokens, logprobs = sample(model64, PROMPTS, max_new_tokens=3, processors=[keep_two_smallest])
    for step in range(3):
        raw = seen[step]
        assert (raw.gather(1, tokens[:, step:step + 1]) <= raw.topk(2, dim=-1, largest=False).values[:, 1:]).all()
        torch.testing.assert_close(logprobs[:, step], torch.log_softmax(raw, -1).gather(1, tokens[:, step:step + 1]).squeeze(1))


def test_bad_arguments(model64):
    with pytest.raises(ValueError, match="finished_check_every"):
        StaticCacheSampler(model64, compile_decode=False, finished_check_every=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        sample(model64, PROMPTS, max_new_tokens=0)


# -- inside HFGenerationWorker -------------------------------------------------------------------


@pytest.fixture(scope="module")
def workers(tiny_model_dir):
    generate = HFGenerationWorker(tiny_model_dir, GenerationConfig(max_batch_size=4), precision="float32")
    # hf_static_cache pads rows and prompt lengths on CPU too (the GPU's compiled shapes), so the padding is tested here
    loop = HFGenerationWorker(tiny_model_dir, GenerationConfig(max_batch_size=4, hf_sampler="loop", hf_static_cache=True,
                                                               static_cache_pad_to=16), precision="float32")
    texts = ["Hello there, how are", "The capital of France is a city called", "Hi"]
    return generate, loop, [generate.tokenizer.encode(text) for text in texts]


def run(worker, prompts, **sampling):
    return worker.generate(GenerationRequest(prompts, SamplingParams(**sampling))).samples


def test_worker_loop_gives_generates_greedy_samples_with_and_without_padding(tiny_model_dir, workers):
    generate, padded_loop, prompts = workers
    unpadded_loop = HFGenerationWorker(tiny_model_dir, GenerationConfig(max_batch_size=4, hf_sampler="loop"), precision="float32")
    # 3 prompts x 2 in chunks of 4 rows: padded, the second chunk holds one real prompt and a padding copy
    for loop, sampling in itertools.product([padded_loop, unpadded_loop],
                                            ({"temperature": 0.0, "n": 2}, {"temperature": 1.3, "n": 2, "top_k": 1, "seed": 5})):
        expected = run(generate, prompts, max_new_tokens=6, **sampling)
        got = run(loop, prompts, max_new_tokens=6, **sampling)
        assert [(s.prompt_index, s.response_token_ids, s.finish_reason) for s in got] == \
            [(s.prompt_index, s.response_token_ids, s.finish_reason) for s in expected]
        for a, b in zip(got, expected):
            assert a.response_logprobs == pytest.approx(b.response_logprobs, abs=1e-4)


def test_worker_loop_sampling_is_seeded_filtered_and_raw(workers):
    _, loop, prompts = workers
    first = run(loop, prompts, temperature=0.7, top_k=20, top_p=0.9, max_new_tokens=6, n=2, seed=3)
    loop.num_generate_calls -= 1  # the same call again
    again = run(loop, prompts, temperature=0.7, top_k=20, top_p=0.9, max_new_tokens=6, n=2, seed=3)
    assert [s.response_token_ids for s in first] == [s.response_token_ids for s in again]
    assert len({tuple(s.response_token_ids) for s in first}) > 1
    for s in first:
        with torch.no_grad():
            logits = loop.model(torch.tensor([prompts[s.prompt_index] + s.response_token_ids])).logits[0].double()
        logits = logits[len(prompts[s.prompt_index]) - 1: -1]
        chosen = torch.tensor(s.response_token_ids)[:, None]
        raw = torch.log_softmax(logits, -1).gather(1, chosen).squeeze(1)
        torch.testing.assert_close(torch.tensor(s.response_logprobs, dtype=torch.float64), raw, atol=1e-4, rtol=0)
        assert int((logits > logits.gather(1, chosen)).sum(dim=1).max()) < 20  # top-k applied


def test_worker_loop_cuts_at_stop_strings_and_eos_like_generate(workers):
    generate, loop, prompts = workers
    [full] = run(generate, prompts[:1], temperature=0.0, max_new_tokens=12)
    text = generate.tokenizer.decode(full.response_token_ids[:6], skip_special_tokens=True)
    stop = text[-3:] if text.strip() else text
    expected = run(generate, prompts, temperature=0.0, max_new_tokens=12, stop_strings=[stop])
    got = run(loop, prompts, temperature=0.0, max_new_tokens=12, stop_strings=[stop])
    assert [(s.response_token_ids, s.text, s.finish_reason) for s in got] == \
        [(s.response_token_ids, s.text, s.finish_reason) for s in expected]
    assert got[0].finish_reason == "stop"


@pytest.mark.gpu
def test_gpu_compiled_loop_survives_sleep_and_refit(tiny_model_dir):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    loop = HFGenerationWorker(tiny_model_dir, GenerationConfig(max_batch_size=4, hf_sampler="loop"), precision="float32")
    eager = HFGenerationWorker(tiny_model_dir, GenerationConfig(max_batch_size=4), precision="float32")
    prompts = [loop.tokenizer.encode(text) for text in ["Hello there, how are", "Hi"]]
    before = run(loop, prompts, temperature=0.0, max_new_tokens=8)
    assert loop._static_sampler.compiled
    assert [s.response_token_ids for s in before] == [s.response_token_ids for s in run(eager, prompts, temperature=0.0, max_new_tokens=8)]
    # new weights while asleep: the replayed graph must read them after wake_up (the parameters moved)
    state = {name: tensor.detach().cpu() * 1.5 for name, tensor in loop.model.state_dict().items()}
    loop.sleep()
    loop.update_weights([state])
    loop.wake_up()
    eager.update_weights([state])
    after = run(loop, prompts, temperature=0.0, max_new_tokens=8)
    assert [s.response_token_ids for s in after] == [s.response_token_ids for s in run(eager, prompts, temperature=0.0, max_new_tokens=8)]
    assert [s.response_token_ids for s in after] != [s.response_token_ids for s in before]
