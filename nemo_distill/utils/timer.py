"""Named wall-clock timers: ``with timer.time("generation"): ...`` then ``timer.metrics("timing/train")``."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator


class Timer:
    """Accumulates wall-clock seconds per phase name until :meth:`reset`.

    Timing the same name twice before a reset adds the two durations (e.g. two generation calls
    in one step). Blocks may nest (``total_step_time`` around ``generation``); each name keeps its
    own total, so nested times are *included* in the outer one, not subtracted from it.
    """

    def __init__(self) -> None:
        self._seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def time(self, name: str) -> Iterator[None]:
        if not name:
            raise ValueError("Timer.time needs a non-empty phase name")
        started = time.perf_counter()
        try:
            yield
        finally:
            # Recorded even when the block raises, so a failing step still shows where time went.
            self._seconds[name] += time.perf_counter() - started

    def add(self, name: str, seconds: float) -> None:
        """Add ``seconds`` measured elsewhere (e.g. in another thread: this class is not thread-safe)."""
        if not name:
            raise ValueError("Timer.add needs a non-empty phase name")
        self._seconds[name] += seconds

    def elapsed(self, name: str) -> float:
        """Seconds accumulated under ``name`` (0.0 if never timed)."""
        return self._seconds.get(name, 0.0)

    def metrics(self, prefix: str = "timing") -> dict[str, float]:
        """``{f"{prefix}/{name}": seconds}`` for every name timed since the last reset."""
        return {f"{prefix}/{name}": seconds for name, seconds in self._seconds.items()}

    def reset(self) -> None:
        self._seconds.clear()
