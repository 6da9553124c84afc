"""A resumable, seeded loader of prompt batches (any list of items)."""

from __future__ import annotations

import random
from typing import Generic, TypeVar

from nemo_distill.config.errors import DataError

T = TypeVar("T")


class PromptDataLoader(Generic[T]):
    """Yields batches (lists) of ``batch_size`` items, epoch after epoch, forever.

    Epoch ``e`` visits the items in the order ``random.Random(seed + e).shuffle`` gives (file
    order when ``shuffle`` is false). With ``drop_last`` the incomplete tail of an epoch is skipped;
    without it the last batch of an epoch may be smaller. ``state_dict()`` after any batch and
    ``load_state_dict`` in a fresh loader continue with exactly the same next batch.
    ``epoch`` is the (0-based) epoch of the batches being handed out and ``step_in_epoch`` how many
    of its batches have been handed out so far.
    """

    def __init__(self, items: list[T], *, batch_size: int, seed: int, shuffle: bool = True, drop_last: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not items:
            raise DataError("PromptDataLoader got an empty dataset; check data.*.dataset and num_samples")
        if drop_last and batch_size > len(items):
            raise DataError(
                f"batch_size {batch_size} is larger than the dataset ({len(items)} items), so drop_last would "
                "yield no batch; lower the prompts per step or load more samples"
            )
        self.items, self.batch_size, self.seed, self.shuffle, self.drop_last = items, batch_size, seed, shuffle, drop_last
        self.epoch = 0
        self.step_in_epoch = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(len(self.items)))
        if self.shuffle:
            random.Random(self.seed + epoch).shuffle(order)
        return order

    def __len__(self) -> int:
        full, rest = divmod(len(self.items), self.batch_size)
        return full + (0 if self.drop_last or rest == 0 else 1)

    def __iter__(self):
        return self

    def __next__(self) -> list[T]:
        if self.step_in_epoch >= len(self):
            self.epoch += 1
            self.step_in_epoch = 0
            self._order = self._permutation(self.epoch)
        start = self.step_in_epoch * self.batch_size
        self.step_in_epoch += 1
        return [self.items[i] for i in self._order[start : start + self.batch_size]]

    def state_dict(self) -> dict[str, int]:
        """Position after the last batch handed out; JSON-serialisable (goes into training_info.json)."""
        return {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "num_items": len(self.items),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from ``state``; the dataset size, seed and batch size must match what saved it.

        A mismatch would silently change which prompts come next, so it is an error instead.
        """
        for key, current in (("num_items", len(self.items)), ("seed", self.seed), ("batch_size", self.batch_size)):
            if key in state and int(state[key]) != current:
                raise ValueError(f"dataloader state has {key}={state[key]} but this loader has {key}={current}; cannot resume the same data order")
        self.epoch, self.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        self._order = self._permutation(self.epoch)
