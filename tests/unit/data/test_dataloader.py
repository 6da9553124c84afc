"""Seeded epochs, drop_last, and exact resume from a state dict."""

from __future__ import annotations

import json
import random

import pytest

from nemo_distill.data.dataloader import PromptDataLoader


def _take(loader: PromptDataLoader, n: int) -> list[list[int]]:
    return [next(loader) for _ in range(n)]


def test_each_epoch_is_the_seeded_permutation_of_seed_plus_epoch():
    items = list(range(10))
    loader = PromptDataLoader(items, batch_size=3, seed=5, shuffle=True, drop_last=True)
    assert len(loader) == 3
    for epoch in range(3):
        expected_order = list(range(10))
        random.Random(5 + epoch).shuffle(expected_order)
        batches = _take(loader, 3)
        assert batches == [expected_order[0:3], expected_order[3:6], expected_order[6:9]]
        assert (loader.epoch, loader.step_in_epoch) == (epoch, 3)
    assert next(loader) and loader.epoch == 3


def test_epochs_differ_and_cover_items_without_repeats():
    loader = PromptDataLoader(list(range(12)), batch_size=4, seed=0, shuffle=True)
    epoch0 = [x for batch in _take(loader, 3) for x in batch]
    epoch1 = [x for batch in _take(loader, 3) for x in batch]
    assert sorted(epoch0) == sorted(epoch1) == list(range(12))
    assert epoch0 != epoch1


def test_no_shuffle_keeps_file_order():
    loader = PromptDataLoader(list("abcde"), batch_size=2, seed=9, shuffle=False, drop_last=True)
    assert _take(loader, 3) == [["a", "b"], ["c", "d"], ["a", "b"]]


def test_keep_last_yields_a_short_final_batch():
    loader = PromptDataLoader(list("abcde"), batch_size=2, seed=0, shuffle=False, drop_last=False)
    assert len(loader) == 3
    assert _take(loader, 4) == [["a", "b"], ["c", "d"], ["e"], ["a", "b"]]
    # A batch larger than the dataset is fine without drop_last: the whole dataset each step.
    whole = PromptDataLoader([1, 2], batch_size=5, seed=0, shuffle=False, drop_last=False)
    assert _take(whole, 2) == [[1, 2], [1, 2]]


@pytest.mark.parametrize("consumed", [0, 1, 2, 3, 4, 7])
def test_resume_yields_exactly_the_same_next_batches(consumed):
    items = [f"p{i}" for i in range(7)]
    original = PromptDataLoader(items, batch_size=2, seed=11, shuffle=True)
    _take(original, consumed)
    # The state goes through JSON, as it does in training_info.json.
    state = json.loads(json.dumps(original.state_dict()))
    resumed = PromptDataLoader(items, batch_size=2, seed=11, shuffle=True)
    resumed.load_state_dict(state)
    assert _take(resumed, 6) == _take(original, 6)
    assert (resumed.epoch, resumed.step_in_epoch) == (original.epoch, original.step_in_epoch)


def test_resume_with_a_different_dataset_seed_or_batch_size_is_refused():
    state = PromptDataLoader(list(range(8)), batch_size=2, seed=1).state_dict()
    for loader, key in [
        (PromptDataLoader(list(range(9)), batch_size=2, seed=1), "num_items"),
        (PromptDataLoader(list(range(8)), batch_size=2, seed=2), "seed"),
        (PromptDataLoader(list(range(8)), batch_size=4, seed=1), "batch_size"),
    ]:
        with pytest.raises(ValueError, match=f"{key}="):
            loader.load_state_dict(state)


@pytest.mark.parametrize(
    "items, batch_size, drop_last, message",
    [
        ([1, 2, 3], 4, True, "batch_size 4 is larger than the dataset"),
        ([1, 2, 3], 0, True, "batch_size must be >= 1"),
        ([], 1, False, "empty dataset"),
    ],
)
def test_bad_construction(items, batch_size, drop_last, message):
    with pytest.raises(ValueError, match=message):
        PromptDataLoader(items, batch_size=batch_size, seed=0, drop_last=drop_last)
