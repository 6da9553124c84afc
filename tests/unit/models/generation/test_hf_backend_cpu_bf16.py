"""policy.generation.cpu_bfloat16: a CPU generation worker samples in bf16 where the CPU multiplies bf16
natively, else keeps its precision with a warning; refit casts fp32 weights into it."""

from __future__ import annotations

import logging

import pytest
import torch

from nemo_distill.models import loading
from nemo_distill.models.generation import hf_backend
from nemo_distill.models.generation.config import GenerationConfig
from nemo_distill.models.generation.hf_backend import HFGenerationWorker
from nemo_distill.models.generation.interfaces import GenerationRequest, SamplingParams

PROMPT_TEXTS = ["Hello there, how are", "The capital of France is a city called"]


@pytest.mark.parametrize("amx, avx512_bf16, expected", [(True, False, True), (False, True, True), (False, False, False)])
def test_native_bf16_is_amx_or_avx512_bf16(monkeypatch, amx, avx512_bf16, expected):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert loading.cpu_has_native_bf16() is expected


def test_native_bf16_is_false_without_the_probes(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    assert loading.cpu_has_native_bf16() is False


@pytest.mark.parametrize("native", [True, False])
def test_worker_dtype_follows_the_flag_and_the_cpu(monkeypatch, caplog, tiny_model_dir, native):
    monkeypatch.setattr(hf_backend, "cpu_has_native_bf16", lambda: native)
    with caplog.at_level(logging.WARNING, logger=hf_backend.__name__):
        flagged = HFGenerationWorker(tiny_model_dir, GenerationConfig(cpu_bfloat16=True), precision="float32")
    assert flagged.dtype == next(flagged.model.parameters()).dtype == (torch.bfloat16 if native else torch.float32)
    assert ("neither AMX nor AVX512-BF16" in caplog.text) is not native
    plain = HFGenerationWorker(tiny_model_dir, GenerationConfig(), precision="float32")
    assert plain.dtype == torch.float32  # off by default


def test_bf16_worker_samples_from_its_own_logits_and_takes_fp32_refits(monkeypatch, tiny_model_dir, tmp_path):
    from nemo_distill.models.loading import load_causal_lm
    from nemo_distill.models.tiny import build_tiny_model

    monkeypatch.setattr(hf_backend, "cpu_has_native_bf16", lambda: True)
    worker = HFGenerationWorker(tiny_model_dir, GenerationConfig(cpu_bfloat16=True), precision="float32")
    prompts = [worker.tokenizer.encode(text) for text in PROMPT_TEXTS]
    request = GenerationRequest(prompts, SamplingParams(temperature=0.0, max_new_tokens=5))
    for prompt, sample in zip(prompts, worker.generate(request).samples):
        with torch.no_grad():  # greedy = argmax of the bf16 model's own logits; log-probs from them, in fp32
            logits = worker.model(torch.tensor([prompt + sample.response_token_ids])).logits[0, len(prompt) - 1 : -1].float()
        # the batch is left-padded, this forward is not: equal up to bf16 rounding, so a near-tie may flip
        picked = logits.gather(-1, torch.tensor(sample.response_token_ids)[:, None]).squeeze(-1)
        assert (picked >= logits.max(-1).values - 0.05).all()
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(sample.response_token_ids)[:, None]).squeeze(-1)
        torch.testing.assert_close(torch.tensor(sample.response_logprobs), expected, rtol=0, atol=2e-2)
    # a refit brings fp32 weights (the policy's compute dtype on CPU): cast into the bf16 model
    other_dir = build_tiny_model(tmp_path / "seed1", seed=1)
    state = load_causal_lm(other_dir, dtype=torch.float32).state_dict()
    worker.update_weights([state])
    assert all(param.dtype == torch.bfloat16 for param in worker.model.parameters())
    reference = HFGenerationWorker(other_dir, GenerationConfig(cpu_bfloat16=True), precision="float32")
    assert [s.response_token_ids for s in worker.generate(request).samples] == \
        [s.response_token_ids for s in reference.generate(request).samples]
