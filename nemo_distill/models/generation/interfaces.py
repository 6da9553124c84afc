"""Typed messages of generation, and the interface every backend implements.

Log-prob convention (all backends): ``GeneratedSample.response_logprobs[j]`` is the log-softmax
of the RAW model logits (temperature 1, no top-k / top-p filtering) at the sampled token
``response_token_ids[j]``, computed in fp32. That is the quantity the policy's ``get_logprobs``
computes for the same tokens, so the two can be compared after a refit: expect agreement to about
1e-4 in fp32 (generation runs on left-padded batches with a KV cache, the policy on right-padded
full sequences, so the matmuls are ordered differently), and to bf16 precision (~1e-2) in bf16.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Iterable, Literal, Mapping, Protocol

if TYPE_CHECKING:
    import torch

    from nemo_distill.models.generation.config import GenerationConfig

FinishReason = Literal["stop", "length"]


@dataclass
class SamplingParams:
    """How to sample one request. ``temperature == 0`` is greedy (``n`` identical samples)."""

    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0  # nucleus filter, (0, 1]; 1 = off
    top_k: int | None = None  # keep the k most likely tokens; None or 0 = off
    max_new_tokens: int = 256  # response tokens at most (then finish_reason "length")
    stop_strings: list[str] | None = None  # the response ends after the first of these (kept in it)
    n: int = 1  # samples per prompt
    seed: int | None = None  # base seed; a worker's k-th generate call uses seed + k

    @classmethod
    def from_config(cls, cfg: "GenerationConfig", *, n: int = 1) -> "SamplingParams":
        return cls(
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            max_new_tokens=cfg.max_new_tokens,
            stop_strings=list(cfg.stop_strings) if cfg.stop_strings else None,
            n=n,
            seed=cfg.seed,
        )

    def greedy(self) -> "SamplingParams":
        """The same settings with greedy decoding and one sample per prompt."""
        return replace(self, temperature=0.0, n=1)

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def top_k_or_none(self) -> int | None:
        """``top_k`` with 0 normalised to ``None`` (both mean "no top-k filter")."""
        return self.top_k or None

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field for values no backend can sample with."""
        problems = []
        if self.temperature < 0:
            problems.append(f"temperature={self.temperature} must be >= 0 (0 = greedy)")
        if not 0.0 < self.top_p <= 1.0:
            problems.append(f"top_p={self.top_p} must be in (0, 1]")
        if self.top_k is not None and self.top_k < 0:
            problems.append(f"top_k={self.top_k} must be None, 0 (off) or a positive count")
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens={self.max_new_tokens} must be >= 1")
        if self.n < 1:
            problems.append(f"n={self.n} must be >= 1")
        if self.stop_strings is not None and any(not stop for stop in self.stop_strings):
            problems.append(f"stop_strings={self.stop_strings!r} contains an empty string")
        if problems:
            raise ValueError("invalid SamplingParams: " + "; ".join(problems))


@dataclass
class GenerationRequest:
    """Prompts (token ids, no padding) and how to sample them."""

    prompt_token_ids: list[list[int]]  # one list of token ids per prompt; each non-empty
    sampling: SamplingParams


@dataclass
class GeneratedSample:
    """One sampled response to ``prompt_index`` (an index into the request's prompts)."""

    prompt_index: int
    response_token_ids: list[int]  # ends with the EOS token when the model stopped by itself
    response_logprobs: list[float]  # same length; raw-logit log-probs (see the module docstring)
    text: str  # decoded response, special tokens skipped, cut right after a stop string
    finish_reason: FinishReason  # "stop": EOS or a stop string; "length": max_new_tokens reached


@dataclass
class GenerationOutput:
    """All samples of a request, prompt-major: the ``n`` samples of prompt ``i`` are contiguous."""

    samples: list[GeneratedSample]


@dataclass
class WeightUpdateStats:
    """What one worker loaded in ``update_weights`` (for logs and tests)."""

    num_buckets: int
    num_tensors: int
    num_bytes: int


class GenerationInterface(Protocol):
    """What the generation worker group calls on every backend worker."""

    def generate(self, request: GenerationRequest) -> GenerationOutput: ...

    def update_weights(self, weight_buckets: Iterable[Mapping[str, "torch.Tensor"]]) -> WeightUpdateStats:
        """Load a full set of HF-named weights, streamed as buckets ``{name: tensor}``, in place."""
        ...

    def update_weights_from_refs(self, refs: list[Any]) -> WeightUpdateStats:
        """``update_weights`` from Ray object refs of buckets, fetched one at a time."""
        ...

    def sleep(self) -> None:
        """Free accelerator memory (weights to CPU, KV cache dropped) until :meth:`wake_up`."""
        ...

    def wake_up(self) -> None: ...
