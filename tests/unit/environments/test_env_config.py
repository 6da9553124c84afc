"""``env`` section: defaults, the registry check through the schema, bounds, the old import path."""

from __future__ import annotations

import pytest

from nemo_distill.algorithms import distillation_config
from nemo_distill.config import ConfigError
from nemo_distill.config.schema import validate
from nemo_distill.environments import config as env_config
from nemo_distill.environments.config import EnvConfig


def test_defaults_live_in_the_dataclasses():
    cfg = EnvConfig()
    assert (cfg.type, cfg.skip_verification, cfg.math.use_math_verify, cfg.sokoban.reward) == ("math", False, True, "solved")
    assert (cfg.shaping.termination_bonus, cfg.shaping.repeated_answer_marker_penalty, cfg.shaping.single_answer_marker_bonus) == (0.0, 0.0, 0.0)


def test_distillation_config_uses_the_same_classes():
    # the env section of every algorithm is the environments' own dataclass (defaults in one place)
    assert isinstance(distillation_config.DistillationMasterConfig().env, env_config.EnvConfig)
    assert isinstance(distillation_config.DistillationMasterConfig().env.math, env_config.MathEnvConfig)


def test_validation_through_the_schema():
    cfg = validate({"env": {"type": "sokoban", "skip_verification": True, "sokoban": {"reward": "fraction_on_goal"},
                            "shaping": {"termination_bonus": 0.1}}}, distillation_config.DistillationMasterConfig)
    assert (cfg.env.type, cfg.env.skip_verification, cfg.env.sokoban.reward, cfg.env.shaping.termination_bonus) == (
        "sokoban", True, "fraction_on_goal", 0.1)


@pytest.mark.parametrize(
    "env, key, message",
    [
        ({"type": "sokobn"}, "env", r"env.type is 'sokobn'.*\['math', 'sokoban'\]"),
        ({"sokoban": {"reward": "partial"}}, "env.sokoban.reward", "choose one of"),
        ({"shaping": {"termination_bonus": -0.1}}, "env.shaping.termination_bonus", ">= 0.0"),
        ({"shaping": {"repeat_penalty": 0.1}}, "env.shaping.repeat_penalty", "unknown key"),
    ],
)
def test_bad_values_name_the_key(env, key, message):
    with pytest.raises(ConfigError, match=message) as err:
        validate({"env": env}, distillation_config.DistillationMasterConfig)
    assert err.value.key_path == key
