"""``TokenBatch.first_target_row``: the first prediction row any loss can read, by hand."""

from __future__ import annotations

import torch

from nemo_distill.data.batch import TokenBatch


def _batch(loss_mask: list[list[int]]) -> TokenBatch:
    loss = torch.tensor(loss_mask)
    return TokenBatch(input_ids=torch.zeros_like(loss), attention_mask=torch.ones_like(loss), loss_mask=loss,
                      sample_mask=torch.ones(loss.shape[0]))


def test_first_target_row_is_the_row_before_the_earliest_target_column():
    # row t predicts token t + 1: targets from column 3 (sample 1) need rows from 2 on
    assert _batch([[0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 0]]).first_target_row() == 2
    assert _batch([[0, 1, 1]]).first_target_row() == 0
    # a target in column 0 has no predicting row; the first row is still 0, never -1
    assert _batch([[1, 1, 0]]).first_target_row() == 0
    # no targets at all: nothing may be skipped
    assert _batch([[0, 0, 0], [0, 0, 0]]).first_target_row() == 0
    # only the last column is a target: one row is left
    assert _batch([[0, 0, 0, 1]]).first_target_row() == 2


def test_first_target_row_ignores_sample_mask():
    batch = _batch([[0, 0, 1, 1], [0, 0, 0, 1]])
    batch.sample_mask[0] = 0.0  # a dropped sample still counts: the rule reads loss_mask alone
    assert batch.first_target_row() == 1


def _masked(mask: list[list[int]]) -> TokenBatch:
    attention_mask = torch.tensor(mask)
    input_ids = torch.arange(1, attention_mask.numel() + 1).reshape(attention_mask.shape) * attention_mask
    return TokenBatch(input_ids=input_ids, attention_mask=attention_mask, loss_mask=attention_mask.clone(),
                      sample_mask=torch.ones(attention_mask.shape[0]), extras={"per_token": input_ids.float()})


def test_trim_padding_keeps_every_column_up_to_the_last_real_token():
    trimmed = _masked([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]]).trim_padding()
    assert trimmed.seq_len == 3 and trimmed.extras["per_token"].shape == (2, 3)
    # a masked column inside a row does not shorten it: the real token after it stays
    assert _masked([[1, 0, 1, 1, 0]]).trim_padding().seq_len == 4
    assert _masked([[0, 0, 1, 1, 0], [0, 1, 1, 0, 0]]).trim_padding().seq_len == 4
    full = _masked([[1, 1], [1, 0]])
    assert full.trim_padding() is full
    assert _masked([[0, 0, 0]]).trim_padding().seq_len == 1  # nothing real: one column stays
