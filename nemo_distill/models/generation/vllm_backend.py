"""Rollouts with vLLM (the optional ``vllm`` extra; GPU only), behind the same interface as HF.

Written against vLLM's public API:

* ``vllm.LLM(model=..., worker_extension_cls=..., enable_sleep_mode=..., logprobs_mode="raw_logprobs")``;
* ``LLM.generate([TokensPrompt(prompt_token_ids=...)], vllm.SamplingParams(..., logprobs=0))``:
  ``logprobs=0`` returns the sampled token's log-prob only, and ``raw_logprobs`` computes it from
  the raw logits (before temperature / top-k / top-p), our convention;
* ``LLM.sleep(level=1)`` (weights to CPU, KV cache dropped) and ``LLM.wake_up(tags=[...])``;
* weight updates: ``LLM.collective_rpc("load_weight_bucket", args=(...))`` runs
  :class:`WeightLoaderExtension` (mixed into vLLM's GPU worker via ``worker_extension_cls``),
  which calls the model's own ``load_weights`` (it maps HF names onto vLLM's fused layers);
  then ``LLM.reset_prefix_cache()`` so no KV computed with the old weights is reused.

Sleep + refit: a sleeping engine's weights live in CPU backup memory, so an update first wakes the
weights only (``tags=["weights"]``); the KV cache is allocated again by the next ``wake_up()``.

vLLM cannot be installed on the CPU CI nor on the lent GPU image: the translation to and from
vLLM's types (:func:`vllm_sampling_kwargs`, :func:`convert_request_outputs`) and the sleep/refit
state machine are tested against stand-ins; a ``vllm``-marked test runs the real engine where
vLLM exists. Tensor parallelism inside one engine is not supported yet (config check).
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Literal, Mapping

from nemo_distill.models.generation.config import GenerationConfig
from nemo_distill.models.generation.interfaces import (
    GeneratedSample,
    GenerationOutput,
    GenerationRequest,
    SamplingParams,
    WeightUpdateStats,
)
from nemo_distill.models.generation.weight_transfer import WeightReceiver, tensor_nbytes
from nemo_distill.models.loading import TokenizerConfig, resolve_model_path

log = logging.getLogger(__name__)

VLLM_DTYPES = {"auto": "bfloat16", "bfloat16": "bfloat16", "float32": "float32"}
EngineState = Literal["awake", "asleep", "weights_only"]  # weights_only: weights on GPU, no KV cache yet


def vllm_sampling_kwargs(sampling: SamplingParams, *, seed: int | None) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for one request (``seed`` already per-call)."""
    return {
        "n": sampling.n,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k_or_none or -1,  # -1: no top-k filter (accepted by old and new vLLM)
        "max_tokens": sampling.max_new_tokens,
        "stop": list(sampling.stop_strings) if sampling.stop_strings else None,
        "include_stop_str_in_output": True,  # like the HF backend: the stop string stays in the response
        "seed": seed,
        "logprobs": 0,  # the sampled token's log-prob only
        "skip_special_tokens": True,
    }


def _sampled_token_logprobs(completion: Any) -> list[float]:
    """``completion.logprobs[j][token_ids[j]].logprob`` for every position (vLLM's per-step dicts)."""
    token_ids = list(completion.token_ids)
    if completion.logprobs is None:
        raise RuntimeError("vLLM returned no logprobs although logprobs=0 was requested")
    if len(completion.logprobs) != len(token_ids):
        raise RuntimeError(f"vLLM returned {len(completion.logprobs)} logprob entries for {len(token_ids)} tokens")
    return [float(step[token].logprob) for step, token in zip(completion.logprobs, token_ids)]


def convert_request_outputs(request_outputs: list[Any]) -> GenerationOutput:
    """vLLM ``RequestOutput`` s (one per prompt, in prompt order) -> prompt-major samples.

    ``finish_reason``: vLLM's ``"stop"`` (EOS or stop string) and ``"length"`` map to ours; an
    aborted request is an error.
    """
    samples = []
    for prompt_index, request_output in enumerate(request_outputs):
        for completion in sorted(request_output.outputs, key=lambda c: c.index):
            if completion.finish_reason not in ("stop", "length"):
                raise RuntimeError(f"vLLM finished prompt {prompt_index} with reason {completion.finish_reason!r}")
            samples.append(
                GeneratedSample(
                    prompt_index=prompt_index,
                    response_token_ids=list(completion.token_ids),
                    response_logprobs=_sampled_token_logprobs(completion),
                    text=completion.text,
                    finish_reason=completion.finish_reason,
                )
            )
    return GenerationOutput(samples=samples)


class WeightLoaderExtension:
    """Mixed into vLLM's GPU worker (``worker_extension_cls``); ``self.model_runner`` is vLLM's."""

    def load_weight_bucket(self, named_tensors: list[tuple[str, Any]]) -> int:
        model = self.model_runner.model  # type: ignore[attr-defined]  (provided by the vLLM worker)
        device = next(model.parameters()).device
        model.load_weights(weights=[(name, tensor.to(device)) for name, tensor in named_tensors])
        return len(named_tensors)


