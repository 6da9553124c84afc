"""Grouped decode attention: the same attention as HF's ``sdpa`` for one query token, without key/value
copies; everything else goes to ``sdpa`` unchanged."""

from __future__ import annotations

import types

import pytest
import torch

from nemo_distill.data.collate import left_pad
from nemo_distill.models.generation.grouped_decode_attention import (
    GROUPED_DECODE_MATMUL,
    GROUPED_DECODE_SDPA,
    grouped_decode_attention,
    use_grouped_decode_attention,
)
from nemo_distill.models.generation.static_decode import StaticCacheSampler
from nemo_distill.models.loading import load_causal_lm


def reference_attention(query, key, value, keep, scale):
    """float64 softmax attention with keys / values repeated per query head (HF's ``repeat_kv`` order)."""
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scores = (query.double() @ key.double().transpose(-1, -2)) * scale
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    return (torch.softmax(scores, dim=-1) @ value.double()).transpose(1, 2)  # [B, q, H, D]


def attention_module(groups: int):
    return types.SimpleNamespace(num_key_value_groups=groups, training=False, is_causal=True)


@pytest.mark.parametrize("kernel", ["sdpa", "matmul"])
@pytest.mark.parametrize("with_mask", [True, False])
def test_one_query_token_matches_float64_reference(with_mask, kernel):
    generator = torch.Generator().manual_seed(0)
    batch, kv_heads, groups, length, dim = 3, 2, 4, 11, 8
    query = torch.randn(batch, kv_heads * groups, 1, dim, generator=generator)
    key = torch.randn(batch, kv_heads, length, dim, generator=generator)
    value = torch.randn(batch, kv_heads, length, dim, generator=generator)
    keep = None
    if with_mask:  # row 0 sees every position, row 1 the first 5, row 2 all but two in the middle
        keep = torch.ones(batch, 1, 1, length, dtype=torch.bool)
        keep[1, ..., 5:] = False
        keep[2, ..., 3:5] = False
    output, weights = grouped_decode_attention(attention_module(groups), query, key, value, keep, scaling=0.3, kernel=kernel)
    assert weights is None and output.shape == (batch, 1, kv_heads * groups, dim) and output.is_contiguous()
    torch.testing.assert_close(output.double(), reference_attention(query, key, value, keep, 0.3), atol=1e-5, rtol=0)


def test_only_one_query_token_with_a_shared_mask_is_packed(monkeypatch):
    """Several query tokens, a per-head mask or one key/value head per query head go to HF's sdpa."""
    from transformers.integrations import sdpa_attention

    calls = []
    real = sdpa_attention.sdpa_attention_forward
    monkeypatch.setattr(sdpa_attention, "sdpa_attention_forward", lambda *a, **k: calls.append(a[1].shape) or real(*a, **k))
    generator = torch.Generator().manual_seed(1)
    key = torch.randn(2, 2, 6, 4, generator=generator)
    value = torch.randn(2, 2, 6, 4, generator=generator)
    cases = [
        (attention_module(2), torch.randn(2, 4, 3, 4, generator=generator), torch.ones(2, 1, 3, 6, dtype=torch.bool)),  # 3 tokens
        (attention_module(2), torch.randn(2, 4, 1, 4, generator=generator), torch.ones(2, 4, 1, 6, dtype=torch.bool)),
        (attention_module(1), torch.randn(2, 2, 1, 4, generator=generator), None),  # no grouping
    ]
    for module, query, keep in cases:
        output, _ = grouped_decode_attention(module, query, key, value, keep, scaling=0.5)
        torch.testing.assert_close(output.double(), reference_attention(query, key, value, keep, 0.5), atol=1e-5, rtol=0)
    assert len(calls) == 3
    grouped_decode_attention(attention_module(2), torch.randn(2, 4, 1, 4, generator=generator), key, value, None)
    assert len(calls) == 3  # the packed case does not go through sdpa_attention_forward


