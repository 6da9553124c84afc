"""Rollouts with HF transformers ``generate``: batched, left-padded, on CPU or GPU.

What happens in one :meth:`HFGenerationWorker.generate` call:

* prompts are left-padded (new tokens are appended on the right, so every prompt must end in
  the last column) and run in chunks of at most ``max_batch_size`` sequences (prompts x ``n``);
* sampling: ``temperature == 0`` is greedy (one decode per prompt, copied ``n`` times), else
  temperature -> top-k -> top-p, applied by our own processors *after* a recorder that sees the
  raw logits, so ``response_logprobs`` follow the raw-logit convention of
  :mod:`~nemo_distill.models.generation.interfaces` while holding one ``[rows, V]`` fp32 step at a
  time (``output_logits=True`` would keep every step's ``[rows, V]`` until the end);
* responses end at the first EOS token (kept, ``"stop"``), right after the first stop string
  (tokens: the shortest prefix whose text contains it; text: cut right after it; ``"stop"``), or
  at ``max_new_tokens`` (``"length"``);
* seeding: the worker's ``k``-th call runs ``torch.manual_seed(seed + k)`` when ``seed`` is set.

The model's own ``generation_config`` (a hub model may ship e.g. ``repetition_penalty`` or
``top_k``) is replaced by a neutral one at load time: sampling is exactly what
:class:`SamplingParams` says.

``policy.generation.hf_static_cache`` switches to a static KV cache, with which transformers
compiles the decode step on GPU. Compiled code is only fast when shapes repeat, so then every
chunk is padded to the same number of rows (copies of its last prompt, whose outputs are
dropped) and prompts are left-padded to a multiple of ``static_cache_pad_to`` tokens.

``policy.generation.hf_sampler: loop`` replaces ``generate`` by our own token loop over a static
cache (:mod:`~nemo_distill.models.generation.static_decode`; same padding, same processors, same
response cutting), which keeps the host from waiting on the GPU at every token.
"""

from __future__ import annotations

import bisect
import logging
import os
from typing import Any, Callable, Iterable, Mapping

import torch

from nemo_distill.data.collate import left_pad
from nemo_distill.models.generation.config import GenerationConfig
from nemo_distill.models.generation.interfaces import (
    FinishReason,
    GeneratedSample,
    GenerationOutput,
    GenerationRequest,
    SamplingParams,
    WeightUpdateStats,
)
from nemo_distill.models.generation.static_decode import StaticCacheSampler
from nemo_distill.models.generation.weight_transfer import WeightReceiver, tensor_nbytes
from nemo_distill.models.loading import TokenizerConfig, cpu_has_native_bf16, load_causal_lm, load_tokenizer, resolve_dtype
from nemo_distill.utils.cpu_threads import configure_cpu_threads

log = logging.getLogger(__name__)


class RawLogprobRecorder:
    """A logits processor, first in the chain, recording log p(sampled token) under the RAW logits.

    ``generate`` calls processors once per step with the ids so far and that step's raw logits
    ``[rows, V]``; the token sampled at step ``t`` is only known at step ``t + 1`` (or after the
    last step, see :meth:`finish`), so only one step's fp32 log-softmax is kept at a time.
    """

    def __init__(self) -> None:
        self._previous: torch.Tensor | None = None  # [rows, V] fp32 log-probs of the last step
        self._per_step: list[torch.Tensor] = []  # [rows] log-probs of the tokens sampled so far

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self._previous is not None:
            self._per_step.append(self._previous.gather(1, input_ids[:, -1:]).squeeze(1))
        self._previous = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, generated: torch.Tensor) -> torch.Tensor:
        """``[rows, G]`` log-probs of the ``G`` generated tokens ``generated`` ``[rows, G]``."""
        if self._previous is None:
            return torch.zeros(generated.shape[0], 0)
        steps = [*self._per_step, self._previous.gather(1, generated[:, -1:]).squeeze(1)]
        if len(steps) != generated.shape[1]:
            raise RuntimeError(f"recorded {len(steps)} decode steps but generate returned {generated.shape[1]} new tokens")
        return torch.stack(steps, dim=1).cpu()


def sampling_processors(sampling: SamplingParams) -> list[Any]:
    """HF logits warpers for temperature, top-k, top-p (in HF's own order); none when greedy."""
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    if sampling.is_greedy:
        return []
    processors: list[Any] = []
    if sampling.temperature != 1.0:
        processors.append(TemperatureLogitsWarper(sampling.temperature))
    if sampling.top_k_or_none is not None:
        processors.append(TopKLogitsWarper(top_k=sampling.top_k_or_none))
    if sampling.top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p=sampling.top_p))
    return processors


