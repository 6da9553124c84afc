"""Right-padded training batches and left-padded generation inputs."""

from __future__ import annotations

import logging

import pytest
import torch

from nemo_distill.data.collate import build_token_batch, left_pad

PAD = 0


def test_concatenates_pads_and_masks_response_tokens_only():
    batch, prompt_lengths = build_token_batch([[5, 6, 7], [8]], [[9, 10], [11, 12, 13, 14]], pad_token_id=PAD)
    assert prompt_lengths == [3, 1]
    assert batch.input_ids.tolist() == [[5, 6, 7, 9, 10], [8, 11, 12, 13, 14]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert batch.loss_mask.tolist() == [[0, 0, 0, 1, 1], [0, 1, 1, 1, 1]]
    assert batch.sample_mask.tolist() == [1.0, 1.0]


def test_right_padding_and_empty_response():
    batch, prompt_lengths = build_token_batch([[5, 6], [7, 8, 9]], [[], [3]], pad_token_id=-1, sample_mask=[0.0, 1.0])
    assert prompt_lengths == [2, 3]
    assert batch.input_ids.tolist() == [[5, 6, -1, -1], [7, 8, 9, 3]]
    assert batch.attention_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch.loss_mask.tolist() == [[0, 0, 0, 0], [0, 0, 0, 1]]
    assert batch.sample_mask.tolist() == [0.0, 1.0]
    assert batch.input_ids.dtype == torch.long and batch.attention_mask.dtype == torch.long
    assert batch.loss_mask.dtype == torch.float32


def test_position_zero_is_never_a_target_even_with_an_empty_prompt():
    batch, _ = build_token_batch([[]], [[4, 5, 6]], pad_token_id=PAD)
    assert batch.loss_mask.tolist() == [[0, 1, 1]]


def test_truncation_cuts_the_end_keeps_the_mask_and_is_reported(caplog):
    with caplog.at_level(logging.WARNING, logger="nemo_distill.data.collate"):
        batch, prompt_lengths = build_token_batch(
            [[1, 2], [3, 4, 5, 6, 7], [8]], [[9, 10, 11, 12], [13], [14]], pad_token_id=PAD, sample_mask=[1.0, 1.0, 0.5], max_total_length=4
        )
    assert batch.input_ids.tolist() == [[1, 2, 9, 10], [3, 4, 5, 6], [8, 14, 0, 0]]
    # Sample 1 lost its whole response: no targets left, but its sample mask is as given.
    assert batch.loss_mask.tolist() == [[0, 0, 1, 1], [0, 0, 0, 0], [0, 1, 0, 0]]
    assert batch.sample_mask.tolist() == [1.0, 1.0, 0.5]
    assert prompt_lengths == [2, 5, 1]  # untruncated prompt lengths
    assert "2 sample(s) longer than 4 tokens" in caplog.text and "[0, 1]" in caplog.text


def test_no_warning_when_nothing_is_cut(caplog):
    with caplog.at_level(logging.WARNING, logger="nemo_distill.data.collate"):
        build_token_batch([[1]], [[2, 3]], pad_token_id=PAD, max_total_length=3)
    assert caplog.text == ""


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prompt_token_ids": [[1]], "response_token_ids": [[2], [3]]}, "1 prompts but 2 responses"),
        ({"prompt_token_ids": [[1]], "response_token_ids": [[2]], "sample_mask": [1.0, 1.0]}, "sample_mask has 2 entries"),
        ({"prompt_token_ids": [[1]], "response_token_ids": [[2]], "max_total_length": 0}, "max_total_length must be >= 1"),
    ],
)
def test_bad_inputs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_token_batch(pad_token_id=PAD, **kwargs)


def test_left_pad_aligns_prompts_on_the_right():
    input_ids, attention_mask = left_pad([[1, 2, 3], [4], []], pad_token_id=-7)
    assert input_ids.tolist() == [[1, 2, 3], [-7, -7, 4], [-7, -7, -7]]
    assert attention_mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    assert input_ids.dtype == torch.long and attention_mask.dtype == torch.long


def test_left_pad_all_empty_still_has_one_column():
    input_ids, attention_mask = left_pad([[], []], pad_token_id=0)
    assert input_ids.shape == (2, 1) and attention_mask.sum() == 0
