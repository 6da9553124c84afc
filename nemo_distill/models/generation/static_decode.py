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
* step t (:func:`sample_next_token`): raw logits -> their fp32 log-softmax (the recorded log-prob,
  raw-logit convention) -> the sampling processors -> argmax or one random draw (an exponential
  race, see below); a row that has emitted an EOS gets the pad token from then on; the token is
  written at cache position ``P + t`` with position id ``prompt tokens + t`` (left padding does not
  shift positions);
* ``fuse_sampling`` (with ``compile_decode``): the decode forward and that sampling are compiled as
  one function, so a token costs one graph replay instead of a replay plus ~12 eager sampling
  kernels (on GPU each a launch the host must issue);
* grouped-query models decode with :mod:`~.grouped_decode_attention` (each key/value head read once,
  not expanded to one copy per query head as HF's ``sdpa`` does under a mask);
* the host checks "has every row finished?" only every ``finished_check_every`` steps, so the GPU
  runs ahead of Python in between (a finished batch may run up to that many steps too long; the
  extra columns are pad and are cut by the caller like any tail after EOS).

The random draw is an exponential race, ``argmax(p / E)`` with ``E ~ Exp(1)`` i.i.d. per token
(the Gumbel-max trick: token ``v`` wins with probability ``p_v``). ``torch.multinomial`` draws one
sample the same way internally, but as its own kernels behind input checks; written out, inductor
generates the uniform noise inside the fused sampling kernel (under CUDA graphs each replay gets a
fresh RNG offset of the seeded generator). Eager and compiled steps share the code, so they sample
the same distribution, not the same draws (inductor's RNG stream is its own); neither reproduces
the draws of ``generate``'s ``multinomial`` for a seed.

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


def sample_next_token(logits: torch.Tensor, finished: torch.Tensor, eos: torch.Tensor, *, greedy: bool,
                      processors: Sequence[LogitsProcessor], pad_token_id: int,
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One token per row from one step's logits: ``(token [B] long, logprob [B] fp32, finished [B] bool)``.

    ``logits``: ``[B, V]`` raw logits (any float dtype); ``finished``: ``[B]`` rows that have emitted
    an EOS before this step; ``eos``: ``[n]`` long EOS ids (may be empty). The processors see the raw
    fp32 logits; greedy takes their argmax, sampling an exponential race over their softmax (see the
    module docstring). Finished rows get ``pad_token_id`` and log-prob 0; ``logprob`` is the token's
    log-softmax under the RAW logits. The returned ``finished`` adds the rows whose token is an EOS.

    Pure tensor code (no host sync, no data-dependent Python branch), so it runs eagerly and inside
    the compiled decode step alike.
    """
    raw = logits.float()
    scores = raw
    for processor in processors:
        scores = processor(None, scores)
    if greedy:
        token = scores.argmax(dim=-1)
    else:
        # E = -log(U), U ~ uniform[0, 1): never 0 (U < 1), so no token wins by a zero divisor. U is clamped
        # away from 0 (a 2^-24 chance): E = inf would give the only token a top-k / top-p filter kept a
        # score of -inf, and the argmax would then pick a filtered one.
        # argmax(p / E) = argmax(scores - log E): the softmax's normaliser is the same for the whole row.
        exponential = -torch.log(torch.rand_like(scores).clamp_min(torch.finfo(scores.dtype).tiny))
        token = (scores - torch.log(exponential)).argmax(dim=-1)
    token = token.masked_fill(finished, pad_token_id)
    logprob = torch.log_softmax(raw, dim=-1).gather(1, token[:, None]).squeeze(1).masked_fill(finished, 0.0)
    return token, logprob, finished | torch.isin(token, eos)


class StaticCacheSampler:
    """Samples continuations of left-padded prompts with one HF causal LM (see the module docstring).

    ``compile_decode``: compile the one-token decode step with ``torch.compile(mode="reduce-overhead")``
    (CUDA graphs); meant for GPUs, where launches dominate a small model's decode step. On CPU the
    same loop runs eagerly. ``fuse_sampling`` (only with ``compile_decode``): compile the decode step
    and :func:`sample_next_token` as one graph returning ``(token, logprob, finished)`` instead of
    logits; without ``compile_decode`` it changes nothing (the eager loop runs the same function).
    ``grouped_decode_attention`` switches an ``sdpa`` model to
    :func:`~.grouped_decode_attention.use_grouped_decode_attention` (the same attention without
    key/value copies; off only to measure what it buys), computed by ``decode_attention`` (``sdpa`` or
    ``matmul``, see that module).
    """

    def __init__(self, model: torch.nn.Module, *, compile_decode: bool, finished_check_every: int = 16,
                 grouped_decode_attention: bool = True, fuse_sampling: bool = False, decode_attention: str = "sdpa"):
        if finished_check_every < 1:
            raise ValueError(f"finished_check_every must be >= 1, got {finished_check_every}")
        self.model = model
        self.grouped_decode_attention = grouped_decode_attention and use_grouped_decode_attention(model, decode_attention)
        if not grouped_decode_attention:
            use_hf_sdpa_attention(model)  # a model an earlier sampler switched goes back
        self.cache_keyword = cache_keyword(model)
        self.finished_check_every = finished_check_every
        self.compiled = compile_decode
        self.fused = compile_decode and fuse_sampling
        step = self._forward_and_sample if self.fused else self._forward
        self._decode = torch.compile(step, mode="reduce-overhead", fullgraph=True) if compile_decode else step

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                 cache_position: torch.Tensor, cache) -> torch.Tensor:
        """``[B, V]`` logits at the last of ``input_ids``' positions; writes their keys and values into ``cache``."""
        output = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            cache_position=cache_position, use_cache=True, logits_to_keep=1, **{self.cache_keyword: cache})
        return output.logits[:, -1, :]

    def _forward_and_sample(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                            cache_position: torch.Tensor, cache, finished: torch.Tensor, eos: torch.Tensor, greedy: bool,
                            processors: Sequence[LogitsProcessor], pad_token_id: int,
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`_forward` then :func:`sample_next_token`: ``(token, logprob, finished)``, each ``[B]``.

        Compiled, ``greedy``, ``pad_token_id`` and the processors' settings (temperature, top-k, top-p)
        are constants of the graph: another setting compiles (and records) one more graph.
        """
        logits = self._forward(input_ids, attention_mask, position_ids, cache_position, cache)
        return sample_next_token(logits, finished, eos, greedy=greedy, processors=processors, pad_token_id=pad_token_id)

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

        choose = dict(greedy=greedy, processors=list(processors), pad_token_id=pad_token_id)
        logits = self._forward(input_ids, full_mask, prompt_positions, torch.arange(prompt_len, device=device), cache)
        token, logprob, finished = sample_next_token(logits, finished, eos, **choose)
        tokens, logprobs = [], []
        for step in range(max_new_tokens):
            tokens.append(token)
            logprobs.append(logprob)
            if step == max_new_tokens - 1:
                break
            if (step + 1) % self.finished_check_every == 0 and bool(finished.all()):
                break
            if self.compiled:
                # a new CUDA-graph generation: the last replay's outputs may be overwritten by this one, which is
                # why the fused outputs are cloned below (the unfused logits are consumed by then)
                torch.compiler.cudagraph_mark_step_begin()
            inputs = (token[:, None], full_mask, prompt_tokens + step, new_token_cache_positions[step : step + 1], cache)
            if self.fused:
                token, logprob, finished = (t.clone() for t in self._decode(*inputs, finished, eos, **choose))
            else:
                token, logprob, finished = sample_next_token(self._decode(*inputs), finished, eos, **choose)
        tokens, logprobs = torch.stack(tokens, dim=1), torch.stack(logprobs, dim=1)
        _check_finite(logprobs)
        return tokens, logprobs


def _check_finite(logprobs: torch.Tensor) -> None:
    """Raise when a sampled token's log-prob ``[B, G]`` is NaN or infinite: the model's logits were (a diverged
    or corrupted policy). ``generate``'s multinomial refuses such logits too; the loop's argmax would
    return a token for them, so the check runs once per call, after the loop (one wait, not one per token)."""
    bad = ~torch.isfinite(logprobs)
    if bool(bad.any()):
        rows = bad.any(dim=1).nonzero().flatten().tolist()
        first = int(bad[rows[0]].nonzero()[0])
        raise FloatingPointError(
            f"generation produced non-finite log-probs in rows {rows[:8]}{' ...' if len(rows) > 8 else ''} (row "
            f"{rows[0]} from new token {first} on): the model's logits are NaN or infinite; check the policy's "
            "weights (a diverged or corrupted checkpoint)"
        )
