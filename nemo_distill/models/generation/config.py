"""``policy.generation``: how student rollouts are sampled and which engine samples them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class VllmConfig:
    max_model_len: int = 4096  # must cover policy.max_total_sequence_length
    gpu_memory_utilization: float = field(default=0.6, metadata={"gt": 0.0, "le": 1.0})
    tensor_parallel_size: int = field(default=1, metadata={"ge": 1})
    enforce_eager: bool = False
    enable_sleep_mode: bool = True  # free KV cache and weights between rollouts (colocated mode)


@dataclass
class GenerationConfig:
    backend: Literal["hf", "vllm"] = "hf"  # vllm needs the `vllm` extra and a GPU
    temperature: float = field(default=1.0, metadata={"ge": 0.0})  # 0 = greedy
    top_p: float = field(default=1.0, metadata={"gt": 0.0, "le": 1.0})
    top_k: int | None = None  # None or 0: no top-k filter
    max_new_tokens: int = field(default=256, metadata={"ge": 1})
    stop_strings: list[str] | None = None  # cut the response after the first of these
    seed: int | None = None  # sampling seed (per call: seed + call index)
    max_batch_size: int = field(default=64, metadata={"ge": 1})  # sequences per HF generate call
    refit_bucket_mb: int = field(default=512, metadata={"ge": 1})  # weight transfer bucket size
    vllm_cfg: VllmConfig = field(default_factory=VllmConfig)