def _first_stop_end(text: str, stop_strings: list[str]) -> int | None:
    """Character index right after the earliest-ending stop string in ``text``, or None."""
    ends = [text.find(stop) + len(stop) for stop in stop_strings if stop in text]
    return min(ends) if ends else None


def finalize_response(
    token_ids: list[int],
    logprobs: list[float],
    *,
    eos_token_ids: set[int],
    stop_strings: list[str] | None,
    decode: Callable[[list[int]], str],
) -> tuple[list[int], list[float], str, FinishReason]:
    """Cut one generated row at its first EOS or stop string; return ``(tokens, logprobs, text, reason)``.

    ``decode`` turns token ids into text (special tokens skipped). EOS is kept in the tokens;
    for a stop string the tokens are the shortest prefix whose text contains it (the last token
    may carry characters beyond it) and the text is cut right after it.
    """
    end, reason = len(token_ids), "length"
    for position, token in enumerate(token_ids):
        if token in eos_token_ids:
            end, reason = position + 1, "stop"
            break
    cut_text_at_stop = False
    if stop_strings and _first_stop_end(decode(token_ids[:end]), stop_strings) is not None:
        # Decoded text grows with the token prefix, so "contains a stop string" is monotone in the
        # prefix length: binary search for the shortest such prefix.
        contains = lambda length: _first_stop_end(decode(token_ids[:length]), stop_strings) is not None  # noqa: E731
        end = bisect.bisect_left(range(end + 1), True, key=contains)
        reason, cut_text_at_stop = "stop", True
    text_tokens = token_ids[:end]
    if reason == "stop" and not cut_text_at_stop and text_tokens[-1] in eos_token_ids:
        # the EOS ends the text even when the tokenizer does not mark it special (an extra EOS id
        # from generation_config.json): an EOS-only response is the empty text
        text_tokens = text_tokens[:-1]
    text = decode(text_tokens)
    if cut_text_at_stop:
        text = text[: _first_stop_end(text, stop_strings or [])]
    return token_ids[:end], logprobs[:end], text, reason


