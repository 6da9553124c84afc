"""Vocabulary-sharded logits on 2 gloo ranks: distributed top-k equals top-k of the full logits (also
when k exceeds a shard), and the gather hands each rank its own slice of the gradient."""

from __future__ import annotations

import torch
import torch.distributed as dist

from nemo_distill.models.policy.vocab_parallel import gather_vocab_shards, topk_over_vocab_shards
from policy_spawn import run_ranks


def _vocab_parallel(rank: int) -> dict:
    dist.init_process_group("gloo")
    group = dist.group.WORLD
    torch.manual_seed(0)
    full = torch.randn(2, 5, 10)  # V = 10: shards of 5
    weights = torch.randn(2, 5, 10)
    local = full[..., rank * 5 : (rank + 1) * 5].clone().requires_grad_(True)
    results = {}
    for k in (1, 3, 7, 10):  # 7 and 10 exceed a shard
        values, indices = topk_over_vocab_shards(local.detach(), k, group)
        expected_values, expected_indices = torch.topk(full, k, dim=-1)
        results[k] = torch.equal(values, expected_values) and torch.equal(indices, expected_indices)
    gathered = gather_vocab_shards(local, group)
    (gathered * weights).sum().backward()
    results["gather"] = torch.equal(gathered.detach(), full)
    results["grad"] = torch.equal(local.grad, weights[..., rank * 5 : (rank + 1) * 5])
    return results


def test_topk_and_gather_over_two_vocab_shards():
    for result in run_ranks(_vocab_parallel, 2):
        assert result == {1: True, 3: True, 7: True, 10: True, "gather": True, "grad": True}


def test_single_rank_topk_is_plain_topk():
    logits = torch.randn(3, 4, 9)
    values, indices = topk_over_vocab_shards(logits, 4, None)
    expected_values, expected_indices = torch.topk(logits, 4, dim=-1)
    assert torch.equal(values, expected_values) and torch.equal(indices, expected_indices)
    assert gather_vocab_shards(logits, None) is logits
