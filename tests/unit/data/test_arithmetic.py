"""The built-in arithmetic task: exact answers, determinism, disjoint splits, difficulty knob."""

from __future__ import annotations

import re

import pytest

from nemo_distill.data.arithmetic import generate_arithmetic_problems

_NUMBER = r"(\d+)"


def _solve(problem: str) -> int:
    """Independent re-derivation of the answer from the problem text (one regex per template)."""
    patterns = [
        (rf"has {_NUMBER} \w+ and gets {_NUMBER} more", lambda a, b: a + b),
        (rf"had {_NUMBER} \w+ and gave away {_NUMBER}", lambda a, b: a - b),
        (rf"buys {_NUMBER} bags with {_NUMBER} \w+ in each bag", lambda a, b: a * b),
        (rf"has {_NUMBER} \w+, then buys {_NUMBER} boxes with {_NUMBER} \w+ each", lambda a, b, c: a + b * c),
        (rf"shares {_NUMBER} \w+ equally among {_NUMBER} friends", lambda total, n: total // n),
    ]
    for pattern, solve in patterns:
        match = re.search(pattern, problem)
        if match:
            return solve(*(int(g) for g in match.groups()))
    raise AssertionError(f"no template matches {problem!r}")


def test_answers_are_exact_integers_matching_the_text():
    records = generate_arithmetic_problems(300, split="train", seed=3)
    for record in records:
        assert record.answer == str(_solve(record.problem))
        assert int(record.answer) >= 0
    # Every template shows up in a sample this large.
    kinds = {next(i for i, key in enumerate(["gets", "gave away", "bags", "boxes", "shares"]) if key in r.problem) for r in records}
    assert kinds == {0, 1, 2, 3, 4}


def test_division_problems_divide_evenly():
    for record in generate_arithmetic_problems(300, split="train", seed=5):
        match = re.search(rf"shares {_NUMBER} \w+ equally among {_NUMBER}", record.problem)
        if match:
            total, friends = map(int, match.groups())
            assert total % friends == 0


def test_deterministic_in_seed_and_different_across_seeds():
    first = generate_arithmetic_problems(50, split="train", seed=7)
    again = generate_arithmetic_problems(50, split="train", seed=7)
    other = generate_arithmetic_problems(50, split="train", seed=8)
    assert first == again
    assert [r.problem for r in first] != [r.problem for r in other]


def test_splits_are_disjoint_and_problems_distinct():
    train = generate_arithmetic_problems(512, split="train", seed=0)
    validation = generate_arithmetic_problems(64, split="validation", seed=0)
    assert len({r.problem for r in train}) == 512
    assert len({r.problem for r in validation}) == 64
    assert not {r.problem for r in train} & {r.problem for r in validation}
    # Disjoint across seeds too: the split is a function of the text, not of the stream.
    other_validation = generate_arithmetic_problems(64, split="validation", seed=1)
    assert not {r.problem for r in train} & {r.problem for r in other_validation}


def test_record_ids_are_unique_and_name_the_split():
    records = generate_arithmetic_problems(20, split="validation", seed=0)
    assert len({r.record_id for r in records}) == 20
    assert all(r.record_id.startswith("arithmetic-validation-") for r in records)


def test_max_operand_bounds_the_operands():
    for record in generate_arithmetic_problems(100, split="train", seed=0, max_operand=5):
        numbers = [int(n) for n in re.findall(r"\d+", record.problem)]
        # Operands are in [2, 5]; derived quantities (a shared total, a "had" amount) stay below 5*5+5.
        assert all(2 <= n <= 30 for n in numbers), record.problem
    easy = generate_arithmetic_problems(100, split="train", seed=0, max_operand=5)
    hard = generate_arithmetic_problems(100, split="train", seed=0, max_operand=500)
    assert max(int(r.answer) for r in hard) > max(int(r.answer) for r in easy)


def test_zero_samples_is_empty():
    assert generate_arithmetic_problems(0, split="train") == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"split": "test"}, "not one of"),
        ({"split": "train", "max_operand": 1}, "max_operand must be >= 2"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_arithmetic_problems(4, **kwargs)


def test_impossible_request_fails_instead_of_looping():
    # With max_operand=2 every operand is 2: at most 12 names x 8 items x 5 templates = 480 problems.
    with pytest.raises(ValueError, match="raise max_operand"):
        generate_arithmetic_problems(500, split="train", max_operand=2)
