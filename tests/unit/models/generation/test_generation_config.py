"""GenerationConfig validation (through the config system) and SamplingParams."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from nemo_distill.config import ConfigError, build_dataclass
from nemo_distill.models.generation.config import GenerationConfig, SamplingParams as ReexportedSamplingParams
from nemo_distill.models.generation.interfaces import SamplingParams


@dataclass
class _Policy:
    generation: GenerationConfig = field(default_factory=GenerationConfig)


@dataclass
class _Schema:
    policy: _Policy = field(default_factory=_Policy)


def build(generation: dict) -> GenerationConfig:
    return build_dataclass(_Schema, {"policy": {"generation": generation}}).policy.generation


def test_defaults():
    cfg = build({})
    assert (cfg.backend, cfg.temperature, cfg.top_p, cfg.top_k, cfg.max_new_tokens) == ("hf", 1.0, 1.0, None, 256)
    assert (cfg.refit_bucket_mb, cfg.vllm_cfg.max_model_len, cfg.vllm_cfg.enable_sleep_mode) == (512, 4096, True)


@pytest.mark.parametrize(
    "values, key, message",
    [
        ({"temperature": -0.1}, "policy.generation.temperature", ">= 0.0"),
        ({"top_p": 0.0}, "policy.generation.top_p", "> 0.0"),
        ({"top_k": -1}, "policy.generation.top_k", ">= 0"),
        ({"max_new_tokens": 0}, "policy.generation.max_new_tokens", ">= 1"),
        ({"backend": "trt"}, "policy.generation.backend", "choose one of \\['hf', 'vllm'\\]"),
        ({"vllm_cfg": {"gpu_memory_utilization": 1.5}}, "policy.generation.vllm_cfg.gpu_memory_utilization", "<= 1.0"),
        ({"stop_strings": ["</answer>", ""]}, "policy.generation", "contains an empty string"),
        ({"backend": "vllm", "vllm_cfg": {"tensor_parallel_size": 2}}, "policy.generation", "tensor_parallel_size=2 is not supported"),
    ],
)
def test_invalid_values_name_the_key(values, key, message):
    with pytest.raises(ConfigError, match=message) as info:
        build(values)
    assert info.value.key_path == key


def test_sampling_params_from_config():
    cfg = GenerationConfig(temperature=0.6, top_p=0.95, top_k=20, max_new_tokens=64, stop_strings=["</s>"], seed=7)
    sampling = SamplingParams.from_config(cfg, n=4)
    assert sampling == SamplingParams(temperature=0.6, top_p=0.95, top_k=20, max_new_tokens=64, stop_strings=["</s>"], n=4, seed=7)
    sampling.stop_strings.append("x")
    assert cfg.stop_strings == ["</s>"]  # a copy: requests never mutate the config
    assert ReexportedSamplingParams is SamplingParams


def test_greedy_and_top_k_normalisation():
    sampling = SamplingParams(temperature=0.7, n=3, top_k=0)
    assert sampling.greedy() == SamplingParams(temperature=0.0, n=1, top_k=0)
    assert sampling.greedy().is_greedy and not sampling.is_greedy
    assert sampling.top_k_or_none is None and SamplingParams(top_k=5).top_k_or_none == 5


def test_sampling_validation_lists_every_problem():
    with pytest.raises(ValueError) as info:
        SamplingParams(temperature=-1, top_p=0, top_k=-2, max_new_tokens=0, n=0, stop_strings=[""]).validate()
    for fragment in ("temperature=-1", "top_p=0", "top_k=-2", "max_new_tokens=0", "n=0", "empty string"):
        assert fragment in str(info.value)
