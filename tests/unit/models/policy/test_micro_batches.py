"""plan_micro_batches: micro-batches trimmed and described on the host, and the attention mask they drop."""

from __future__ import annotations

import pytest
import torch

from nemo_distill.data.batch import TokenBatch
from nemo_distill.models.policy.head_scoring import shared_prefix_length
from nemo_distill.models.policy.micro_batches import is_right_padded, plan_micro_batches
from policy_spawn import make_batch


def _batch_with_short_micro_batch() -> TokenBatch:
    """6 rows of 10 columns: rows 0-1 end at 6 and 7 (their micro-batch trims to 7 columns), rows 2-3 share
    their first 5 tokens, row 4 has a masked column inside (not right-padded; row 5 keeps the width);
    targets start at column 4 in rows 0-1 and 3 in rows 2-5."""
    input_ids = torch.arange(1, 61).reshape(6, 10)
    input_ids[3, :5] = input_ids[2, :5]
    attention_mask = torch.ones(6, 10, dtype=torch.long)
    attention_mask[0, 6:] = 0
    attention_mask[1, 7:] = 0
    attention_mask[4, 1] = 0
    loss_mask = attention_mask.clone()
    loss_mask[:2, :4] = 0
    loss_mask[2:, :3] = 0
    return TokenBatch(input_ids=input_ids, attention_mask=attention_mask, loss_mask=loss_mask, sample_mask=torch.ones(6),
                      extras={"per_token": torch.randn(6, 10, 3), "per_sample": torch.randn(6)})


def test_plans_trim_and_describe_each_micro_batch_on_the_host():
    batch = _batch_with_short_micro_batch()
    plans = plan_micro_batches(batch, 2, "cpu", shared_prefix_min_tokens=3)
    assert [plan.batch.size for plan in plans] == [2, 2, 2]
    assert [plan.batch.seq_len for plan in plans] == [7, 10, 10]
    for plan, rows in zip(plans, (slice(0, 2), slice(2, 4), slice(4, 6))):
        expected = batch.select(rows).trim_padding()
        torch.testing.assert_close(plan.batch.input_ids, expected.input_ids, rtol=0, atol=0)
        torch.testing.assert_close(plan.batch.extras["per_token"], expected.extras["per_token"], rtol=0, atol=0)
        assert plan.batch.extras["per_sample"].shape == (plan.batch.size,)
        assert plan.first_target_row == expected.first_target_row()
    assert [plan.first_target_row for plan in plans] == [3, 2, 2]
    # rows 2-3 share 5 real tokens (>= 3 kept); the other pairs share none
    assert [plan.shared_prefix_len for plan in plans] == [0, 5, 0]
    assert shared_prefix_length(plans[1].batch.input_ids, plans[1].batch.attention_mask) == 5
    assert [plan.right_padded for plan in plans] == [True, True, False]
    assert plans[0].model_attention_mask is None and plans[1].model_attention_mask is None
    torch.testing.assert_close(plans[2].model_attention_mask, batch.attention_mask[4:], rtol=0, atol=0)
    with pytest.raises(ValueError, match="micro_batch_size"):
        plan_micro_batches(batch, 0, "cpu")


def test_shared_prefix_below_the_minimum_or_unasked_is_zero():
    batch = _batch_with_short_micro_batch()
    assert [plan.shared_prefix_len for plan in plan_micro_batches(batch, 2, "cpu", shared_prefix_min_tokens=6)] == [0, 0, 0]
    assert [plan.shared_prefix_len for plan in plan_micro_batches(batch, 2, "cpu")] == [0, 0, 0]


def test_no_shared_prefix_unless_right_padded():
    """The shared-prefix forward reads one row's mask for the prefix: a masked column inside another row's
    prefix would be attended to, so such a micro-batch is scored the plain way."""
    input_ids = torch.tensor([[5, 6, 7, 8, 9, 1], [5, 6, 7, 8, 9, 2]])
    attention_mask = torch.ones_like(input_ids)
    batch = TokenBatch(input_ids=input_ids, attention_mask=attention_mask, loss_mask=attention_mask.clone(),
                       sample_mask=torch.ones(2))
    assert plan_micro_batches(batch, 2, "cpu", shared_prefix_min_tokens=3)[0].shared_prefix_len == 5
    attention_mask[1, 2] = 0
    (plan,) = plan_micro_batches(batch, 2, "cpu", shared_prefix_min_tokens=3)
    assert not plan.right_padded and plan.shared_prefix_len == 0


@pytest.mark.parametrize("mask, expected", [
    ([[1, 1, 1], [1, 1, 1]], True),
    ([[1, 1, 0], [1, 0, 0]], True),
    ([[0, 0, 0], [1, 0, 0]], True),  # an empty row has no real token to see padding
    ([[0, 1, 1], [1, 1, 1]], False),  # left padding
    ([[1, 0, 1], [1, 1, 1]], False),  # a hole
])
def test_is_right_padded(mask, expected):
    assert is_right_padded(torch.tensor(mask)) is expected


def test_a_right_padded_batch_gives_the_same_real_token_logits_without_a_mask(tiny_model_dir):
    """Why the plan drops the mask of a right-padded micro-batch: causal attention already keeps each real
    token from the padding after it, so every real position's logits are those of the masked forward."""
    from nemo_distill.models.loading import load_causal_lm

    model = load_causal_lm(tiny_model_dir, dtype=torch.float64, device="cpu")
    batch = make_batch(batch_size=4, seq_len=12, vocab_size=model.config.vocab_size)
    (plan,) = plan_micro_batches(batch, 4, "cpu")
    assert plan.right_padded and bool((batch.attention_mask == 0).any())
    with torch.no_grad():
        masked = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
        unmasked = model(input_ids=batch.input_ids, attention_mask=plan.model_attention_mask, use_cache=False).logits
    real = batch.attention_mask.bool()
    torch.testing.assert_close(unmasked[real], masked[real], rtol=1e-12, atol=1e-12)


def _vote(rank: int, shared: list[int]) -> list[int]:
    from dataclasses import replace

    import torch.distributed as dist

    from nemo_distill.models.policy.micro_batches import share_prefixes_on_every_rank

    dist.init_process_group("gloo")
    plans = plan_micro_batches(make_batch(batch_size=4, seq_len=12), 2, "cpu")
    plans = [replace(plan, shared_prefix_len=length) for plan, length in zip(plans, shared[rank])]
    return [plan.shared_prefix_len for plan in share_prefixes_on_every_rank(plans, "cpu")]


def test_a_shared_prefix_is_kept_only_where_every_rank_has_one():
    from policy_spawn import run_ranks

    # micro-batch 0: both ranks have a prefix (each keeps its own length); micro-batch 1: only rank 0 does
    assert run_ranks(_vote, 2, [[5, 7], [4, 0]]) == [[5, 0], [4, 0]]
