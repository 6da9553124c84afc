"""Named phase timers: accumulation, nesting, exceptions, metric names, reset."""

from __future__ import annotations

import pytest

from nemo_distill.utils import timer as timer_module
from nemo_distill.utils.timer import Timer


class FakeClock:
    """A perf_counter that only moves when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(timer_module.time, "perf_counter", fake)
    return fake


def test_nested_and_repeated_phases(clock):
    timer = Timer()
    with timer.time("total_step_time"):
        with timer.time("generation"):
            clock.now += 2.0
        clock.now += 0.5
        with timer.time("generation"):  # second call in the same step adds up
            clock.now += 1.0
        with timer.time("policy_training"):
            clock.now += 3.0
    assert timer.metrics(prefix="timing/train") == {
        "timing/train/generation": 3.0,
        "timing/train/policy_training": 3.0,
        "timing/train/total_step_time": 6.5,
    }
    assert timer.elapsed("generation") == 3.0
    assert timer.elapsed("never") == 0.0


def test_default_prefix_and_reset(clock):
    timer = Timer()
    with timer.time("validation"):
        clock.now += 1.25
    assert timer.metrics() == {"timing/validation": 1.25}
    timer.reset()
    assert timer.metrics() == {}
    with timer.time("validation"):
        clock.now += 0.5
    assert timer.metrics() == {"timing/validation": 0.5}


def test_time_is_recorded_when_the_block_raises(clock):
    timer = Timer()
    with pytest.raises(RuntimeError):
        with timer.time("generation"):
            clock.now += 4.0
            raise RuntimeError("worker died")
    assert timer.elapsed("generation") == 4.0


def test_empty_name_is_rejected():
    with pytest.raises(ValueError, match="non-empty"):
        with Timer().time(""):
            pass


def test_real_clock_measures_something():
    import time

    timer = Timer()
    with timer.time("sleep"):
        time.sleep(0.02)
    assert 0.015 < timer.elapsed("sleep") < 1.0


def test_add_records_seconds_measured_elsewhere():
    timer = Timer()
    timer.add("generation_overlapped", 0.25)
    timer.add("generation_overlapped", 0.5)  # adds, like two timed blocks
    assert timer.metrics("t") == {"t/generation_overlapped": 0.75}
    with pytest.raises(ValueError, match="non-empty"):
        timer.add("", 1.0)
