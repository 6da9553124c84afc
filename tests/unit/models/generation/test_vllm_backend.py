"""The vLLM backend against a stand-in ``vllm`` module; the real engine where vLLM and a GPU exist."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from nemo_distill.models.generation.config import GenerationConfig, VllmConfig
from nemo_distill.models.generation.interfaces import GenerationRequest, SamplingParams
from nemo_distill.models.generation.vllm_backend import (
    VllmGenerationWorker,
    WeightLoaderExtension,
    convert_request_outputs,
    vllm_sampling_kwargs,
)


def test_sampling_translation():
    sampling = SamplingParams(temperature=0.7, top_p=0.9, top_k=None, max_new_tokens=32, stop_strings=["</answer>"], n=4, seed=5)
    assert vllm_sampling_kwargs(sampling, seed=9) == {
        "n": 4,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": -1,
        "max_tokens": 32,
        "stop": ["</answer>"],
        "include_stop_str_in_output": True,
        "seed": 9,
        "logprobs": 0,
        "skip_special_tokens": True,
    }
    assert vllm_sampling_kwargs(SamplingParams(top_k=0), seed=None)["top_k"] == -1
    assert vllm_sampling_kwargs(SamplingParams(top_k=20), seed=None)["top_k"] == 20
    assert vllm_sampling_kwargs(SamplingParams(), seed=None)["stop"] is None


def completion(index, token_ids, logprobs, text="", finish_reason="length"):
    steps = [{token: SimpleNamespace(logprob=lp), 99: SimpleNamespace(logprob=-50.0)} for token, lp in zip(token_ids, logprobs)]
    return SimpleNamespace(index=index, token_ids=tuple(token_ids), logprobs=steps, text=text, finish_reason=finish_reason)


def test_output_conversion_is_prompt_major_with_sampled_logprobs():
    outputs = [
        SimpleNamespace(outputs=[completion(1, [7], [-0.5], "b", "stop"), completion(0, [5, 6], [-1.0, -2.0], "a")]),
        SimpleNamespace(outputs=[completion(0, [8, 9, 10], [-0.1, -0.2, -0.3], "c", "length")]),
    ]
    samples = convert_request_outputs(outputs).samples
    assert [(s.prompt_index, s.response_token_ids, s.text, s.finish_reason) for s in samples] == [
        (0, [5, 6], "a", "length"),  # ordered by the completion's index, not vLLM's list order
        (0, [7], "b", "stop"),
        (1, [8, 9, 10], "c", "length"),
    ]
    assert [s.response_logprobs for s in samples] == [[-1.0, -2.0], [-0.5], [-0.1, -0.2, -0.3]]


def test_output_conversion_errors():
    with pytest.raises(RuntimeError, match="finished prompt 0 with reason 'abort'"):
        convert_request_outputs([SimpleNamespace(outputs=[completion(0, [1], [-1.0], finish_reason="abort")])])
    missing = completion(0, [1], [-1.0])
    missing.logprobs = None
    with pytest.raises(RuntimeError, match="no logprobs"):
        convert_request_outputs([SimpleNamespace(outputs=[missing])])


class FakeLLM:
    """Records how the worker drives vLLM's public ``LLM`` API."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls: list[tuple] = []

    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append(("generate", [p["prompt_token_ids"] for p in prompts], params.kwargs))
        return [SimpleNamespace(outputs=[completion(i, [1, 2], [-0.1, -0.2], "xy")]) for i in range(len(prompts))]

    def collective_rpc(self, method, args=()):
        self.calls.append(("collective_rpc", method, [name for name, _ in args[0]]))
        return [len(args[0])]

    def reset_prefix_cache(self):
        self.calls.append(("reset_prefix_cache",))

    def sleep(self, level=1):
        self.calls.append(("sleep", level))

    def wake_up(self, tags=None):
        self.calls.append(("wake_up", tags))


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = FakeLLM
    module.SamplingParams = lambda **kwargs: SimpleNamespace(kwargs=kwargs)
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = dict  # a TypedDict in vLLM: a dict with prompt_token_ids
    module.inputs = inputs
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    return module


def test_engine_arguments(fake_vllm, tiny_model_dir):
    cfg = GenerationConfig(backend="vllm", vllm_cfg=VllmConfig(max_model_len=1024, gpu_memory_utilization=0.3, enforce_eager=True))
    worker = VllmGenerationWorker(tiny_model_dir, cfg, precision="float32")
    kwargs = worker.llm.kwargs
    assert kwargs["model"] == kwargs["tokenizer"] == str(Path(tiny_model_dir).resolve())
    assert (kwargs["dtype"], kwargs["max_model_len"], kwargs["gpu_memory_utilization"]) == ("float32", 1024, 0.3)
    assert (kwargs["enforce_eager"], kwargs["enable_sleep_mode"], kwargs["logprobs_mode"]) == (True, True, "raw_logprobs")
    module_name, _, class_name = kwargs["worker_extension_cls"].rpartition(".")
    assert getattr(importlib.import_module(module_name), class_name) is WeightLoaderExtension  # vLLM imports it by name
    assert VllmGenerationWorker(tiny_model_dir, cfg).llm.kwargs["dtype"] == "bfloat16"  # auto


