"""Learning-rate multipliers against hand-computed values."""

from __future__ import annotations

import math

import pytest

from nemo_distill.models.policy.config import SchedulerConfig
from nemo_distill.models.policy.lr_schedule import lr_multiplier


def test_constant_with_linear_warmup():
    factor = lr_multiplier(SchedulerConfig(warmup_steps=4), None)
    assert [factor(step) for step in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_multiplier(SchedulerConfig(), None)(0) == 1.0  # no warmup: full lr from the first step


def test_cosine_after_warmup_reaches_the_floor_and_stays():
    factor = lr_multiplier(SchedulerConfig(type="cosine", warmup_steps=2, total_steps=12, min_lr_ratio=0.1), None)
    assert factor(0) == 0.5 and factor(2) == pytest.approx(1.0)
    assert factor(7) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))  # halfway: 0.55
    assert factor(12) == pytest.approx(0.1) and factor(50) == pytest.approx(0.1)


def test_cosine_horizon_from_the_run_and_missing_horizon():
    assert lr_multiplier(SchedulerConfig(type="cosine"), 10)(10) == pytest.approx(0.0)
    assert lr_multiplier(SchedulerConfig(type="cosine", total_steps=4), 100)(4) == pytest.approx(0.0)  # config wins
    with pytest.raises(ValueError, match="scheduler.total_steps"):
        lr_multiplier(SchedulerConfig(type="cosine"), None)
