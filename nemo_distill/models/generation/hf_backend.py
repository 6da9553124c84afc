"""Rollouts with HF transformers ``generate``: batched, left-padded, CPU or GPU.

Sampling follows :class:`SamplingParams`; ``temperature == 0`` is greedy. The returned
log-probs are those of the RAW model (temperature 1, no top-p/top-k), so after a refit they
equal the policy's ``get_logprobs`` on the same tokens (up to padding-side numerics).
"""

from __future__ import annotations

import torch

from nemo_distill.data.collate import left_pad
from nemo_distill.models.generation.config import GenerationConfig
from nemo_distill.models.generation.interfaces import GeneratedSample, GenerationOutput, GenerationRequest, SamplingParams
from nemo_distill.models.loading import TokenizerConfig, load_causal_lm, load_tokenizer


def cut_at_stop_string(token_ids: list[int], tokenizer, stop_strings: list[str]) -> tuple[list[int], bool]:
    """Shortest prefix of ``token_ids`` whose text contains a stop string (the stop string kept)."""
    text = tokenizer.decode(token_ids, skip_special_tokens=True)
    if not any(stop in text for stop in stop_strings):
        return token_ids, False
    for end in range(1, len(token_ids) + 1):
        prefix_text = tokenizer.decode(token_ids[:end], skip_special_tokens=True)
        if any(stop in prefix_text for stop in stop_strings):
            return token_ids[:end], True
    return token_ids, True


class HFGenerationWorker:
    """One generation replica (a Ray actor in ``GenerationWorkerGroup``; usable directly too)."""

    def __init__(self, model_name: str, cfg: GenerationConfig, *, precision: str = "auto", tokenizer_cfg: TokenizerConfig | None = None):
        self.cfg = cfg
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        gpu = self.device.type == "cuda"
        dtype = torch.bfloat16 if (precision == "bfloat16" or (precision == "auto" and gpu)) else torch.float32
        self.model = load_causal_lm(model_name, dtype=dtype, device=self.device).eval()
        self.tokenizer = load_tokenizer(model_name, tokenizer_cfg)
        self.eos_token_ids = self._eos_ids()
        self.calls = 0

    def _eos_ids(self) -> set[int]:
        ids = set()
        config_eos = self.model.generation_config.eos_token_id
        for value in (config_eos if isinstance(config_eos, list) else [config_eos]) + [self.tokenizer.eos_token_id]:
            if value is not None:
                ids.add(int(value))
        return ids

    @torch.no_grad()
    def _generate_chunk(self, prompts: list[list[int]], sampling: SamplingParams) -> list[GeneratedSample]:
        input_ids, attention_mask = left_pad(prompts, self.tokenizer.pad_token_id)
        greedy = sampling.temperature == 0
        kwargs = dict(
            input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
            max_new_tokens=sampling.max_new_tokens, do_sample=not greedy, num_return_sequences=sampling.n,
            output_logits=True, return_dict_in_generate=True, pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(self.eos_token_ids),
        )
        if not greedy:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k or 0)
        if sampling.stop_strings:
            kwargs.update(stop_strings=sampling.stop_strings, tokenizer=self.tokenizer)
        output = self.model.generate(**kwargs)
        new_tokens = output.sequences[:, input_ids.shape[1]:].cpu()
        # Gather per step so the fp32 log-softmax of only one [rows, V] step exists at a time.
        token_logprobs = torch.stack(
            [torch.log_softmax(step.float(), dim=-1).gather(-1, output.sequences[:, input_ids.shape[1] + j, None]).squeeze(-1)
             for j, step in enumerate(output.logits)], dim=1,
        ).cpu() if output.logits else torch.zeros(new_tokens.shape[0], 0)
        samples = []
        for row in range(new_tokens.shape[0]):
            tokens = new_tokens[row].tolist()
            finish = "length"
            for position, token in enumerate(tokens):
                if token in self.eos_token_ids:
                    tokens, finish = tokens[: position + 1], "stop"
                    break
            if sampling.stop_strings:
                tokens, stopped = cut_at_stop_string(tokens, self.tokenizer, sampling.stop_strings)
                finish = "stop" if stopped else finish
            logprobs = token_logprobs[row, : len(tokens)].tolist()
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            for stop in sampling.stop_strings or []:
                if stop in text:
                    text = text[: text.index(stop) + len(stop)]
            samples.append(GeneratedSample(prompt_index=row // sampling.n, response_token_ids=tokens, response_logprobs=logprobs,
                                           text=text, finish_reason=finish))
        return samples

    def generate(self, request: GenerationRequest) -> GenerationOutput:
        """All ``n`` samples of every prompt, prompt-major, in chunks of ``max_batch_size`` sequences."""
        sampling = request.sampling
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed + self.calls)
        self.calls += 1
        prompts_per_chunk = max(1, self.cfg.max_batch_size // sampling.n)
        samples: list[GeneratedSample] = []
        for start in range(0, len(request.prompt_token_ids), prompts_per_chunk):
            chunk = self._generate_chunk(request.prompt_token_ids[start : start + prompts_per_chunk], sampling)
            for sample in chunk:
                sample.prompt_index += start
            samples.extend(chunk)
        return GenerationOutput(samples=samples)

    def update_weights(self, bucket: dict[str, torch.Tensor]) -> int:
        """Load one bucket of HF-named tensors in place; unknown names are an error."""
        own = self.model.state_dict()
        unknown = [name for name in bucket if name not in own]
        if unknown:
            raise KeyError(f"refit: the generation model has no parameters named {unknown[:5]}")
        with torch.no_grad():
            for name, tensor in bucket.items():
                own[name].copy_(tensor.to(own[name].dtype))
        return len(bucket)

    def update_weights_from_refs(self, refs: list) -> int:
        """Fetch buckets from the object store one at a time and load them."""
        import ray

        loaded = 0
        for ref in refs:
            bucket = ray.get(ref)
            loaded += self.update_weights(bucket)
            del bucket
        return loaded

    def sleep(self) -> None:
        if self.device.type == "cuda":
            self.model.to("cpu")
            torch.cuda.empty_cache()

    def wake_up(self) -> None:
        if self.device.type == "cuda":
            self.model.to(self.device)

    def peak_memory_gib(self) -> float:
        return torch.cuda.max_memory_allocated() / 2**30 if self.device.type == "cuda" else 0.0
