"""Typed messages of generation and the interface every backend implements."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Protocol

from nemo_distill.models.generation.config import GenerationConfig


@dataclass
class SamplingParams:
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int | None = None
    max_new_tokens: int = 256
    stop_strings: list[str] | None = None
    n: int = 1  # samples per prompt
    seed: int | None = None

    @classmethod
    def from_config(cls, cfg: GenerationConfig, *, n: int = 1) -> "SamplingParams":
        return cls(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k, max_new_tokens=cfg.max_new_tokens,
                   stop_strings=list(cfg.stop_strings) if cfg.stop_strings else None, n=n, seed=cfg.seed)

    def greedy(self) -> "SamplingParams":
        return replace(self, temperature=0.0, n=1)


@dataclass
class GenerationRequest:
    prompt_token_ids: list[list[int]]
    sampling: SamplingParams


@dataclass
class GeneratedSample:
    prompt_index: int  # index into the request's prompts
    response_token_ids: list[int]  # includes the EOS token when the model stopped by itself
    response_logprobs: list[float]  # log softmax of the RAW (temperature 1, unfiltered) logits at each token
    text: str  # decoded response, special tokens skipped, cut after a stop string
    finish_reason: Literal["stop", "length"]


@dataclass
class GenerationOutput:
    samples: list[GeneratedSample]  # prompt-major: the n samples of prompt i are contiguous


class GenerationInterface(Protocol):
    def generate(self, request: GenerationRequest) -> GenerationOutput: ...

    def update_weights_from_refs(self, refs: list) -> int: ...

    def sleep(self) -> None: ...

    def wake_up(self) -> None: ...
