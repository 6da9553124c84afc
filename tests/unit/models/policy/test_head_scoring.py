"""Scoring through the chunked output embedding equals scoring full logits, never runs the head on
more than ``chunk`` rows (besides the model's own last row), and refuses models whose logits are
not ``head(hidden)``. In-process, one tiny model, fp32 on CPU."""

from __future__ import annotations

import pytest
import torch

from nemo_distill.models.loading import load_causal_lm
from nemo_distill.models.policy.head_scoring import (ChunkedHeadUnsupported, accepts_logits_to_keep, score_with_chunked_head,
                                                     train_loss_with_chunked_head)
from nemo_distill.models.policy.logprobs import head_token_logprobs, head_topk, token_logprobs

SEQ_LEN = 7


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_causal_lm(tiny_model_dir, dtype=torch.float32, device="cpu").eval()


def _batch(vocab_size: int):
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab_size, (3, SEQ_LEN), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, -2:] = 0
    return input_ids, attention_mask


def _brute_force(model, input_ids, attention_mask, temperature: float):
    """float64 log-softmax of the full logits: top-k values/ids and token log-probs."""
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits.double() / temperature
    logprobs = torch.log_softmax(logits, dim=-1)
    picked = logprobs[:, :-1].gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return logits, torch.nn.functional.pad(picked, (1, 0))


@pytest.mark.parametrize("chunk", [1, 3, SEQ_LEN + 5])
def test_chunked_head_matches_full_logits(model, chunk):
    input_ids, attention_mask = _batch(model.config.vocab_size)
    temperature, k = 0.7, 5
    logits64, logprobs64 = _brute_force(model, input_ids, attention_mask, temperature)
    rows_seen: list[int] = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, args, out: rows_seen.append(args[0].shape[1]))
    try:
        with torch.no_grad():
            values, indices = score_with_chunked_head(
                model, input_ids, attention_mask, lambda hidden, head: head_topk(hidden, head, k, chunk, temperature=temperature))
            logprobs = score_with_chunked_head(
                model, input_ids, attention_mask,
                lambda hidden, head: head_token_logprobs(hidden, head, input_ids, chunk, temperature=temperature))
    finally:
        hook.remove()
    expected = torch.topk(logits64, k, dim=-1)
    assert torch.equal(indices, expected.indices)
    torch.testing.assert_close(values.double(), expected.values, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logprobs.double(), logprobs64, rtol=1e-5, atol=1e-5)
    assert logprobs.dtype == values.dtype == torch.float32
    # every head call saw at most `chunk` rows: [B, T, V] logits never existed
    assert max(rows_seen) <= min(chunk, SEQ_LEN)
    # the same as the library's full-logits path
    with torch.no_grad():
        full = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    torch.testing.assert_close(logprobs, token_logprobs(full, input_ids, chunk, temperature=temperature).float())


@pytest.mark.parametrize("first_row", [1, SEQ_LEN - 1])
def test_scoring_from_a_first_row_leaves_the_rows_before_it_zero(model, first_row):
    input_ids, attention_mask = _batch(model.config.vocab_size)
    logits64, _ = _brute_force(model, input_ids, attention_mask, 1.0)
    rows_seen: list[int] = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, args, out: rows_seen.append(args[0].shape[1]))
    try:
        with torch.no_grad():
            values, indices = score_with_chunked_head(model, input_ids, attention_mask, first_row=first_row,
                                                      score=lambda hidden, head: head_topk(hidden, head, 3, 64))
    finally:
        hook.remove()
    assert values.shape == indices.shape == (3, SEQ_LEN, 3)
    expected = torch.topk(logits64[:, first_row:], 3, dim=-1)
    assert torch.equal(indices[:, first_row:], expected.indices)
    torch.testing.assert_close(values[:, first_row:].double(), expected.values, rtol=1e-5, atol=1e-5)
    assert not values[:, :first_row].any() and not indices[:, :first_row].any()
    assert sorted(rows_seen) == [1, SEQ_LEN - first_row]  # the model's own last row, then ours: no prompt rows
    with pytest.raises(ValueError, match="first_row"):
        score_with_chunked_head(model, input_ids, attention_mask, lambda hidden, head: hidden, first_row=SEQ_LEN)


def test_training_windows_start_at_the_first_row(model):
    """Windows cover rows first_row .. T-1 only; their summed loss is the loss of those rows."""
    input_ids, attention_mask = _batch(model.config.vocab_size)
    first_row, window_rows = 2, 2
    windows: list[slice] = []

    def window_loss(logits, rows):
        windows.append(rows)
        return logits.float().logsumexp(dim=-1).sum(), {"rows": float(rows.stop - rows.start)}

    loss, metrics = train_loss_with_chunked_head(model, input_ids, attention_mask, window_rows, window_loss, first_row=first_row)
    assert windows[: 3] == [slice(2, 4), slice(4, 6), slice(6, 7)] and metrics == {"rows": SEQ_LEN - first_row}
    with torch.no_grad():
        full = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits.double()
    torch.testing.assert_close(loss.double(), full[:, first_row:].logsumexp(dim=-1).sum(), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="first_row"):
        train_loss_with_chunked_head(model, input_ids, attention_mask, 2, window_loss, first_row=-1)