class HFGenerationWorker(WeightReceiver):
    """One generation replica (a Ray actor of ``GenerationWorkerGroup``; usable in-process too).

    Device: the first visible GPU if any (inside Ray, the slot's GPU), else CPU.
    """

    def __init__(
        self,
        model_name: str,
        cfg: GenerationConfig,
        *,
        precision: str = "auto",
        tokenizer_cfg: TokenizerConfig | None = None,
    ):
        from transformers import GenerationConfig as HFGenerationConfig

        self.cfg = cfg
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        if self.device.type == "cpu" and "NEMO_DISTILL_ROLE" in os.environ:  # a worker-group actor, not a caller's process
            configure_cpu_threads(int(os.environ.get("WORLD_SIZE", "1")), limit=1)  # one: see configure_cpu_threads
        self.dtype = resolve_dtype(precision, self.device)
        if cfg.cpu_bfloat16 and self.device.type == "cpu":
            if cpu_has_native_bf16():
                self.dtype = torch.bfloat16
            else:
                log.warning("policy.generation.cpu_bfloat16: this CPU has neither AMX nor AVX512-BF16; sampling in %s",
                            str(self.dtype).replace("torch.", ""))
        self.tokenizer = load_tokenizer(model_name, tokenizer_cfg)
        self.model = load_causal_lm(model_name, dtype=self.dtype, device=self.device).eval()
        self.model.requires_grad_(False)
        self.eos_token_ids = self._eos_token_ids()
        self.pad_token_id = int(self.tokenizer.pad_token_id)
        self.model.generation_config = HFGenerationConfig(
            bos_token_id=self.tokenizer.bos_token_id, eos_token_id=sorted(self.eos_token_ids), pad_token_id=self.pad_token_id
        )
        self.num_generate_calls = 0
        self.is_asleep = False
        self.lifecycle_events: list[str] = []  # "sleep" / "wake_up" / "auto_wake_up", in call order
        self._static_sampler: StaticCacheSampler | None = None  # hf_sampler: loop, built on first use
        # hf_sampler: loop compiles its decode step on GPU only (CUDA graphs); eager on CPU gains nothing from it
        self.compiles_own_loop = cfg.hf_sampler == "loop" and self.device.type == "cuda"

    def _eos_token_ids(self) -> set[int]:
        """EOS ids from the model's generation config (may be a list) plus the tokenizer's."""
        configured = self.model.generation_config.eos_token_id if self.model.generation_config is not None else None
        values = configured if isinstance(configured, list) else [configured]
        ids = {int(value) for value in [*values, self.tokenizer.eos_token_id] if value is not None}
        if not ids:
            raise ValueError("the model and tokenizer define no EOS token; generation could never stop by itself")
        return ids

    def _decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    # -- generation ------------------------------------------------------------------------

    def generate(self, request: GenerationRequest) -> GenerationOutput:
        """All ``n`` samples of every prompt, prompt-major (see the module docstring)."""
        sampling = request.sampling
        sampling.validate()
        empty = [i for i, prompt in enumerate(request.prompt_token_ids) if len(prompt) == 0]
        if empty:
            raise ValueError(f"prompts {empty[:5]} are empty; every prompt needs at least one token")
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed + self.num_generate_calls)
        self.num_generate_calls += 1
        if not request.prompt_token_ids:
            return GenerationOutput(samples=[])
        if self.is_asleep:
            # The caller forgot wake_up() (e.g. validation between colocated steps): serve the
            # request, but give the memory back afterwards as the caller expects.
            log.warning("generate() called while asleep: waking up for this call")
            self._move_model(self.device)
            self.lifecycle_events.append("auto_wake_up")
            try:
                return self._generate_awake(request.prompt_token_ids, sampling)
            finally:
                self._move_model(torch.device("cpu"))
        return self._generate_awake(request.prompt_token_ids, sampling)

    def _generate_awake(self, prompts: list[list[int]], sampling: SamplingParams) -> GenerationOutput:
        rows_per_prompt = 1 if sampling.is_greedy else sampling.n
        prompts_per_chunk = max(1, self.cfg.max_batch_size // rows_per_prompt)
        samples: list[GeneratedSample] = []
        for start in range(0, len(prompts), prompts_per_chunk):
            for sample in self._generate_chunk(prompts[start : start + prompts_per_chunk], sampling):
                sample.prompt_index += start
                samples.append(sample)
        return GenerationOutput(samples=samples)

    @torch.inference_mode()
    def _generate_chunk(self, prompts: list[list[int]], sampling: SamplingParams) -> list[GeneratedSample]:
        # HF refuses num_return_sequences > 1 for greedy search; greedy samples are identical anyway.
        rows_per_prompt = 1 if sampling.is_greedy else sampling.n
        num_prompts = len(prompts)
        # compiled decode steps want one shape for every chunk: full chunks of rows, prompt lengths rounded up
        static = self.cfg.hf_static_cache or self.compiles_own_loop
        if static:
            prompts = prompts + [prompts[-1]] * (max(1, self.cfg.max_batch_size // rows_per_prompt) - num_prompts)
        input_ids, attention_mask = left_pad(prompts, self.pad_token_id, multiple_of=self.cfg.static_cache_pad_to if static else 1)
        if self.cfg.hf_sampler == "loop":
            generated, logprobs = self._sample_with_own_loop(input_ids, attention_mask, sampling, rows_per_prompt)
        else:
            generated, logprobs = self._sample_with_generate(input_ids, attention_mask, sampling, rows_per_prompt)
        kept_rows = num_prompts * rows_per_prompt  # static shapes: the padding rows are dropped here
        logprobs = logprobs[:kept_rows].cpu()
        generated = generated[:kept_rows].cpu()
        samples = []
        for row in range(generated.shape[0]):
            tokens, token_logprobs, text, reason = finalize_response(
                generated[row].tolist(),
                logprobs[row].tolist(),
                eos_token_ids=self.eos_token_ids,
                stop_strings=sampling.stop_strings,
                decode=self._decode,
            )
            for _ in range(sampling.n if sampling.is_greedy else 1):
                samples.append(GeneratedSample(row // rows_per_prompt, list(tokens), list(token_logprobs), text, reason))
        return samples

    def _sample_with_generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, sampling: SamplingParams,
                              rows_per_prompt: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens, logprobs)`` ``[prompts x rows_per_prompt, G]`` from transformers' ``generate``."""
        from transformers import GenerationConfig as HFGenerationConfig
        from transformers import LogitsProcessorList

        sampling_kwargs = {} if sampling.is_greedy else {"temperature": 1.0, "top_k": 0, "top_p": 1.0}  # ours apply them
        generation_config = HFGenerationConfig(
            max_new_tokens=sampling.max_new_tokens,
            do_sample=not sampling.is_greedy,
            num_return_sequences=rows_per_prompt,
            eos_token_id=sorted(self.eos_token_ids),
            pad_token_id=self.pad_token_id,
            stop_strings=sampling.stop_strings,
            cache_implementation="static" if self.cfg.hf_static_cache else None,
            **sampling_kwargs,
        )
        recorder = RawLogprobRecorder()
        sequences = self.model.generate(
            input_ids=input_ids.to(self.device),
            attention_mask=attention_mask.to(self.device),
            generation_config=generation_config,
            logits_processor=LogitsProcessorList([recorder, *sampling_processors(sampling)]),
            tokenizer=self.tokenizer if sampling.stop_strings else None,
        )
        generated = sequences[:, input_ids.shape[1] :]
        return generated, recorder.finish(generated)

    def _sample_with_own_loop(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, sampling: SamplingParams,
                              rows_per_prompt: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens, logprobs)`` ``[prompts x rows_per_prompt, G]`` from :class:`StaticCacheSampler`."""
        if self._static_sampler is None:
            self._static_sampler = StaticCacheSampler(self.model, compile_decode=self.compiles_own_loop,
                                                      fuse_sampling=self.cfg.hf_fused_sampling,
                                                      decode_attention=self.cfg.hf_decode_attention)
        return self._static_sampler.sample(
            input_ids.repeat_interleave(rows_per_prompt, dim=0).to(self.device),
            attention_mask.repeat_interleave(rows_per_prompt, dim=0).to(self.device),
            max_new_tokens=sampling.max_new_tokens, greedy=sampling.is_greedy, processors=sampling_processors(sampling),
            eos_token_ids=sorted(self.eos_token_ids), pad_token_id=self.pad_token_id,
        )

    # -- weights ---------------------------------------------------------------------------

    @torch.no_grad()
    def update_weights(self, weight_buckets: Iterable[Mapping[str, torch.Tensor]], *, strict: bool = True) -> WeightUpdateStats:
        """Copy HF-named tensors into the model in place, one bucket at a time.

        Tensors are cast to the model's dtype and device (asleep: into the CPU copy). Raises
        ``KeyError`` for a name the model does not have, ``ValueError`` for a shape mismatch and,
        with ``strict``, ``ValueError`` listing the parameters no bucket provided (tied
        parameters count as provided when any of their names is).
        """
        targets = dict(self.model.named_parameters(remove_duplicate=False))
        targets.update(self.model.named_buffers(remove_duplicate=False))
        loaded: set[str] = set()
        stats = WeightUpdateStats(num_buckets=0, num_tensors=0, num_bytes=0)
        for bucket in weight_buckets:
            for name, tensor in bucket.items():
                target = targets.get(name)
                if target is None:
                    raise KeyError(f"refit: the generation model has no parameter or buffer named '{name}'")
                if tuple(target.shape) != tuple(tensor.shape):
                    raise ValueError(f"refit: '{name}' has shape {tuple(tensor.shape)}, the generation model expects {tuple(target.shape)}")
                target.copy_(tensor)
                loaded.add(name)
                stats.num_tensors += 1
                stats.num_bytes += tensor_nbytes(tensor)
            stats.num_buckets += 1
            del bucket  # keep peak memory at about one bucket while the iterator fetches the next
        if strict:
            self.check_weight_names(loaded)
        return stats

    def check_weight_names(self, names: Iterable[str]) -> None:
        """Raise ``ValueError`` listing the parameters ``names`` leaves unset (tied ones count when any name is given)."""
        params = dict(self.model.named_parameters(remove_duplicate=False))
        covered = {params[name].data_ptr() for name in names if name in params}
        missing = [name for name, param in params.items() if param.data_ptr() not in covered]
        if missing:
            raise ValueError(f"refit: {len(missing)} parameter(s) were not in any bucket, e.g. {missing[:5]}")

    # -- memory ----------------------------------------------------------------------------

    def _move_model(self, device: torch.device) -> None:
        if self.device.type != "cuda":
            return  # on CPU the weights already live in host memory
        self.model.to(device)
        if device.type == "cpu":
            torch.cuda.empty_cache()

    def sleep(self) -> None:
        """GPU: weights to CPU and the cache allocator emptied. CPU: only the state changes."""
        self.lifecycle_events.append("sleep")
        if not self.is_asleep:
            if hasattr(self.model, "_cache"):  # a static KV cache some transformers versions keep between calls
                del self.model._cache
            self._move_model(torch.device("cpu"))
            self.is_asleep = True

    def wake_up(self) -> None:
        self.lifecycle_events.append("wake_up")
        if self.is_asleep:
            self._move_model(self.device)
            self.is_asleep = False

    def get_lifecycle_events(self) -> list[str]:
        return list(self.lifecycle_events)

    def get_generate_calls(self) -> int:
        """How many ``generate`` calls this worker served (its next call seeds with ``seed + count``)."""
        return self.num_generate_calls

    def set_generate_calls(self, count: int) -> None:
        """Restore the call counter on resume, so a resumed run samples what the uninterrupted one would."""
        self.num_generate_calls = int(count)

    def peak_memory_gib(self) -> float:
        return torch.cuda.max_memory_allocated() / 2**30 if self.device.type == "cuda" else 0.0
