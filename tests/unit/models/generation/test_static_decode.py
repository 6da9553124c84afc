"""StaticCacheSampler and ``hf_sampler: loop``: our token loop over a static KV cache gives what
transformers' ``generate`` gives (greedy tokens, raw log-probs, EOS, stop strings, sampling filters),
on left-padded float64 models of two architectures, and inside HFGenerationWorker. The shared
sampling step draws from the processed softmax (chi-square), and the fused step compiled by inductor
on CPU (``fuse_sampling``) gives the eager loop's greedy results and the same sampling distribution."""

from __future__ import annotations

import itertools

import pytest
import torch

from nemo_distill.data.collate import left_pad
from nemo_distill.models.generation.config import GenerationConfig
from nemo_distill.models.generation.hf_backend import HFGenerationWorker
from nemo_distill.models.generation.interfaces import GenerationRequest, SamplingParams
from nemo_distill.models.generation.static_decode import StaticCacheSampler, sample_next_token
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
    assert not StaticCacheSampler(model64, compile_decode=False, fuse_sampling=True).fused  # nothing to fuse into


def test_non_finite_logits_raise_a_clear_error(tiny_model_dir):
    """``generate``'s multinomial refuses NaN logits; the loop's argmax would not, so the sampler checks."""
    model = load_causal_lm(tiny_model_dir, dtype=torch.float32, device=torch.device("cpu")).eval()
    tokens, logprobs = sample(model, PROMPTS, max_new_tokens=3)  # healthy first
    assert torch.isfinite(logprobs).all()
    with torch.no_grad():
        model.get_output_embeddings().weight[7] = float("nan")  # every row's logits get a NaN: log-softmax is NaN
    for greedy in (True, False):
        with pytest.raises(FloatingPointError, match=r"non-finite log-probs in rows \[0, 1, 2\] \(row 0 from new token 0"):
            sample(model, PROMPTS, max_new_tokens=3, greedy=greedy)


# -- the sampling step: distribution, EOS, and fused into the compiled decode step ------------------


def warpers(temperature: float, top_k: int, top_p: float) -> list:
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    return [TemperatureLogitsWarper(temperature), TopKLogitsWarper(top_k=top_k), TopPLogitsWarper(top_p=top_p)]


def processed_softmax(logits: torch.Tensor, processors) -> torch.Tensor:
    """``[G, V]`` float64 probabilities the draw should follow: softmax of the processed fp32 logits."""
    scores = logits.float()
    for processor in processors:
        scores = processor(None, scores)
    return torch.softmax(scores.double(), dim=-1)


def chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson p-value of ``counts`` ``[G, V]`` (draws per group and token) against ``probs`` ``[G, V]``.

    Per group, cells expecting fewer than 5 draws are pooled into one; a draw where the expected
    count is 0 gives p = 0.
    """
    from scipy.stats import chi2

    statistic, dof = 0.0, 0
    for observed, p in zip(counts.double(), probs.double()):
        expected = observed.sum() * p
        if (observed[expected == 0] > 0).any():
            return 0.0
        big = expected >= 5
        cells_observed = [*observed[big].tolist(), float(observed[~big].sum())]
        cells_expected = [*expected[big].tolist(), float(expected[~big].sum())]
        if cells_expected[-1] == 0:
            cells_observed.pop(), cells_expected.pop()
        statistic += sum((o - e) ** 2 / e for o, e in zip(cells_observed, cells_expected))
        dof += len(cells_expected) - 1
    return float(chi2.sf(statistic, max(dof, 1)))


def assert_matches_only(counts: torch.Tensor, probs: torch.Tensor, wrong: dict[str, torch.Tensor]) -> None:
    """``counts`` fit ``probs`` (p > 1e-4, seeded) and none of the ``wrong`` distributions (p < 1e-9)."""
    assert chi_square_p_value(counts, probs) > 1e-4
    for name, alternative in wrong.items():
        assert chi_square_p_value(counts, alternative) < 1e-9, f"the draws also fit {name}: the test could not fail"


def wrong_distributions(logits: torch.Tensor, probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """What a broken draw would follow: argmax only, uniform over the kept tokens, the unprocessed softmax."""
    support = (probs > 0).double()
    return {"argmax": torch.nn.functional.one_hot(probs.argmax(-1), probs.shape[-1]).double(),
            "uniform over the kept tokens": support / support.sum(-1, keepdim=True),
            "the raw softmax": torch.softmax(logits.double(), dim=-1)}


def test_the_random_draw_follows_the_processed_softmax():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 10, generator=generator, dtype=torch.float64) * 1.5  # a float64 model's logits
    processors = warpers(temperature=0.7, top_k=7, top_p=0.97)
    rows = 20000
    torch.manual_seed(0)
    finished = torch.zeros(rows, dtype=torch.bool)
    token, logprob, _ = sample_next_token(logits.expand(rows, -1), finished, torch.tensor([], dtype=torch.long),
                                          greedy=False, processors=processors, pad_token_id=PAD)
    probs = processed_softmax(logits, processors)
    assert 2 < int((probs > 0).sum()) < 7  # top-k and top-p both cut something
    counts = torch.bincount(token, minlength=10)[None]
    assert_matches_only(counts, probs, wrong_distributions(logits, probs))
    torch.testing.assert_close(logprob, torch.log_softmax(logits.float(), -1)[0, token])  # raw, not processed


def test_a_zero_uniform_draw_keeps_the_filters(monkeypatch):
    """U = 0 (a 2^-24 chance per token) must not turn the only token top-p kept into -inf and let the
    argmax pick a filtered one."""
    logits = torch.full((2, 9), -3.0)
    logits[:, 7] = 8.0  # top-p 0.9 keeps token 7 alone
    monkeypatch.setattr(torch, "rand_like", lambda tensor: torch.zeros_like(tensor))
    token, _, _ = sample_next_token(logits, torch.zeros(2, dtype=torch.bool), torch.tensor([], dtype=torch.long),
                                    greedy=False, processors=warpers(temperature=1.0, top_k=5, top_p=0.9), pad_token_id=PAD)
    assert token.tolist() == [7, 7]


def test_the_sampling_step_pads_finished_rows_and_marks_eos():
    logits = torch.full((3, 6), -1.0)
    logits[0, 1] = logits[1, 2] = logits[2, 3] = 2.0  # greedy picks 1, 2, 3
    finished = torch.tensor([False, True, False])
    token, logprob, now_finished = sample_next_token(logits, finished, torch.tensor([3, 5]), greedy=True, processors=[],
                                                     pad_token_id=PAD)
    assert token.tolist() == [1, PAD, 3] and now_finished.tolist() == [False, True, True]
    expected = torch.log_softmax(logits, -1)
    torch.testing.assert_close(logprob, torch.stack([expected[0, 1], torch.tensor(0.0), expected[2, 3]]))
    assert not finished[2]  # the caller's tensor is not changed in place


def test_fused_compiled_step_gives_the_eager_greedy_tokens_logprobs_and_early_stop(tiny_model_dir):
    """Inductor (CPU) compiles forward + sampling as one graph: same greedy tokens and log-probs as
    the eager loop, pad and log-prob 0 after EOS, and the loop still stops early."""
    model = load_causal_lm(tiny_model_dir, dtype=torch.float64, device=torch.device("cpu")).eval()
    free, _ = sample(model, PROMPTS, max_new_tokens=10)
    eos = sorted({int(free[row, 4]) for row in range(3)})  # every row emits one by step 4 (some maybe earlier)
    expected_tokens, expected_logprobs = sample(model, PROMPTS, max_new_tokens=10, eos_token_ids=eos, check=2)
    fused = StaticCacheSampler(model, compile_decode=True, fuse_sampling=True, finished_check_every=2)
    assert fused.fused
    tokens, logprobs = fused.sample(*left_pad(PROMPTS, PAD), max_new_tokens=10, greedy=True, processors=[],
                                    eos_token_ids=eos, pad_token_id=PAD)
    assert tokens.shape[1] <= 6  # all rows finished by step 4: the check after step 5 stops the loop
    assert torch.equal(tokens, expected_tokens)
    torch.testing.assert_close(logprobs, expected_logprobs, atol=1e-6, rtol=0)
    for row in range(3):
        end = next(step for step, token in enumerate(tokens[row].tolist()) if token in eos) + 1
        assert tokens[row, :end].tolist() == free[row, :end].tolist()
        assert (tokens[row, end:] == PAD).all() and (logprobs[row, end:] == 0).all() and (logprobs[row, :end] < 0).all()


def test_fused_compiled_sampling_draws_from_the_processed_softmax():
    """The fused step's draws (the second token of every row: the first comes from the eager prefill)
    follow temperature -> top-k -> top-p of the raw logits given the first token, are seeded, and
    never leave the kept tokens. A 16-token vocabulary, so every (first, second) cell gets draws."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=8, max_position_embeddings=32, initializer_range=0.3,
                         attn_implementation="sdpa")
    model = Qwen3ForCausalLM(config).eval()  # initializer_range: logits of std ~2, far from uniform
    prompt, rows, processors = [5, 9, 2], 4000, warpers(temperature=0.8, top_k=8, top_p=0.95)
    input_ids, attention_mask = left_pad([prompt] * rows, PAD)
    fused = StaticCacheSampler(model, compile_decode=True, fuse_sampling=True)
    options = dict(max_new_tokens=2, greedy=False, processors=processors, eos_token_ids=[], pad_token_id=PAD)
    torch.manual_seed(1)
    tokens, logprobs = fused.sample(input_ids, attention_mask, **options)
    torch.manual_seed(1)
    assert torch.equal(fused.sample(input_ids, attention_mask, **options)[0], tokens)  # seeded
    with torch.no_grad():  # the logits after the prompt and each possible first token
        logits = model(torch.tensor([prompt + [first] for first in range(16)])).logits[:, -1]
    probs = processed_softmax(logits, processors)
    counts = torch.zeros(16, 16, dtype=torch.long).index_put_((tokens[:, 0], tokens[:, 1]), torch.tensor(1), accumulate=True)
    used = counts.sum(1) > 0
    assert int(used.sum()) >= 3 and ((probs[used] > 0).sum(1) > 2).all()
    assert_matches_only(counts[used], probs[used], wrong_distributions(logits[used], probs[used]))
    torch.testing.assert_close(logprobs[:, 1], torch.log_softmax(logits.float(), -1)[tokens[:, 0], tokens[:, 1]],
                               atol=1e-5, rtol=0)


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


