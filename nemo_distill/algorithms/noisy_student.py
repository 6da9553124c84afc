"""Noisy-student pseudo-labelling (seed 004): the consensus answer of K samples per unlabelled prompt.

For now only the voting: :func:`pseudo_label` (a typed :class:`PseudoLabel`) and its tuple form
:func:`consensus_label`. The rounds loop (sample K, vote, filter by agreement, train) comes later.
"""

from __future__ import annotations

from dataclasses import dataclass

from nemo_distill.environments.math import normalize_answer


@dataclass(frozen=True)
class PseudoLabel:
    """The consensus of one prompt's K sampled answers."""

    answer: str | None  # the majority answer, normalised; None when no sample had an answer
    votes: int  # samples that gave this answer (after normalisation)
    num_samples: int  # K, the denominator of ``agreement``

    @property
    def agreement(self) -> float:
        """``votes / K`` in [0, 1]; seed 004 keeps labels with agreement >= 0.75."""
        return self.votes / self.num_samples if self.num_samples else 0.0

    def is_confident(self, min_agreement: float) -> bool:
        """Whether this label exists and at least ``min_agreement`` of the K samples agree."""
        return self.answer is not None and self.agreement >= min_agreement


def pseudo_label(answers: list[str | None], *, k: int | None = None) -> PseudoLabel:
    """Majority vote over the non-None, non-blank ``answers`` (one per sample; None = no answer extracted).

    Answers are compared after :func:`~nemo_distill.environments.math.normalize_answer`
    (``"1,000"`` and ``"1000"`` are one vote each for the same answer); a tie goes to the answer
    seen first. ``K = k`` when given (e.g. samples whose generation failed are missing from
    ``answers``), else ``len(answers)``.
    """
    if k is not None and k < max(1, len(answers)):
        raise ValueError(f"k={k} must be >= 1 and >= the number of answers ({len(answers)}); it is the number of samples drawn")
    votes: dict[str, int] = {}  # insertion order = order first seen
    for answer in answers:
        key = normalize_answer(answer) if answer is not None else ""
        if key:  # None and blank answers are abstentions
            votes[key] = votes.get(key, 0) + 1
    total = k if k is not None else len(answers)
    if not votes:
        return PseudoLabel(answer=None, votes=0, num_samples=total)
    best = max(votes, key=votes.__getitem__)  # max returns the first of equal maxima: earliest seen
    return PseudoLabel(answer=best, votes=votes[best], num_samples=total)


def consensus_label(answers: list[str | None], *, k: int | None = None) -> tuple[str | None, float]:
    """``(majority answer, agreement = votes / K)``; ``(None, 0.0)`` when no answer is given.
    See :func:`pseudo_label` for the rules."""
    label = pseudo_label(answers, k=k)
    return label.answer, label.agreement