def test_matmul_kernel_default_scale_additive_mask_and_a_fully_masked_row():
    """No ``scaling``: 1/sqrt(D); a float mask adds (-inf or 0), as SDPA's float masks do; a row with every
    position masked gets zeros, as SDPA gives."""
    generator = torch.Generator().manual_seed(3)
    query = torch.randn(3, 6, 1, 16, generator=generator)
    key, value = torch.randn(3, 3, 7, 16, generator=generator), torch.randn(3, 3, 7, 16, generator=generator)
    keep = torch.ones(3, 1, 1, 7, dtype=torch.bool)
    keep[0, ..., 4:] = False
    keep[2] = False
    additive = torch.zeros(3, 1, 1, 7).masked_fill(~keep, float("-inf"))
    expected = reference_attention(query[:2], key[:2], value[:2], keep[:2], 16 ** -0.5)
    for mask in (keep, additive):
        output, _ = grouped_decode_attention(attention_module(2), query, key, value, mask, kernel="matmul")
        torch.testing.assert_close(output[:2].double(), expected, atol=1e-5, rtol=0)
        assert torch.isfinite(output).all() and not output[2].any()


def test_matmul_kernel_bf16_is_as_close_to_float64_as_sdpa():
    """bf16 products, fp32 softmax: within a small multiple of SDPA's own bf16 error."""
    generator = torch.Generator().manual_seed(4)
    query = torch.randn(4, 8, 1, 64, generator=generator)
    key, value = torch.randn(4, 4, 96, 64, generator=generator), torch.randn(4, 4, 96, 64, generator=generator)
    keep = torch.ones(4, 1, 1, 96, dtype=torch.bool)
    keep[1, ..., 50:] = False
    expected = reference_attention(query, key, value, keep, 0.125)
    errors = {}
    for kernel in ("sdpa", "matmul"):
        output, _ = grouped_decode_attention(attention_module(2), query.bfloat16(), key.bfloat16(), value.bfloat16(), keep,
                                             scaling=0.125, kernel=kernel)
        assert output.dtype == torch.bfloat16
        errors[kernel] = (output.double() - expected).abs().max().item()
    assert errors["matmul"] <= 4 * errors["sdpa"] + 1e-3, errors


def test_matmul_kernel_compiles_with_inductor_to_the_same_values():
    """The GPU loop compiles the decode step with inductor (``fullgraph``): the written-out softmax must trace
    as one graph and give the eager values."""
    generator = torch.Generator().manual_seed(5)
    query = torch.randn(2, 4, 1, 8, generator=generator)
    key, value = torch.randn(2, 2, 5, 8, generator=generator), torch.randn(2, 2, 5, 8, generator=generator)
    keep = torch.tensor([True, True, True, False, False]).expand(2, 1, 1, 5)
    compiled = torch.compile(lambda *args: grouped_decode_attention(*args, scaling=0.25, kernel="matmul")[0], fullgraph=True)
    torch.testing.assert_close(compiled(attention_module(2), query, key, value, keep),
                               reference_attention(query, key, value, keep, 0.25).float(), atol=1e-5, rtol=0)


def test_traces_as_one_graph():
    """The loop compiles its decode step with ``fullgraph=True``: the packed path must not break the graph."""

    class Attention(torch.nn.Module):
        num_key_value_groups = 2

    module = Attention().eval()
    generator = torch.Generator().manual_seed(2)
    query, key, value = (torch.randn(2, 4, 1, 8, generator=generator), torch.randn(2, 2, 5, 8, generator=generator),
                         torch.randn(2, 2, 5, 8, generator=generator))
    keep = torch.tensor([True, True, True, False, False]).expand(2, 1, 1, 5)
    compiled = torch.compile(grouped_decode_attention, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(module, query, key, value, keep, scaling=0.25)[0],
                               grouped_decode_attention(module, query, key, value, keep, scaling=0.25)[0])


def test_switches_only_sdpa_models(tiny_model_dir):
    eager = load_causal_lm(tiny_model_dir, dtype=torch.float32, device=torch.device("cpu"))
    eager.config._attn_implementation = "eager"
    assert not use_grouped_decode_attention(eager) and eager.config._attn_implementation == "eager"
    model = load_causal_lm(tiny_model_dir, dtype=torch.float32, device=torch.device("cpu"))
    assert model.config._attn_implementation == "sdpa"
    assert use_grouped_decode_attention(model) and model.config._attn_implementation == GROUPED_DECODE_SDPA
    assert use_grouped_decode_attention(model)  # idempotent
    assert use_grouped_decode_attention(model, "matmul") and model.config._attn_implementation == GROUPED_DECODE_MATMUL
    with pytest.raises(ValueError, match="decode attention kernel"):
        use_grouped_decode_attention(model, "flash")


