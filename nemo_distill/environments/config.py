"""``env``: which environment scores rollouts, its knobs, and the reward-shaping terms.

The sections live here, next to the environments; algorithm configs (e.g.
``algorithms/distillation_config.py``) include :class:`EnvConfig` as their ``env`` section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from nemo_distill.environments.shaping import RewardShapingConfig


@dataclass
class MathEnvConfig:
    use_math_verify: bool = True  # symbolic equivalence via math-verify after exact/numeric matching


@dataclass
class SokobanEnvConfig:
    reward: Literal["solved", "fraction_on_goal"] = "solved"  # 1/0 per solved board, or boxes on goals / boxes


@dataclass
class EnvConfig:
    """``env``: the verifier that scores rollouts (rewards for RL; metrics and validation in distillation)."""

    type: str = "math"  # a registered environment (environments/registry.py): math, sokoban
    skip_verification: bool = False  # reward 0.0 for every sample, the verifier is never called (pure distillation)
    math: MathEnvConfig = field(default_factory=MathEnvConfig)
    sokoban: SokobanEnvConfig = field(default_factory=SokobanEnvConfig)
    shaping: RewardShapingConfig = field(default_factory=RewardShapingConfig)  # terms added to the reward

    def __post_init__(self) -> None:
        from nemo_distill.config.errors import did_you_mean
        from nemo_distill.environments.registry import environment_names

        names = environment_names()
        if self.type not in names:
            raise ValueError(
                f"env.type is '{self.type}', which is not a registered environment{did_you_mean(self.type, names)}; choose one of {names}"
            )
