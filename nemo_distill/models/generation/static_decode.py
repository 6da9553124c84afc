"""Our own sampling loop over a static KV cache, the decode step compiled once (``hf_sampler: loop``).

Why not ``model.generate``: with a static cache transformers replays the compiled decode step, but
every step also runs its Python bookkeeping (input preparation, growing ``input_ids`` and attention
mask, stopping criteria) and asks the GPU whether every row has finished, which makes the host
wait for the device once per token. Issue 16 measured that gap on an H200 (batch 64, prompt 128,
256 new tokens): ``generate`` with a static cache 8.8k tokens/s, a bare loop like this one 10.6k.

The loop, per chunk of rows (left-padded prompts ``[B, P]``, ``max_new_tokens`` = G):

* a static cache of ``P + G`` positions and one attention mask ``[B, P + G]`` (prompt padding 0,
  everything else 1: causality hides the positions not yet written), so every decode step has the
  same shapes and the compiled graph (CUDA graphs on GPU) is replayed, never rebuilt;
* prefill: the prompts run eagerly (their length varies between calls), the last position's logits
  start the loop;
* step t: raw logits -> their fp32 log-softmax (the recorded log-prob, raw-logit convention) ->
  the sampling processors -> argmax or one multinomial draw; a row that has emitted an EOS gets
  the pad token from then on; the token is written at cache position ``P + t`` with position id
  ``prompt tokens + t`` (left padding does not shift positions);
* grouped-query models decode with :mod:`~.grouped_decode_attention` (each key/value head read once,
  not expanded to one copy per query head as HF's ``sdpa`` does under a mask);
* the host checks "has every row finished?" only every ``finished_check_every`` steps, so the GPU
  runs ahead of Python in between (a finished batch may run up to that many steps too long; the
  extra columns are pad and are cut by the caller like any tail after EOS).

Stop strings are not checked inside the loop: the caller cuts each response at its first stop
string afterwards (:func:`~nemo_distill.models.generation.hf_backend.finalize_response`), which
gives the same responses, only without stopping a batch early.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from nemo_distill.models.generation.grouped_decode_attention import use_grouped_decode_attention, use_hf_sdpa_attention
from nemo_distill.models.kv_cache import cache_keyword

LogitsProcessor = Callable[[torch.Tensor | None, torch.Tensor], torch.Tensor]  # (ids, scores [B, V]) -> scores [B, V]


class StaticCacheSampler:
    """Samples continuations of left-padded prompts with one HF causal LM (see the module docstring).

    ``compile_decode``: compile the one-token decode step with ``torch.compile(mode="reduce-overhead")``
    (CUDA graphs); meant for GPUs, where launches dominate a small model's decode step. On CPU the
    same loop runs eagerly. ``grouped_decode_attention`` switches an ``sdpa`` model to
    :func:`~.grouped_decode_attention.use_grouped_decode_attention` (the same attention without
    key/value copies; off only to measure what it buys).
    """

    def __init__(self, model: torch.nn.Module, *, compile_decode: bool, finished_check_every: int = 16,
                 grouped_decode_attention: bool = True):
        if finished_check_every < 1:
            raise ValueError(f"finished_check_every must be >= 1, got {finished_check_every}")
        self.model = model
        self.grouped_decode_attention = grouped_decode_attention and use_grouped_decode_attention(model)
        if not grouped_decode_attention:
            use_hf_sdpa_attention(model)  # a model an earlier sampler switched goes back
        self.cache_keyword = cache_keyword(model)
        self.finished_check_every = finished_check_every
        self._decode = torch.compile(self._forward, mode="reduce-overhead", fullgraph=True) if compile_decode else self._forward
        self.compiled = compile_decode

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                 cache_position: torch.Tensor, cache) -> torch.Tensor:
        """``[B, V]`` logits at the last of ``input_ids``' positions; writes their keys and values into ``cache``."""
        output = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            cache_position=cache_position, use_cache=True, logits_to_keep=1, **{self.cache_keyword: cache})
        return output.logits[:, -1, :]

    @torch.inference_mode()
    def sample(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int, greedy: bool,
               processors: Sequence[LogitsProcessor], eos_token_ids: Sequence[int], pad_token_id: int,
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens, logprobs)``, both ``[B, G']`` on the model's device, ``G' <= max_new_tokens``.

        ``input_ids`` / ``attention_mask``: ``[B, P]`` left-padded prompts (every row ends in the last
        column). ``tokens`` holds each row's sampled tokens, then ``pad_token_id`` after its first EOS;
        ``logprobs`` the fp32 log-probability of each token under the raw logits (0 after EOS).
        """
        from transformers import StaticCache

        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        device = input_ids.device
        batch_size, prompt_len = input_ids.shape
        cache = StaticCache(config=self.model.config, max_cache_len=prompt_len + max_new_tokens)
        full_mask = torch.ones(batch_size, prompt_len + max_new_tokens, dtype=attention_mask.dtype, device=device)
        full_mask[:, :prompt_len] = attention_mask
        prompt_tokens = attention_mask.long().sum(dim=1, keepdim=True)  # [B, 1]: position id of the first new token
        prompt_positions = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)
        eos = torch.tensor(sorted(set(eos_token_ids)), dtype=torch.long, device=device)
        finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
        new_token_cache_positions = torch.arange(prompt_len, prompt_len + max_new_tokens, device=device)

        logits = self._forward(input_ids, full_mask, prompt_positions, torch.arange(prompt_len, device=device), cache)
        tokens, logprobs = [], []
        for step in range(max_new_tokens):
            raw = logits.float()
            scores = raw
            for processor in processors:
                scores = processor(None, scores)
            if greedy:
                token = scores.argmax(dim=-1)
            else:
                token = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
            token = token.masked_fill(finished, pad_token_id)
            logprob = torch.log_softmax(raw, dim=-1).gather(1, token[:, None]).squeeze(1).masked_fill(finished, 0.0)
            tokens.append(token)
            logprobs.append(logprob)
            finished = finished | torch.isin(token, eos)
            if step == max_new_tokens - 1:
                break
            if (step + 1) % self.finished_check_every == 0 and bool(finished.all()):
                break
            if self.compiled:
                torch.compiler.cudagraph_mark_step_begin()  # the last step's logits are consumed: their buffer may be reused
            logits = self._decode(token[:, None], full_mask, prompt_tokens + step,
                                  new_token_cache_positions[step : step + 1], cache)
        return torch.stack(tokens, dim=1), torch.stack(logprobs, dim=1)
