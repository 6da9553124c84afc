"""Noisy-student pseudo-labelling (seed 004): consensus answers of K samples per unlabelled prompt."""

from __future__ import annotations

from nemo_distill.environments.math import normalize_answer


def consensus_label(answers: list[str | None], *, k: int | None = None) -> tuple[str | None, float]:
    """Majority answer among the non-None ``answers`` and its agreement ``votes / K``.

    Answers are compared after :func:`normalize_answer` ("1,000" equals "1000"); ties go to the answer
    seen first; ``K = k`` when given, else ``len(answers)``. No answer at all gives ``(None, 0.0)``.
    """
    votes: dict[str, int] = {}
    first_form: dict[str, str] = {}
    for answer in answers:
        if answer is None:
            continue
        key = normalize_answer(answer)
        votes[key] = votes.get(key, 0) + 1
        first_form.setdefault(key, answer)
    if not votes:
        return None, 0.0
    best = max(votes, key=lambda key: votes[key])  # max keeps the first of equal counts: insertion order
    total = k if k is not None else len(answers)
    if total < 1:
        raise ValueError(f"k must be >= 1, got {total}")
    return normalize_answer(first_form[best]), votes[best] / total