@pytest.mark.gpu
def test_gpu_fused_loop_under_cuda_graphs(tiny_model_dir):
    """What only CUDA graphs can break: outputs kept across replays (greedy fused == unfused, EOS and early
    stop included), and the RNG inside the graph: seeded, and fresh at every replay (a model whose logits
    are always 0 draws uniformly and independently per step; frozen noise would repeat the token)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cuda = torch.device("cuda")
    model = load_causal_lm(tiny_model_dir, dtype=torch.float64, device=cuda).eval()
    input_ids, attention_mask = (t.to(cuda) for t in left_pad(PROMPTS, PAD))
    options = dict(max_new_tokens=10, greedy=True, processors=[], pad_token_id=PAD)
    free, _ = StaticCacheSampler(model, compile_decode=True).sample(input_ids, attention_mask, eos_token_ids=[], **options)
    eos = sorted({int(free[row, 4]) for row in range(3)})
    expected = StaticCacheSampler(model, compile_decode=True, finished_check_every=2).sample(
        input_ids, attention_mask, eos_token_ids=eos, **options)
    fused = StaticCacheSampler(model, compile_decode=True, fuse_sampling=True, finished_check_every=2)
    got = fused.sample(input_ids, attention_mask, eos_token_ids=eos, **options)
    assert got[0].shape[1] <= 6 and torch.equal(got[0], expected[0])
    torch.testing.assert_close(got[1], expected[1], atol=1e-6, rtol=0)

    config = Qwen3Config(vocab_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=8, max_position_embeddings=32, attn_implementation="sdpa")
    flat = Qwen3ForCausalLM(config).to(cuda).eval()
    flat.model.embed_tokens.weight.data.zero_()  # hidden states 0 -> logits 0: uniform over 16 tokens, every step
    rows = 4096
    input_ids, attention_mask = (t.to(cuda) for t in left_pad([[5, 9, 2]] * rows, PAD))
    sampler = StaticCacheSampler(flat, compile_decode=True, fuse_sampling=True)
    draws = dict(max_new_tokens=5, greedy=False, processors=[], eos_token_ids=[], pad_token_id=PAD)
    torch.manual_seed(3)
    tokens, _ = sampler.sample(input_ids, attention_mask, **draws)
    torch.manual_seed(3)
    assert torch.equal(sampler.sample(input_ids, attention_mask, **draws)[0], tokens)
    torch.manual_seed(4)
    assert not torch.equal(sampler.sample(input_ids, attention_mask, **draws)[0], tokens)
    tokens = tokens.cpu()
    for step in range(1, 4):  # replays: each step's draw is uniform and independent of the last
        assert chi_square_p_value(torch.bincount(tokens[:, step], minlength=16)[None], torch.full((1, 16), 1 / 16)) > 1e-4
        assert float((tokens[:, step] == tokens[:, step + 1]).double().mean()) < 0.1  # 1/16 expected; frozen noise: 1
