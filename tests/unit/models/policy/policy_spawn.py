"""Run a function on N local ranks (torch.multiprocessing spawn + gloo), without Ray, and collect results.

Helpers shared by the policy tests (not a test module): :func:`run_ranks`, :func:`make_batch`,
:class:`MaskedNLLLoss` (the simple loss the equivalence tests train with).
"""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nemo_distill.data.batch import TokenBatch


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _entry(rank: int, fn: Callable, world_size: int, port: int, result_dir: str, args: tuple, kwargs: dict) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    try:
        result = fn(rank, *args, **kwargs)
        torch.save(result, Path(result_dir) / f"rank{rank}.pt")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    # The work is done and saved: leave without C++ static destructors. Now and then a gloo thread
    # still alive at interpreter exit aborts the process ("terminate called without an active
    # exception", seen about 1 run in 30 with torch 2.13), which would fail a test that passed.
    os._exit(0)


def run_ranks(fn: Callable, world_size: int, *args, **kwargs) -> list[Any]:
    """``fn(rank, *args, **kwargs)`` on ``world_size`` spawned processes; returns their results in rank order.

    ``fn`` must be a module-level function (it is pickled by name). A failing rank raises here with
    its traceback.
    """
    with tempfile.TemporaryDirectory() as result_dir:
        mp.spawn(_entry, args=(fn, world_size, free_port(), result_dir, args, kwargs), nprocs=world_size, join=True)
        return [torch.load(Path(result_dir) / f"rank{rank}.pt", weights_only=False) for rank in range(world_size)]


def make_batch(batch_size: int = 4, seq_len: int = 12, *, seed: int = 0, vocab_size: int = 49152) -> TokenBatch:
    """A right-padded batch with prompt tokens masked out of the loss, and the awkward cases:

    sample 1 is shorter (padding), sample 2 has ``sample_mask`` 0, sample 3 has no loss targets at all.
    """
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator)
    attention_mask = torch.ones(batch_size, seq_len, dtype=torch.long)
    attention_mask[1, seq_len - 4 :] = 0
    input_ids[attention_mask == 0] = 0
    loss_mask = attention_mask.clone()
    loss_mask[:, :3] = 0  # the "prompt"
    sample_mask = torch.ones(batch_size)
    if batch_size > 2:
        sample_mask[2] = 0
    if batch_size > 3:
        loss_mask[3] = 0
    return TokenBatch(input_ids=input_ids, attention_mask=attention_mask, loss_mask=loss_mask, sample_mask=sample_mask)


def target_prediction_rows(batch: TokenBatch) -> torch.Tensor:
    """``[B, T]`` bool: rows ``t`` that predict a ``loss_mask`` token ``t + 1``, the top-k rows a loss reads
    (``get_topk_logits`` may leave the prompt's rows before them zero)."""
    rows = torch.zeros_like(batch.loss_mask, dtype=torch.bool)
    rows[:, :-1] = batch.loss_mask[:, 1:].bool()
    return rows


@dataclass
class MaskedNLLLoss:
    """Σ over valid targets of −log p(token t | < t), divided by the global valid-token count."""

    def __call__(self, logits: torch.Tensor, batch: TokenBatch, *, counts) -> tuple[torch.Tensor, dict[str, float]]:
        logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        token_logprobs = logprobs.gather(-1, batch.input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        mask = batch.valid_target_tokens()[:, 1:]
        nll_sum = -(token_logprobs * mask).sum()
        return nll_sum / counts.tokens, {"nll_sum": float(nll_sum.detach()), "targets": float(mask.sum())}


def full_gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter's gradient as a full CPU tensor (a collective for DTensor gradients)."""
    grads = {}
    for name, param in model.named_parameters():
        if param.grad is not None:
            grad = param.grad.full_tensor() if hasattr(param.grad, "full_tensor") else param.grad
            grads[name] = grad.detach().cpu().clone()
    return grads


def full_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter as a full CPU tensor (a collective for DTensor parameters)."""
    params = {}
    for name, param in model.named_parameters():
        full = param.full_tensor() if hasattr(param, "full_tensor") else param
        params[name] = full.detach().cpu().clone()
    return params


def scores_gradients_losses(worker, batches: list[TokenBatch]) -> dict:
    """What a test of a compute-only knob compares between two workers: ``logprobs`` of each batch,
    ``grads`` (full) of batches[0]'s masked NLL, then ``losses`` of one optimizer step on each batch."""
    result = {"logprobs": [worker.get_logprobs(batches[0])]}
    worker._accumulate_gradients(batches[0].to(worker.device), MaskedNLLLoss())
    result["grads"] = full_gradients(worker.model)
    worker.optimizer.zero_grad(set_to_none=True)
    result["losses"] = [worker.train(batch, MaskedNLLLoss()).loss for batch in batches]
    result["logprobs"] += [worker.get_logprobs(batch) for batch in batches[1:]]
    return result


def assert_same_scores_gradients_losses(actual: dict, expected: dict) -> None:
    """:func:`scores_gradients_losses` of two workers agree to fp32 rounding. Gradients, not parameters after
    AdamW: Adam divides by sqrt(v), so a rounding-level gradient difference on a near-zero entry becomes an
    lr-sized parameter difference."""
    for got, want in zip(actual["logprobs"], expected["logprobs"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert actual["losses"] == pytest.approx(expected["losses"], rel=1e-5)
    assert actual["grads"].keys() == expected["grads"].keys() and len(expected["grads"]) > 0
    for name, value in expected["grads"].items():
        torch.testing.assert_close(actual["grads"][name], value, rtol=1e-4, atol=1e-7)
