"""Decode-step attention that reads each key/value head once, for grouped-query models (``hf_sampler: loop``).

HF's ``sdpa`` attention gives a grouped-query model (``H`` query heads sharing ``H_kv`` key/value
heads, ``groups = H / H_kv``) its keys and values expanded to one copy per query head
(``repeat_kv``) whenever it passes a mask, unless it can hand the grouping to SDPA itself, which
it does only without a mask (and, in recent transformers, packs one query token per group only
outside ``torch.compile``). A static-cache decode step always has a mask (the cache's unwritten
positions) and is compiled, so every layer writes and reads back ``groups`` copies of its whole
cache each token: for Qwen3-0.6B (28 layers, 8 key/value heads of 128, groups 2) at batch 64 and
384 cached positions, 5.5 GB written and 5.5 GB read per decode step on top of the 2.75 GB cache
and the 1.2 GB of weights a step must read anyway.

With one query token the copies are not needed: the ``groups`` query heads that share a key/value
head become ``groups`` query rows of that head, ``[B, H, 1, D] -> [B, H_kv, groups, D]``, and the
mask (``[B, 1, 1, L]``, the same for every head and row) broadcasts over them. The attention is
the same sum over the same keys; only the key/value copies are gone.

Two kernels compute it (``kernel``, ``policy.generation.hf_decode_attention``):

* ``sdpa``: torch's ``scaled_dot_product_attention``, the same kernel HF's ``sdpa`` runs;
* ``matmul``: two batched matrix products around an fp32 softmax (HF's ``eager`` attention's
  numerics: the query-key products are rounded to bf16 before the softmax, where SDPA keeps them in
  fp32; with large products, e.g. attention sinks, its error grows past SDPA's). On an H100, under the decode step's CUDA graph, SDPA picked
  cuDNN's fused attention, which took ~50 us per layer for ``groups = 2`` query rows against 384 cached
  positions, 40% of the decode step, for a sum that reads ~12.6 MB (a few microseconds of memory
  traffic): a kernel tiled for long query blocks, nearly idle on two rows. The softmax is written out
  (max, exp, sum) so that inductor's attention pattern matcher does not turn the products back into SDPA.

:func:`use_grouped_decode_attention` switches a model to it (registered with HF's attention and
mask interfaces under :data:`GROUPED_DECODE_SDPA` or :data:`GROUPED_DECODE_MATMUL`, HF's own ``sdpa``
mask). Anything else (several query tokens, a per-head mask, dropout, soft-capping, a position bias,
``groups == 1``) goes to HF's ``sdpa`` attention unchanged.
"""

from __future__ import annotations

from functools import partial

import torch

GROUPED_DECODE_SDPA = "nemo_distill_grouped_decode_sdpa"
GROUPED_DECODE_MATMUL = "nemo_distill_grouped_decode_matmul"
DECODE_ATTENTION_KERNELS = {"sdpa": GROUPED_DECODE_SDPA, "matmul": GROUPED_DECODE_MATMUL}


def packed_decode_attention_matmul(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                   attention_mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """``query`` ``[B, H_kv, groups, D]`` against ``key`` / ``value`` ``[B, H_kv, L, D]``; ``attention_mask``
    ``[B, 1, 1, L]`` (bool: True = attend; or additive float) or None. Returns ``[B, H_kv, groups, D]``
    in ``value``'s dtype: products in the inputs' dtype, softmax in fp32."""
    scores = torch.matmul(query, key.transpose(-1, -2)).float() * scale  # [B, H_kv, groups, L]
    if attention_mask is not None:
        scores = (scores.masked_fill(~attention_mask, float("-inf")) if attention_mask.dtype == torch.bool
                  else scores + attention_mask.float())
    # Written out (not torch.softmax) so inductor's attention patterns do not rewrite it into SDPA. A row
    # with every position masked gets zeros, as SDPA gives (the clamps keep -inf - -inf and 0 / 0 out).
    scores = scores - scores.amax(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).min)
    weights = scores.exp()
    weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    return torch.matmul(weights.to(value.dtype), value)


def grouped_decode_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    *,
    kernel: str = "sdpa",
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """HF attention-interface function: ``query`` ``[B, H, q, D]``, ``key`` / ``value`` ``[B, H_kv, L, D]``,
    ``attention_mask`` ``[B, 1 or H, q, L]`` (bool: True = attend) or None; returns ``([B, q, H, D], None)``.
    ``kernel``: ``sdpa`` or ``matmul`` for the packed case (see the module docstring)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    packable = (
        query.shape[2] == 1
        and groups > 1
        and query.shape[1] == key.shape[1] * groups
        and not (module.training and dropout)
        and kwargs.get("softcap") is None
        and kwargs.get("position_bias") is None
        and (attention_mask is None or attention_mask.shape[1] == 1)
    )
    if not packable:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    batch, heads, _, head_dim = query.shape
    # Query head h reads key/value head h // groups (HF's repeat_kv order), so a plain reshape groups them.
    packed_query = query.reshape(batch, heads // groups, groups, head_dim)
    if kernel == "matmul":
        scale = scaling if scaling is not None else head_dim ** -0.5
        output = packed_decode_attention_matmul(packed_query, key, value, attention_mask, scale)
    else:
        output = torch.nn.functional.scaled_dot_product_attention(packed_query, key, value, attn_mask=attention_mask,
                                                                  scale=scaling)
    return output.reshape(batch, heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None


def use_grouped_decode_attention(model: torch.nn.Module, kernel: str = "sdpa") -> bool:
    """Switch a HF model that uses ``sdpa`` attention to grouped decode attention computed by ``kernel``
    (``sdpa`` or ``matmul``); True when it did.

    Other implementations (eager, flash-attention, a custom one) are left as they are. The same
    attention as ``sdpa`` (tests compare logits and sampled tokens against a float64 reference).
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if kernel not in DECODE_ATTENTION_KERNELS:
        raise ValueError(f"decode attention kernel must be one of {sorted(DECODE_ATTENTION_KERNELS)}, got {kernel!r}")
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) not in ("sdpa", *DECODE_ATTENTION_KERNELS.values()):
        return False
    name = DECODE_ATTENTION_KERNELS[kernel]
    AttentionInterface.register(name, partial(grouped_decode_attention, kernel=kernel))
    AttentionMaskInterface.register(name, sdpa_mask)
    config._attn_implementation = name
    return True


def use_hf_sdpa_attention(model: torch.nn.Module) -> None:
    """Undo :func:`use_grouped_decode_attention`: a model switched to it goes back to HF's ``sdpa``."""
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) in DECODE_ATTENTION_KERNELS.values():
        config._attn_implementation = "sdpa"
