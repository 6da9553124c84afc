"""Context-parallel helpers: load-balanced sharding and its inverse, position ids, targets built before
sharding, and (2 gloo ranks) the differentiable gather and the cross-rank reduction. The CP forward
itself needs GPU ring attention: see test_worker_gpu.py."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from nemo_distill.models.policy import context_parallel as cp
from policy_spawn import run_ranks


def test_chunk_layout_pairs_early_and_late_chunks():
    assert [cp.chunk_ids_of_rank(2, r) for r in range(2)] == [(0, 3), (1, 2)]
    assert [cp.chunk_ids_of_rank(3, r) for r in range(3)] == [(0, 5), (1, 4), (2, 3)]
    assert cp.chunk_ids_of_rank(1, 0) == (0, 1)
    with pytest.raises(ValueError, match="cp_rank 2"):
        cp.chunk_ids_of_rank(2, 2)


def test_position_ids_of_each_rank():
    assert cp.load_balanced_position_ids(8, 2, 0).tolist() == [0, 1, 6, 7]
    assert cp.load_balanced_position_ids(8, 2, 1).tolist() == [2, 3, 4, 5]
    assert cp.load_balanced_position_ids(12, 3, 1).tolist() == [2, 3, 8, 9]


@pytest.mark.parametrize("cp_size", [1, 2, 3, 4])
def test_shards_cover_the_sequence_once_and_unshard_inverts(cp_size):
    seq_len = 2 * cp_size * 3
    full = torch.randn(2, seq_len, 5)
    shards = [cp.shard_load_balanced(full, cp_size, rank, dim=1) for rank in range(cp_size)]
    assert all(shard.shape == (2, seq_len // cp_size, 5) for shard in shards)
    positions = torch.cat([cp.load_balanced_position_ids(seq_len, cp_size, rank) for rank in range(cp_size)])
    assert sorted(positions.tolist()) == list(range(seq_len))
    torch.testing.assert_close(cp.unshard_load_balanced(torch.cat(shards, dim=1), cp_size, dim=1), full)


def test_padding_to_a_multiple_of_twice_cp():
    assert [cp.padded_length(n, 2) for n in (1, 4, 5, 8, 9)] == [4, 4, 8, 8, 12]
    padded = cp.pad_sequence_dim(torch.ones(2, 5, dtype=torch.long), 2, value=7)
    assert padded.shape == (2, 8) and padded[:, 5:].eq(7).all() and padded[:, :5].eq(1).all()
    with pytest.raises(ValueError, match="not a multiple of 2 \\* context_parallel_size = 4"):
        cp.shard_load_balanced(torch.ones(1, 6), 2, 0)


def test_next_token_targets_are_built_before_sharding():
    input_ids = torch.tensor([[5, 6, 7, 8]])
    valid = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    targets, mask = cp.next_token_targets(input_ids, valid)
    assert targets.tolist() == [[6, 7, 8, 0]] and mask.tolist() == [[1.0, 1.0, 0.0, 0.0]]


def test_per_token_loss_summed_over_shards_equals_the_full_loss():
    torch.manual_seed(0)
    batch_size, seq_len, vocab, cp_size = 2, 8, 11, 2
    logits = torch.randn(batch_size, seq_len, vocab, dtype=torch.float64)
    input_ids = torch.randint(0, vocab, (batch_size, seq_len))
    valid = (torch.rand(batch_size, seq_len) > 0.3).double()
    logprobs = torch.log_softmax(logits[:, :-1], -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    full_loss = -(logprobs * valid[:, 1:]).sum()
    targets, mask = cp.next_token_targets(input_ids, valid)
    shard_losses = []
    for rank in range(cp_size):
        local_logits, local_targets, local_mask = (cp.shard_load_balanced(t, cp_size, rank) for t in (logits, targets, mask))
        local = torch.log_softmax(local_logits, -1).gather(-1, local_targets[..., None]).squeeze(-1)
        shard_losses.append(-(local * local_mask).sum())
    torch.testing.assert_close(sum(shard_losses), full_loss)


def _gather_and_reduce(rank: int) -> dict:
    dist.init_process_group("gloo")
    group = dist.group.WORLD
    torch.manual_seed(0)  # the same full tensor and loss weights on both ranks
    full = torch.randn(2, 8, 3)
    weights = torch.randn(2, 8, 3)
    local = cp.shard_load_balanced(full, 2, rank).clone().requires_grad_(True)
    gathered = cp.gather_load_balanced(local, group, dim=1)
    (gathered * weights).sum().backward()  # every rank computes the same loss from the gathered tensor
    return {
        "gathered_equals_full": torch.equal(gathered.detach(), full),
        "grad_is_own_slice": torch.equal(local.grad, cp.shard_load_balanced(weights, 2, rank)),
        "reduced": cp.reduce_across_cp(torch.tensor(float(rank + 1)), group).item(),
    }


def test_gather_and_reduction_across_two_ranks():
    for result in run_ranks(_gather_and_reduce, 2):
        assert result == {"gathered_equals_full": True, "grad_is_own_slice": True, "reduced": 3.0}