def test_accepts_logits_to_keep(model):
    assert accepts_logits_to_keep(model)  # HF causal LMs
    assert not accepts_logits_to_keep(_ScaledLogits(model))  # forward(**kwargs) names no such argument

    class _PeftLike(torch.nn.Module):  # a peft wrapper: its forward takes **kwargs, the base model decides
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def get_base_model(self):
            return self.inner

    assert accepts_logits_to_keep(_PeftLike(model)) and not accepts_logits_to_keep(_PeftLike(_ScaledLogits(model)))


class _ScaledLogits(torch.nn.Module):
    """A model that changes its logits after the head (like Gemma's soft-capping)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def get_output_embeddings(self):
        return self.inner.get_output_embeddings()

    def forward(self, **kwargs):
        output = self.inner(**kwargs)
        output.logits = output.logits * 2.0
        return output


def test_models_that_transform_logits_after_the_head_are_refused(model):
    input_ids, attention_mask = _batch(model.config.vocab_size)
    with torch.no_grad(), pytest.raises(ChunkedHeadUnsupported, match="transforms its logits"):
        score_with_chunked_head(_ScaledLogits(model), input_ids, attention_mask, lambda hidden, head: head_topk(hidden, head, 2, 3))
    # the hooks are gone: a plain forward gives full logits again
    with torch.no_grad():
        assert model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits.shape[1] == SEQ_LEN


def test_verify_head_false_skips_only_the_last_row_check(model):
    """The worker checks a model once (the check waits for the device), then scores without it."""
    input_ids, attention_mask = _batch(model.config.vocab_size)
    score = lambda hidden, head: head_topk(hidden, head, 2, 3)  # noqa: E731
    with torch.no_grad():
        unchecked = score_with_chunked_head(_ScaledLogits(model), input_ids, attention_mask, score, verify_head=False)
        checked = score_with_chunked_head(model, input_ids, attention_mask, score)
    # the scores come from the head itself, so they are the plain model's, not the doubled logits
    torch.testing.assert_close(unchecked[0], checked[0], rtol=0, atol=0)


def test_head_scoring_rejects_bad_temperature(model):
    hidden = torch.zeros(1, 2, model.config.hidden_size)
    with pytest.raises(ValueError, match="temperature"):
        head_topk(hidden, model.get_output_embeddings(), 2, 1, temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        head_token_logprobs(hidden, model.get_output_embeddings(), torch.zeros(1, 2, dtype=torch.long), 1, temperature=-1.0)


def test_head_chunk_rows_caps_the_logits_per_call():
    from nemo_distill.models.policy.logprobs import HEAD_CHUNK_ELEMENTS, head_chunk_rows

    assert HEAD_CHUNK_ELEMENTS == 2**27
    assert head_chunk_rows(32, 512, 151936) == 27  # 2**27 // (32 * 151936) = 27.6 -> 27
    assert head_chunk_rows(1, 5, 151936) == 5  # chunk_size is the smaller bound
    assert head_chunk_rows(4096, 512, 151936) == 1  # never below one row
    assert head_chunk_rows(3, 7, None) == 7
    with pytest.raises(ValueError, match="chunk_size"):
        head_chunk_rows(1, 0, 10)


def test_vocab_cap_splits_the_head_calls(model, monkeypatch):
    from nemo_distill.models.policy import logprobs

    monkeypatch.setattr(logprobs, "HEAD_CHUNK_ELEMENTS", 3 * 2 * model.config.vocab_size)  # 2 rows of 3 sequences
    input_ids, attention_mask = _batch(model.config.vocab_size)
    rows_seen: list[int] = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, args, out: rows_seen.append(args[0].shape[1]))
    try:
        with torch.no_grad():
            capped = score_with_chunked_head(model, input_ids, attention_mask, lambda h, head: head_topk(
                h, head, 3, 100, vocab_size=model.config.vocab_size))
            plain = score_with_chunked_head(model, input_ids, attention_mask, lambda h, head: head_topk(h, head, 3, 100))
    finally:
        hook.remove()
    assert rows_seen[:5] == [2, 2, 2, 1, 1]  # 7 rows in calls of 2, then the model's own last row
    assert torch.equal(capped[1], plain[1])
    torch.testing.assert_close(capped[0], plain[0])  # other GEMM shapes: last-ulp differences
