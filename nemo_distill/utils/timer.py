"""Named wall-clock timers: ``with timer.time("generation"): ...`` then ``timer.metrics("timing/train")``."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator


class Timer:
    """Accumulates seconds per name until :meth:`reset` (timing a name twice in a step adds up)."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def time(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[name] += time.perf_counter() - started

    def elapsed(self, name: str) -> float:
        """Seconds accumulated under ``name`` (0 if never timed)."""
        return self._seconds.get(name, 0.0)

    def metrics(self, prefix: str = "timing") -> dict[str, float]:
        """``{f"{prefix}/{name}": seconds}`` for every timed name."""
        return {f"{prefix}/{name}": seconds for name, seconds in self._seconds.items()}

    def reset(self) -> None:
        self._seconds.clear()
