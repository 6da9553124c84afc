"""Token-layout log-probs and entropy against float64 brute force; chunking changes nothing."""

from __future__ import annotations

import math

import pytest
import torch

from nemo_distill.models.policy.logprobs import row_chunks, selected_token_logprobs, token_entropy, token_logprobs

F64 = torch.float64


def _inputs(seed: int = 0, batch_size: int = 3, seq_len: int = 5, vocab: int = 7):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch_size, seq_len, vocab, dtype=F64, generator=generator) * 3
    input_ids = torch.randint(0, vocab, (batch_size, seq_len), generator=generator)
    return logits, input_ids


def _brute_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float = 1.0) -> list[list[float]]:
    """Entry [b][t] = log softmax(logits[b, t-1] / T)[input_ids[b, t]] in plain floats; entry 0 is 0."""
    out = []
    for b in range(logits.shape[0]):
        row = [0.0]
        for t in range(1, logits.shape[1]):
            scaled = [v / temperature for v in logits[b, t - 1].tolist()]
            top = max(scaled)
            log_z = top + math.log(sum(math.exp(v - top) for v in scaled))
            row.append(scaled[int(input_ids[b, t])] - log_z)
        out.append(row)
    return out


def _brute_entropy(logits: torch.Tensor, temperature: float = 1.0) -> list[list[float]]:
    out = []
    for b in range(logits.shape[0]):
        row = [0.0]
        for t in range(1, logits.shape[1]):
            scaled = [v / temperature for v in logits[b, t - 1].tolist()]
            top = max(scaled)
            weights = [math.exp(v - top) for v in scaled]
            total = sum(weights)
            row.append(-sum(w / total * math.log(w / total) for w in weights))
        out.append(row)
    return out


@pytest.mark.parametrize("temperature", [1.0, 0.6, 1.7])
def test_token_logprobs_matches_brute_force(temperature):
    logits, input_ids = _inputs()
    result = token_logprobs(logits, input_ids, temperature=temperature)
    assert result.shape == input_ids.shape and result.dtype == F64
    assert (result[:, 0] == 0).all()
    torch.testing.assert_close(result, torch.tensor(_brute_logprobs(logits, input_ids, temperature), dtype=F64), rtol=1e-13, atol=1e-13)


def test_token_logprobs_of_half_precision_is_fp32():
    logits, input_ids = _inputs(seed=1)
    result = token_logprobs(logits.to(torch.bfloat16), input_ids)
    assert result.dtype == torch.float32
    expected = torch.tensor(_brute_logprobs(logits.to(torch.bfloat16).to(F64), input_ids), dtype=torch.float32)
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_chunking_gives_identical_values_and_gradients(temperature):
    logits, input_ids = _inputs(seed=2, seq_len=7)
    weights = torch.randn(input_ids.shape, dtype=F64, generator=torch.Generator().manual_seed(3))
    values, grads = [], []
    for chunk_size in (1, 2, None):
        leaf = logits.clone().requires_grad_()
        result = token_logprobs(leaf, input_ids, chunk_size, temperature=temperature)
        (result * weights).sum().backward()
        values.append(result.detach())
        grads.append(leaf.grad)
    for value, grad in zip(values[1:], grads[1:]):
        torch.testing.assert_close(value, values[0], rtol=0, atol=1e-15)
        torch.testing.assert_close(grad, grads[0], rtol=0, atol=1e-15)
    # The gradient is the brute-force one: d log p(y) / d logits = (onehot(y) - softmax) / T on row t-1.
    probs = torch.softmax(logits / temperature, dim=-1)
    expected = torch.zeros_like(logits)
    for b in range(logits.shape[0]):
        for t in range(1, logits.shape[1]):
            onehot = torch.zeros(logits.shape[-1], dtype=F64)
            onehot[input_ids[b, t]] = 1.0
            expected[b, t - 1] = weights[b, t] * (onehot - probs[b, t - 1]) / temperature
    torch.testing.assert_close(grads[0], expected, rtol=1e-12, atol=1e-14)
    assert (grads[0][:, -1] == 0).all()  # the last logits row predicts nothing in the batch


def test_selected_token_logprobs_is_unshifted():
    logits, input_ids = _inputs(seed=4)
    shifted = token_logprobs(logits, input_ids)
    torch.testing.assert_close(selected_token_logprobs(logits[:, :-1], input_ids[:, 1:]), shifted[:, 1:], rtol=0, atol=0)


def test_bad_arguments():
    logits, input_ids = _inputs()
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(logits, input_ids, temperature=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        token_logprobs(logits, input_ids, 0)
    with pytest.raises(ValueError, match="share"):
        selected_token_logprobs(logits, input_ids[:, 1:])


def test_row_chunks_cover_every_row_once():
    for chunk_size in (1, 2, 3, None):
        rows = [r for piece in row_chunks(2, 7, 5, chunk_size) for r in range(piece.start, piece.stop)]
        assert rows == list(range(7))


def test_single_token_sequences():
    logits, input_ids = _inputs(seq_len=1)
    assert torch.equal(token_logprobs(logits, input_ids), torch.zeros(3, 1, dtype=F64))
    assert torch.equal(token_entropy(logits), torch.zeros(3, 1, dtype=F64))


@pytest.mark.parametrize("temperature", [1.0, 0.6])
@pytest.mark.parametrize("chunk_size", [1, 2, None])
def test_token_entropy_matches_brute_force(temperature, chunk_size):
    logits, _ = _inputs(seed=5, seq_len=6)
    result = token_entropy(logits, chunk_size, temperature=temperature)
    assert result.shape == logits.shape[:2] and (result[:, 0] == 0).all()
    torch.testing.assert_close(result, torch.tensor(_brute_entropy(logits, temperature), dtype=F64), rtol=1e-12, atol=1e-13)
    # Bounds: 0 <= H <= log V.
    assert (result >= 0).all() and (result <= math.log(logits.shape[-1]) + 1e-12).all()


def _backward_node_names(output: torch.Tensor) -> list[str]:
    names, seen, stack = [], set(), [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


def test_chunked_scores_split_the_logits_once_in_backward():
    """The chunks are views from one ``torch.split``: a per-chunk slice would give each chunk's backward
    a full-size [B, T, V] zero gradient to fill and add (one full pass per chunk)."""
    from nemo_distill.algorithms.loss_functions import topk_kl_per_token
    from nemo_distill.models.policy.logprobs import selected_token_logprobs

    logits = torch.randn(2, 7, 11, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 11, (2, 7))
    teacher = torch.randn(2, 7, 3, dtype=torch.float64)
    teacher_ids = torch.randint(0, 11, (2, 7, 3))
    outputs = {"selected_token_logprobs": selected_token_logprobs(logits, ids, chunk_size=3),
               "topk_kl_per_token": topk_kl_per_token(logits, teacher, teacher_ids, kl_type="forward", chunk_size=3)}
    for name, output in outputs.items():
        nodes = _backward_node_names(output.sum())
        assert "SliceBackward0" not in nodes, name
        assert sum("SplitWithSizesBackward" in node for node in nodes) == 1, (name, nodes)
        (grad,) = torch.autograd.grad(output.sum(), logits)
        assert grad.shape == logits.shape and torch.isfinite(grad).all()
