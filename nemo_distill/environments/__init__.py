"""Environments turn a response into a reward: ``reward = verifier(response, gold)``.

* :mod:`.registry` -- the interface (``evaluate`` -> :class:`EnvironmentResult`, ``score``), the
  registry keyed by ``env.type``, ``build_environment(env_cfg)``, ``SkippedVerification``.
* :mod:`.config`   -- ``EnvConfig`` (``env``: type, skip_verification, math, sokoban, shaping).
* :mod:`.math`     -- final-answer extraction (``####``, ``\\boxed{}``, "answer is", last number),
  normalisation, matching (exact, numeric, math-verify); ``MathEnvironment`` -> 0/1 rewards.
* :mod:`.sokoban`  -- seeded solvable puzzles (also the built-in task ``sokoban``), move parsing, a
  simulator and BFS solver; ``SokobanEnvironment`` -> 1/0 (or fraction of boxes on goals).
* :mod:`.shaping`  -- optional reward terms added to the environment's reward (seed 004).

An environment is a class with ``evaluate(responses: list[str], gold_answers: list[str | None]) ->
EnvironmentResult(rewards, metrics)`` and ``score(...) -> list[float]``; modules here import nothing
heavier than the standard library at import time. Adding one: see :mod:`.registry`.
"""
