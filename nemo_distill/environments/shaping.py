"""Reward shaping terms added to the environment's reward (``env.shaping``).

Seed 004's GRPO debugging notes: a model that never emits EOS rambles to the token limit and
repeats the GSM8K marker (``"####. ####. ####."``). Its fixes, as opt-in terms (all 0.0 = off):

* ``termination_bonus``: added when the sample ended naturally (finish reason ``"stop"``: EOS or a
  stop string), not at the token limit (``"length"``). The seed's "+0.1 if EOS in completion".
* ``repeated_answer_marker_penalty``: subtracted when the text holds ``####`` more than once.
* ``single_answer_marker_bonus``: added when the text holds ``####`` exactly once (the other half
  of the seed's "Run C": ``+0.1`` for one marker, ``-0.1`` for several).

Total reward of a sample = environment reward + ``shaping_rewards(...)[i]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ANSWER_MARKER = "####"
NATURAL_FINISH_REASON = "stop"
FINISH_REASONS = ("stop", "length")  # models/generation/interfaces.py's FinishReason


@dataclass
class RewardShapingConfig:
    """``env.shaping``: reward units, added to the environment's reward per sample."""

    termination_bonus: float = field(default=0.0, metadata={"ge": 0.0})  # for finish_reason "stop" (seed 004 used 0.1)
    repeated_answer_marker_penalty: float = field(default=0.0, metadata={"ge": 0.0})  # for >1 "####" (a positive number is subtracted; seed 004 used 0.1)
    single_answer_marker_bonus: float = field(default=0.0, metadata={"ge": 0.0})  # for exactly one "####" (seed 004 used 0.1)

    def is_active(self) -> bool:
        return any((self.termination_bonus, self.repeated_answer_marker_penalty, self.single_answer_marker_bonus))


def shaping_rewards(texts: list[str], finish_reasons: list[str], cfg: RewardShapingConfig) -> list[float]:
    """The shaping term of each sample ([N] floats, 0.0 when every term is off).

    ``texts[i]`` is the decoded response and ``finish_reasons[i]`` its generation finish reason
    (``"stop"`` or ``"length"``).
    """
    if len(texts) != len(finish_reasons):
        raise ValueError(f"{len(texts)} texts but {len(finish_reasons)} finish reasons; they must pair up one to one")
    shaped = []
    for index, (text, reason) in enumerate(zip(texts, finish_reasons)):
        if reason not in FINISH_REASONS:
            raise ValueError(f"sample {index} has finish reason {reason!r}; expected one of {FINISH_REASONS}")
        term = cfg.termination_bonus if reason == NATURAL_FINISH_REASON else 0.0
        markers = text.count(ANSWER_MARKER)
        if markers > 1:
            term -= cfg.repeated_answer_marker_penalty
        elif markers == 1:
            term += cfg.single_answer_marker_bonus
        shaped.append(term)
    return shaped