class VllmGenerationWorker(WeightReceiver):
    """One vLLM engine on the worker's GPU slot (a Ray actor of ``GenerationWorkerGroup``)."""

    def __init__(
        self,
        model_name: str,
        cfg: GenerationConfig,
        *,
        precision: str = "auto",
        tokenizer_cfg: TokenizerConfig | None = None,
    ):
        try:
            import vllm
        except ImportError as err:
            raise ImportError(
                "policy.generation.backend=vllm needs vLLM: install the extra (`pip install 'nemo-distill[vllm]'`) "
                "on a GPU machine, or use policy.generation.backend=hf"
            ) from err
        if precision not in VLLM_DTYPES:
            raise ValueError(f"precision '{precision}' is not one of {list(VLLM_DTYPES)}")
        self.cfg = cfg
        vllm_cfg = cfg.vllm_cfg
        tokenizer_name = tokenizer_cfg.name if tokenizer_cfg and tokenizer_cfg.name else model_name
        self.llm = vllm.LLM(
            model=resolve_model_path(model_name),
            tokenizer=resolve_model_path(tokenizer_name),
            dtype=VLLM_DTYPES[precision],
            tensor_parallel_size=vllm_cfg.tensor_parallel_size,
            gpu_memory_utilization=vllm_cfg.gpu_memory_utilization,
            max_model_len=vllm_cfg.max_model_len,
            enforce_eager=vllm_cfg.enforce_eager,
            enable_sleep_mode=vllm_cfg.enable_sleep_mode,
            logprobs_mode="raw_logprobs",
            worker_extension_cls=f"{WeightLoaderExtension.__module__}.{WeightLoaderExtension.__qualname__}",
        )
        import torch

        # The engine's GPU: refit transports receive here (CPU only under the tests' stand-in engine).
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        self.state: EngineState = "awake"
        self.num_generate_calls = 0
        self.lifecycle_events: list[str] = []

    def generate(self, request: GenerationRequest) -> GenerationOutput:
        import vllm
        from vllm.inputs import TokensPrompt

        sampling = request.sampling
        sampling.validate()
        seed = None if sampling.seed is None else sampling.seed + self.num_generate_calls
        self.num_generate_calls += 1
        if not request.prompt_token_ids:
            return GenerationOutput(samples=[])
        if self.state != "awake":
            log.warning("generate() called while the engine sleeps: waking it up")
            self.wake_up()
        params = vllm.SamplingParams(**vllm_sampling_kwargs(sampling, seed=seed))
        prompts = [TokensPrompt(prompt_token_ids=list(ids)) for ids in request.prompt_token_ids]
        return convert_request_outputs(self.llm.generate(prompts, params, use_tqdm=False))

    def update_weights(self, weight_buckets: Iterable[Mapping[str, Any]], *, strict: bool = True) -> WeightUpdateStats:
        """Load HF-named buckets through the worker extension (vLLM maps names onto fused layers).

        Unlike the HF backend there is no completeness check (``strict`` is accepted and ignored):
        vLLM's ``load_weights`` owns the name mapping.
        """
        if self.state == "asleep":
            self.llm.wake_up(tags=["weights"])
            self.state = "weights_only"
        stats = WeightUpdateStats(num_buckets=0, num_tensors=0, num_bytes=0)
        for bucket in weight_buckets:
            named = list(bucket.items())
            self.llm.collective_rpc("load_weight_bucket", args=(named,))
            stats.num_buckets += 1
            stats.num_tensors += len(named)
            stats.num_bytes += sum(tensor_nbytes(tensor) for _, tensor in named)
            del bucket, named
        self.llm.reset_prefix_cache()
        return stats

    def check_weight_names(self, names: Iterable[str]) -> None:
        """No check: vLLM's ``load_weights`` maps HF names onto its fused layers itself."""

    def sleep(self) -> None:
        self.lifecycle_events.append("sleep")
        if self.cfg.vllm_cfg.enable_sleep_mode and self.state != "asleep":
            self.llm.sleep(level=1)
            self.state = "asleep"

    def wake_up(self) -> None:
        self.lifecycle_events.append("wake_up")
        if self.state == "asleep":
            self.llm.wake_up()
        elif self.state == "weights_only":
            self.llm.wake_up(tags=["kv_cache"])
        self.state = "awake"

    def get_lifecycle_events(self) -> list[str]:
        return list(self.lifecycle_events)

    def get_generate_calls(self) -> int:
        """How many ``generate`` calls this worker served (its next call seeds with ``seed + count``)."""
        return self.num_generate_calls

    def set_generate_calls(self, count: int) -> None:
        """Restore the call counter on resume, so a resumed run samples what the uninterrupted one would."""
        self.num_generate_calls = int(count)

    def peak_memory_gib(self) -> float:
        import torch

        return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
