"""``env.type`` registry: building each environment, skip_verification, the evaluate/score contract."""

from __future__ import annotations

import pytest

from nemo_distill.config import ConfigError
from nemo_distill.environments import math as math_env
from nemo_distill.environments import registry
from nemo_distill.environments.config import EnvConfig, MathEnvConfig, SokobanEnvConfig
from nemo_distill.environments.math import MathEnvironment
from nemo_distill.environments.registry import (
    EnvironmentResult,
    SkippedVerification,
    build_environment,
    environment_names,
    register_environment,
)
from nemo_distill.environments.sokoban import SokobanEnvironment

BOARD = "######\n#@$ .#\n######"


def test_registered_names():
    assert environment_names() == ["math", "sokoban"]


def test_build_math_and_sokoban_with_their_knobs():
    math = build_environment(EnvConfig(math=MathEnvConfig(use_math_verify=False)))
    assert isinstance(math, MathEnvironment) and math.use_math_verify is False
    sokoban = build_environment(EnvConfig(type="sokoban", sokoban=SokobanEnvConfig(reward="fraction_on_goal")))
    assert isinstance(sokoban, SokobanEnvironment) and sokoban.reward == "fraction_on_goal"


def test_math_evaluate_rewards_and_metrics_by_hand():
    env = MathEnvironment(use_math_verify=False)
    responses, gold = ["so #### 4", "the answer is 5", "no idea"], ["4", "6", "1"]
    result = env.evaluate(responses, gold)
    assert result.rewards == [1.0, 0.0, 0.0] == env.score(responses, gold)
    assert result.metrics == {"math/accuracy": pytest.approx(1 / 3), "math/no_answer_rate": pytest.approx(1 / 3)}
    assert env.evaluate([], []) == EnvironmentResult(rewards=[], metrics={"math/accuracy": 0.0, "math/no_answer_rate": 0.0})


@pytest.mark.parametrize("env_type", ["math", "sokoban"])
def test_skip_verification_gives_zero_and_never_calls_the_verifier(monkeypatch, env_type):
    def boom(*args, **kwargs):
        raise AssertionError("the verifier was called")

    monkeypatch.setattr(math_env, "math_reward", boom)
    monkeypatch.setattr(SokobanEnvironment, "evaluate", boom)
    env = build_environment(EnvConfig(type=env_type, skip_verification=True))
    assert isinstance(env, SkippedVerification)
    result = env.evaluate(["#### 4", "<answer>R R</answer>"], ["4", BOARD])
    assert result.rewards == [0.0, 0.0] == env.score(["a", "b"], [None, None])
    with pytest.raises(ValueError, match="pair up"):
        env.evaluate(["a"], [])


def test_unknown_type_names_env_type_and_the_registered_names():
    with pytest.raises(ValueError, match=r"env.type is 'sokobn'.*did you mean 'sokoban'.*\['math', 'sokoban'\]"):
        EnvConfig(type="sokobn")
    cfg = EnvConfig()
    cfg.type = "chess"  # changed after validation: build_environment checks again
    with pytest.raises(ConfigError, match=r"'chess' is not a registered environment; choose one of \['math', 'sokoban'\]") as err:
        build_environment(cfg)
    assert err.value.key_path == "env.type"


def test_register_environment(monkeypatch):
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    register_environment("constant", lambda cfg: SkippedVerification())
    assert environment_names() == ["constant", "math", "sokoban"]
    assert isinstance(build_environment(EnvConfig(type="constant")), SkippedVerification)
    with pytest.raises(ValueError, match="already registered"):
        register_environment("math", lambda cfg: SkippedVerification())