def test_generate_seeds_each_call(fake_vllm, tiny_model_dir):
    worker = VllmGenerationWorker(tiny_model_dir, GenerationConfig(backend="vllm"))
    request = GenerationRequest([[5, 6], [7]], SamplingParams(n=1, seed=10, max_new_tokens=2))
    output = worker.generate(request)
    worker.generate(request)
    assert [s.prompt_index for s in output.samples] == [0, 1]
    generate_calls = [call for call in worker.llm.calls if call[0] == "generate"]
    assert generate_calls[0][1] == [[5, 6], [7]]
    assert [call[2]["seed"] for call in generate_calls] == [10, 11]


def test_refit_while_asleep_wakes_weights_first(fake_vllm, tiny_model_dir):
    worker = VllmGenerationWorker(tiny_model_dir, GenerationConfig(backend="vllm"))
    worker.sleep()
    buckets = [{"a.weight": torch.zeros(2, 2)}, {"b.weight": torch.zeros(3), "c.bias": torch.zeros(1, dtype=torch.bfloat16)}]
    stats = worker.update_weights(iter(buckets))
    assert (stats.num_buckets, stats.num_tensors, stats.num_bytes) == (2, 3, 16 + 12 + 2)
    worker.wake_up()
    assert worker.llm.calls == [
        ("sleep", 1),
        ("wake_up", ["weights"]),  # weights back on the GPU before loading into them
        ("collective_rpc", "load_weight_bucket", ["a.weight"]),
        ("collective_rpc", "load_weight_bucket", ["b.weight", "c.bias"]),
        ("reset_prefix_cache",),  # no KV computed with the old weights is reused
        ("wake_up", ["kv_cache"]),  # only the KV cache is still asleep
    ]
    assert worker.state == "awake"


def test_awake_refit_and_sleep_mode_off(fake_vllm, tiny_model_dir):
    worker = VllmGenerationWorker(tiny_model_dir, GenerationConfig(backend="vllm", vllm_cfg=VllmConfig(enable_sleep_mode=False)))
    worker.update_weights([{"a": torch.zeros(1)}])
    worker.sleep()
    worker.wake_up()
    assert [call[0] for call in worker.llm.calls] == ["collective_rpc", "reset_prefix_cache"]  # no sleep without sleep mode
    assert worker.get_lifecycle_events() == ["sleep", "wake_up"]


def test_generate_while_asleep_wakes_up(fake_vllm, tiny_model_dir):
    worker = VllmGenerationWorker(tiny_model_dir, GenerationConfig(backend="vllm"))
    worker.sleep()
    worker.generate(GenerationRequest([[1]], SamplingParams(max_new_tokens=2)))
    assert [call[0] for call in worker.llm.calls] == ["sleep", "wake_up", "generate"]


def test_missing_vllm_has_an_actionable_error(monkeypatch, tiny_model_dir):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(ImportError, match="install the extra.*or use policy.generation.backend=hf"):
        VllmGenerationWorker(tiny_model_dir, GenerationConfig(backend="vllm"))


def test_weight_loader_extension_moves_tensors_to_the_model_device():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(2))
            self.loaded = []

        def load_weights(self, weights):
            self.loaded = [(name, tensor.device) for name, tensor in weights]

    extension = WeightLoaderExtension()
    extension.model_runner = SimpleNamespace(model=Model())
    assert extension.load_weight_bucket([("weight", torch.ones(2)), ("bias", torch.ones(1))]) == 2
    assert extension.model_runner.model.loaded == [("weight", torch.device("cpu")), ("bias", torch.device("cpu"))]


@pytest.mark.vllm
@pytest.mark.gpu
def test_real_vllm_engine_matches_hf_greedy(tiny_model_dir):
    pytest.importorskip("vllm")
    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a CUDA GPU")
    from nemo_distill.models.generation.hf_backend import HFGenerationWorker

    cfg = GenerationConfig(backend="vllm", vllm_cfg=VllmConfig(max_model_len=256, gpu_memory_utilization=0.3, enforce_eager=True))
    worker = VllmGenerationWorker(tiny_model_dir, cfg, precision="float32")
    hf = HFGenerationWorker(tiny_model_dir, GenerationConfig(), precision="float32")
    prompts = [hf.tokenizer.encode("Hello there"), hf.tokenizer.encode("The capital of France is")]
    request = GenerationRequest(prompts, SamplingParams(temperature=0.0, max_new_tokens=8))
    vllm_samples, hf_samples = worker.generate(request).samples, hf.generate(request).samples
    assert [s.response_token_ids for s in vllm_samples] == [s.response_token_ids for s in hf_samples]
    for v, h in zip(vllm_samples, hf_samples):
        assert v.response_logprobs == pytest.approx(h.response_logprobs, abs=1e-3)
    worker.sleep()
    worker.update_weights([dict(hf.model.state_dict())])
    worker.wake_up()
    assert [s.response_token_ids for s in worker.generate(request).samples] == [s.response_token_ids for s in hf_samples]
