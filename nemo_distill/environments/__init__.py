"""Environments turn a response into a reward: ``reward = verifier(response, gold)``.

* :mod:`.math` -- final-answer extraction (``####``, ``\\boxed{}``, "answer is", last number),
  normalisation, matching (exact, numeric, math-verify), ``MathEnvironment.score`` -> 0/1 rewards.

An environment is a class with ``score(responses: list[str], gold_answers: list[str | None]) ->
list[float]``; modules here import nothing heavier than the standard library at import time.
"""
