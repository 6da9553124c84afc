"""Rollouts with vLLM (the optional ``vllm`` extra; GPU only).

Written against vLLM's public API: ``vllm.LLM``, ``vllm.SamplingParams``, ``TokensPrompt``,
``LLM.sleep`` / ``LLM.wake_up`` and ``LLM.collective_rpc`` with a ``worker_extension_cls`` for weight
updates. vLLM cannot be installed on our CPU CI or on the lent GPU image, so this backend is
not exercised end to end there: its tests (marker ``vllm``) skip when ``import vllm`` fails, and the
translation to and from vLLM's types is tested with stand-ins.
"""

from __future__ import annotations

from typing import Any

from nemo_distill.models.generation.config import GenerationConfig
from nemo_distill.models.generation.interfaces import GeneratedSample, GenerationOutput, GenerationRequest, SamplingParams
from nemo_distill.models.loading import TokenizerConfig, resolve_model_path


def to_vllm_sampling_kwargs(sampling: SamplingParams) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for our sampling settings.

    ``logprobs=0`` asks for the sampled token's log-prob only; vLLM's default ``logprobs_mode``
    reports raw (temperature 1, unfiltered) log-probs, our convention.
    """
    return {
        "n": sampling.n,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k if sampling.top_k else -1,
        "max_tokens": sampling.max_new_tokens,
        "stop": list(sampling.stop_strings) if sampling.stop_strings else None,
        "include_stop_str_in_output": True,
        "seed": sampling.seed,
        "logprobs": 0,
    }


def from_vllm_outputs(request_outputs: list[Any]) -> GenerationOutput:
    """vLLM ``RequestOutput`` s (one per prompt, in order) -> our prompt-major samples."""
    samples = []
    for prompt_index, request_output in enumerate(request_outputs):
        for completion in request_output.outputs:
            token_ids = list(completion.token_ids)
            logprobs = [step[token].logprob for step, token in zip(completion.logprobs or [], token_ids)]
            finish = "stop" if completion.finish_reason == "stop" else "length"
            samples.append(GeneratedSample(prompt_index=prompt_index, response_token_ids=token_ids, response_logprobs=logprobs,
                                           text=completion.text, finish_reason=finish))
    return GenerationOutput(samples=samples)


class WeightUpdateExtension:
    """Mixed into vLLM's GPU workers (``worker_extension_cls``): loads HF-named weight buckets."""

    def load_weight_bucket(self, bucket: dict) -> int:
        self.model_runner.model.load_weights(weights=list(bucket.items()))  # set by vLLM on the worker
        return len(bucket)


class VllmGenerationWorker:
    def __init__(self, model_name: str, cfg: GenerationConfig, *, precision: str = "auto", tokenizer_cfg: TokenizerConfig | None = None):
        try:
            import vllm
        except ImportError as err:
            raise ImportError("policy.generation.backend=vllm needs vLLM: `pip install 'nemo-distill[vllm]'` on a GPU machine") from err
        vllm_cfg = cfg.vllm_cfg
        self.cfg = cfg
        self.llm = vllm.LLM(
            model=resolve_model_path(model_name),
            tokenizer=resolve_model_path(tokenizer_cfg.name) if tokenizer_cfg and tokenizer_cfg.name else None,
            dtype="bfloat16" if precision in ("auto", "bfloat16") else "float32",
            tensor_parallel_size=vllm_cfg.tensor_parallel_size,
            gpu_memory_utilization=vllm_cfg.gpu_memory_utilization,
            max_model_len=vllm_cfg.max_model_len,
            enforce_eager=vllm_cfg.enforce_eager,
            enable_sleep_mode=vllm_cfg.enable_sleep_mode,
            worker_extension_cls=f"{__name__}.WeightUpdateExtension",
        )

    def generate(self, request: GenerationRequest) -> GenerationOutput:
        import vllm
        from vllm.inputs import TokensPrompt

        if not request.prompt_token_ids:
            return GenerationOutput(samples=[])
        params = vllm.SamplingParams(**to_vllm_sampling_kwargs(request.sampling))
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in request.prompt_token_ids]
        return from_vllm_outputs(self.llm.generate(prompts, params, use_tqdm=False))

    def update_weights_from_refs(self, refs: list) -> int:
        import ray

        loaded = 0
        for ref in refs:
            loaded += self.llm.collective_rpc("load_weight_bucket", args=(ray.get(ref),))[0]
        self.llm.reset_prefix_cache()  # cached KV of old weights must not be reused
        return loaded

    def sleep(self) -> None:
        if self.cfg.vllm_cfg.enable_sleep_mode:
            self.llm.sleep(level=1)

    def wake_up(self) -> None:
        if self.cfg.vllm_cfg.enable_sleep_mode:
            self.llm.wake_up()

    def peak_memory_gib(self) -> float:
        import torch

        return torch.cuda.max_memory_allocated() / 2**30