@pytest.mark.parametrize("fixture", ["tiny_model_dir", "tiny_llama_dir"])
def test_sampler_with_matmul_kernel_samples_what_sdpa_samples(fixture, request):
    path = request.getfixturevalue(fixture)
    prompts = [[5, 6, 7, 8, 9], [11, 12], [3, 4, 5, 6, 7, 8, 9, 10, 40, 41]]
    input_ids, attention_mask = left_pad(prompts, 0)
    options = dict(max_new_tokens=6, greedy=True, processors=[], eos_token_ids=[], pad_token_id=0)
    results = {}
    for kernel in ("sdpa", "matmul"):
        model = load_causal_lm(path, dtype=torch.float64, device=torch.device("cpu")).eval()
        sampler = StaticCacheSampler(model, compile_decode=False, decode_attention=kernel)
        assert model.config._attn_implementation == (GROUPED_DECODE_MATMUL if kernel == "matmul" else GROUPED_DECODE_SDPA)
        results[kernel] = sampler.sample(input_ids, attention_mask, **options)
    torch.testing.assert_close(results["matmul"][0], results["sdpa"][0], atol=0, rtol=0)
    # float64 models; the log-probs are fp32 (the loop's convention), so one rounding step apart at most
    torch.testing.assert_close(results["matmul"][1], results["sdpa"][1], atol=2e-6, rtol=0)


@pytest.mark.parametrize("fixture", ["tiny_model_dir", "tiny_llama_dir"])
def test_sampler_decodes_through_packed_attention_with_the_same_result(fixture, request, monkeypatch):
    """The loop's decode steps run packed (query ``[B, H_kv, groups, D]``) and sample what sdpa samples."""
    path = request.getfixturevalue(fixture)
    prompts = [[5, 6, 7, 8, 9], [11, 12], [3, 4, 5, 6, 7, 8, 9, 10, 40, 41]]
    input_ids, attention_mask = left_pad(prompts, 0)
    options = dict(max_new_tokens=6, greedy=True, processors=[], eos_token_ids=[], pad_token_id=0)
    results, query_shapes = {}, []
    real_sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording_sdpa(query, *args, **kwargs):
        query_shapes.append(tuple(query.shape))
        return real_sdpa(query, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording_sdpa)
    for grouped in (False, True):
        model = load_causal_lm(path, dtype=torch.float64, device=torch.device("cpu")).eval()
        sampler = StaticCacheSampler(model, compile_decode=False, grouped_decode_attention=grouped)
        assert sampler.grouped_decode_attention is grouped
        query_shapes.clear()
        results[grouped] = sampler.sample(input_ids, attention_mask, **options)
        heads, kv_heads = model.config.num_attention_heads, model.config.num_key_value_heads
        packed = [s for s in query_shapes if s[1:3] == (kv_heads, heads // kv_heads)]
        layers_x_decode_steps = model.config.num_hidden_layers * (options["max_new_tokens"] - 1)
        if grouped:  # (recent transformers packs too, but only outside torch.compile, which the GPU loop runs under)
            assert len(packed) == layers_x_decode_steps
    torch.testing.assert_close(results[True][0], results[False][0], atol=0, rtol=0)
    torch.testing.assert_close(results[True][1], results[False][1], atol=1e-9, rtol=0)


def test_a_sampler_without_grouped_attention_undoes_an_earlier_switch(tiny_model_dir):
    """Two samplers on one model: the second (``grouped_decode_attention=False``) runs HF's sdpa again."""
    model = load_causal_lm(tiny_model_dir, dtype=torch.float32, device=torch.device("cpu")).eval()
    assert StaticCacheSampler(model, compile_decode=False).grouped_decode_attention
    assert model.config._attn_implementation == GROUPED_DECODE_SDPA
    assert not StaticCacheSampler(model, compile_decode=False, grouped_decode_attention=False).grouped_decode_attention
    assert model.config._attn_implementation == "sdpa"
