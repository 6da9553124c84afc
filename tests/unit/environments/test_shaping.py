"""Reward shaping (seed 004): termination bonus and ``####`` marker terms, by hand."""

from __future__ import annotations

import pytest

from nemo_distill.environments.shaping import RewardShapingConfig, shaping_rewards

TEXTS = ["so #### 4", "#### 4 #### 4 ####", "no marker at all", "####. ####.", "#### 7"]
REASONS = ["stop", "length", "stop", "stop", "length"]


def test_every_term_off_by_default():
    cfg = RewardShapingConfig()
    assert not cfg.is_active()
    assert shaping_rewards(TEXTS, REASONS, cfg) == [0.0] * 5


def test_terms_by_hand():
    cfg = RewardShapingConfig(termination_bonus=0.1, repeated_answer_marker_penalty=0.25, single_answer_marker_bonus=0.05)
    expected = [
        0.1 + 0.05,  # stopped, one marker
        -0.25,  # hit the length limit, three markers
        0.1,  # stopped, no marker
        0.1 - 0.25,  # stopped, two markers (the seed's degenerate "####. ####.")
        0.05,  # length limit, one marker
    ]
    assert shaping_rewards(TEXTS, REASONS, cfg) == pytest.approx(expected, abs=1e-15)


def test_each_term_alone():
    assert shaping_rewards(TEXTS, REASONS, RewardShapingConfig(termination_bonus=1.0)) == [1.0, 0.0, 1.0, 1.0, 0.0]
    assert shaping_rewards(TEXTS, REASONS, RewardShapingConfig(repeated_answer_marker_penalty=1.0)) == [0.0, -1.0, 0.0, -1.0, 0.0]
    assert shaping_rewards(TEXTS, REASONS, RewardShapingConfig(single_answer_marker_bonus=1.0)) == [1.0, 0.0, 0.0, 0.0, 1.0]


def test_input_errors():
    with pytest.raises(ValueError, match="pair up"):
        shaping_rewards(["a"], [], RewardShapingConfig())
    with pytest.raises(ValueError, match="sample 1 has finish reason 'eos'"):
        shaping_rewards(["a", "b"], ["stop", "eos"], RewardShapingConfig())
