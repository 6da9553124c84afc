"""A resumable, seeded loader of prompt batches (any list of items)."""

from __future__ import annotations

import random
from typing import Generic, TypeVar

T = TypeVar("T")


class PromptDataLoader(Generic[T]):
    """Yields batches of ``batch_size`` items, epoch after epoch, forever.

    Epoch ``e`` uses the permutation ``Random(seed + e)``; ``state_dict()`` after any batch and
    ``load_state_dict`` in a fresh loader continue with exactly the same next batch.
    """

    def __init__(self, items: list[T], *, batch_size: int, seed: int, shuffle: bool = True, drop_last: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if drop_last and batch_size > len(items):
            raise ValueError(f"batch_size {batch_size} is larger than the dataset ({len(items)} items)")
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
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "seed": self.seed, "num_items": len(self.items)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("num_items", len(self.items)) != len(self.items):
            raise ValueError(f"dataloader state is for {state['num_items']} items but this dataset has {len(self.items)}")
        self.epoch, self.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        self._order = self._permutation(self.epoch)
