"""The environment interface and the registry keyed by ``env.type``.

Every environment implements::

    evaluate(responses: list[str], gold_answers: list[str | None]) -> EnvironmentResult
    score(responses, gold_answers) -> list[float]          # == evaluate(...).rewards

``responses[i]`` is scored against ``gold_answers[i]``; rewards are floats (1.0 = correct), metrics
are batch means or counts under the environment's namespace (``math/...``, ``sokoban/...``).

Adding an environment: write ``environments/<name>.py`` with a class implementing the two methods
(standard-library imports only at module level), give ``EnvConfig`` a ``<name>`` section if it has
knobs (``environments/config.py``), and add a factory to :data:`_FACTORIES` below. ``env.type:
<name>`` then selects it and ``build_environment`` builds it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from nemo_distill.environments.config import EnvConfig


@dataclass
class EnvironmentResult:
    """What :meth:`Environment.evaluate` returns for one batch."""

    rewards: list[float]  # [N], one per response, in input order
    metrics: dict[str, float] = field(default_factory=dict)  # namespaced batch means / counts


class Environment(Protocol):
    def evaluate(self, responses: list[str], gold_answers: list[str | None]) -> EnvironmentResult: ...

    def score(self, responses: list[str], gold_answers: list[str | None]) -> list[float]: ...


class SkippedVerification:
    """``env.skip_verification``: reward 0.0 for every response; the verifier is never called
    (pure distillation, seed 001's ``orchestrator.buffer.skip_verification``)."""

    def evaluate(self, responses: list[str], gold_answers: list[str | None]) -> EnvironmentResult:
        if len(responses) != len(gold_answers):
            raise ValueError(f"{len(responses)} responses but {len(gold_answers)} gold answers; they must pair up one to one")
        return EnvironmentResult(rewards=[0.0] * len(responses), metrics={})

    def score(self, responses: list[str], gold_answers: list[str | None]) -> list[float]:
        return self.evaluate(responses, gold_answers).rewards


# Factories import their module when called, so this registry (and the config that checks
# ``env.type`` against it) never imports an environment it does not build.
def _build_math(cfg: EnvConfig) -> Environment:
    from nemo_distill.environments.math import MathEnvironment

    return MathEnvironment(use_math_verify=cfg.math.use_math_verify)


def _build_sokoban(cfg: EnvConfig) -> Environment:
    from nemo_distill.environments.sokoban import SokobanEnvironment

    return SokobanEnvironment(reward=cfg.sokoban.reward)


_FACTORIES: dict[str, Callable[[EnvConfig], Environment]] = {"math": _build_math, "sokoban": _build_sokoban}


def register_environment(name: str, factory: Callable[[EnvConfig], Environment]) -> None:
    """Make ``env.type: name`` build ``factory(env_cfg)`` (for environments outside this package)."""
    if name in _FACTORIES:
        raise ValueError(f"environment '{name}' is already registered")
    _FACTORIES[name] = factory


def environment_names() -> list[str]:
    """The registered ``env.type`` values, sorted."""
    return sorted(_FACTORIES)


def build_environment(cfg: EnvConfig) -> Environment:
    """The environment ``cfg.type`` names, or :class:`SkippedVerification` when ``cfg.skip_verification``."""
    from nemo_distill.config import ConfigError

    if cfg.type not in _FACTORIES:
        raise ConfigError("env.type", f"'{cfg.type}' is not a registered environment; choose one of {environment_names()}")
    if cfg.skip_verification:
        return SkippedVerification()
    return _FACTORIES[cfg.type](cfg)
