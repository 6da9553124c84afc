"""``policy.generation``: how student rollouts are sampled and which engine samples them.

:class:`~nemo_distill.models.generation.interfaces.SamplingParams` (the per-request message)
is built from this section with ``SamplingParams.from_config(cfg, n=...)`` and re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from nemo_distill.models.generation.interfaces import SamplingParams  # re-exported: built from this section

__all__ = ["GenerationConfig", "SamplingParams", "VllmConfig"]


@dataclass
class VllmConfig:
    """``policy.generation.vllm_cfg``: engine settings of the vLLM backend (ignored by ``hf``)."""

    max_model_len: int = field(default=4096, metadata={"ge": 1})  # prompt + response tokens; must cover policy.max_total_sequence_length
    gpu_memory_utilization: float = field(default=0.6, metadata={"gt": 0.0, "le": 1.0})  # share of the GPU vLLM may take
    tensor_parallel_size: int = field(default=1, metadata={"ge": 1})  # GPUs per vLLM engine (only 1 is supported yet)
    enforce_eager: bool = False  # true: no CUDA graphs (slower decode, faster start, less memory)
    enable_sleep_mode: bool = True  # offload weights / drop the KV cache between rollouts (colocated mode)


@dataclass
class GenerationConfig:
    """``policy.generation``: sampling of student rollouts and the engine that samples them."""

    backend: Literal["hf", "vllm"] = "hf"  # hf: transformers generate (CPU and GPU); vllm: the `vllm` extra, GPU only
    temperature: float = field(default=1.0, metadata={"ge": 0.0})  # 0 = greedy
    top_p: float = field(default=1.0, metadata={"gt": 0.0, "le": 1.0})  # nucleus filter; 1.0 = off
    top_k: int | None = field(default=None, metadata={"ge": 0})  # keep the k most likely tokens; None or 0 = off
    max_new_tokens: int = field(default=256, metadata={"ge": 1})  # response length limit (finish_reason "length")
    stop_strings: list[str] | None = None  # end a response after the first of these (kept in the response)
    seed: int | None = None  # the k-th generate call of a worker uses seed + k: reproducible runs, fresh samples per call
    max_batch_size: int = field(default=64, metadata={"ge": 1})  # hf: sequences (prompts x n) per generate call
    # hf: a static KV cache; on GPU transformers then compiles the decode step (CUDA graphs). Prompts are
    # left-padded to a multiple of static_cache_pad_to and chunks to max_batch_size rows, so shapes repeat
    # and it compiles once. The first call pays the compile time.
    hf_static_cache: bool = False
    static_cache_pad_to: int = field(default=64, metadata={"ge": 1})
    # hf: who runs the token loop. generate: transformers' model.generate. loop: our own loop over a static KV
    # cache (generation/static_decode.py): the decode step compiled once on GPU (CUDA graphs) and the host
    # asking "all rows finished?" only every 16 steps instead of every token. Same responses given the same
    # draws (greedy: identical); the random draws themselves differ from generate's. On GPU it pads like
    # hf_static_cache (one compiled shape); on CPU it runs eagerly without padding.
    hf_sampler: Literal["generate", "loop"] = "generate"
    # hf_sampler: loop on GPU: compile the per-token sampling (processors, draw, EOS bookkeeping) into the decode
    # step's graph, so a token is one CUDA-graph replay instead of a replay plus ~12 eager kernels. Same
    # distribution, other random draws than the unfused loop's. No effect on CPU, where the loop runs eagerly.
    # H100, 0.6B shape: no measurable gain yet, the decode step is GPU-bound (docs/performance.md).
    hf_fused_sampling: bool = False
    # hf_sampler: loop, grouped-query models: the decode step's attention kernel. sdpa: torch's SDPA (on an H100 it
    # picked cuDNN's fused kernel, ~50 us a layer for two query rows per key/value head); matmul: two batched
    # products around an fp32 softmax (HF eager attention's numerics), memory-bound on the cache.
    hf_decode_attention: Literal["sdpa", "matmul"] = "sdpa"
    # hf on CPU: sample in bf16 where the CPU multiplies bf16 natively (AMX or AVX512-BF16), else fp32 with a
    # warning. About 2x faster decoding on such CPUs; the policy and teacher keep their precision. The
    # distillation loss never reads the sampler's log-probs; GRPO's reward mix does (its student term), in
    # bf16 then, as on GPU, where generation is always bf16. No effect on GPU.
    cpu_bfloat16: bool = False
    refit_bucket_mb: int = field(default=512, metadata={"ge": 1})  # policy -> generation weight transfer bucket size
    # How refit moves the buckets: auto = cuda_ipc on colocated GPUs, else broadcast (NCCL on GPU, gloo
    # on CPU); object_store only when asked for. See generation/refit.py.
    refit_transport: Literal["auto", "object_store", "cuda_ipc", "broadcast"] = "auto"
    vllm_cfg: VllmConfig = field(default_factory=VllmConfig)

    def __post_init__(self) -> None:
        if self.stop_strings is not None and any(not stop for stop in self.stop_strings):
            raise ValueError(f"stop_strings {self.stop_strings!r} contains an empty string, which would stop every response at once")
        if self.backend == "vllm" and self.vllm_cfg.tensor_parallel_size != 1:
            raise ValueError(
                f"vllm_cfg.tensor_parallel_size={self.vllm_cfg.tensor_parallel_size} is not supported yet: "
                "each inference slot runs one single-GPU vLLM engine (data parallel); set it to 1"
            )

