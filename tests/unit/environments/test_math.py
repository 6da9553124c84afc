"""Math environment: each extraction stage, their order, normalisation, matching, rewards."""

from __future__ import annotations

import threading

import pytest

from nemo_distill.environments.math import (
    MathEnvironment,
    answers_match,
    extract_answer,
    math_reward,
    normalize_answer,
)


@pytest.mark.parametrize(
    "text,expected",
    [
        # Stage 1: #### (first occurrence; to end of line or next ####)
        ("Work: 3 + 4 = 7\n#### 7", "7"),
        ("#### 72\nmore text 5\n#### 99", "72"),
        ("#### 1,234.50 dollars", "1234.5"),
        ("#### -3", "-3"),
        ("#### $18", "18"),
        ("#### \\frac{1}{2}", "\\frac{1}{2}"),
        # Stage 2: \boxed{} (last balanced one)
        ("First \\boxed{3}, then \\boxed{5}.", "5"),
        ("\\boxed{\\frac{a}{b+{c}}}", "\\frac{a}{b+{c}}"),
        ("\\boxed{4} and an unclosed \\boxed{9", "4"),
        # Stage 3: "answer is" (last occurrence, case-insensitive, markup stripped)
        ("The answer is 42.", "42"),
        ("THE ANSWER IS **18**.", "18"),
        ("So the answer is $1,000$.", "1000"),
        ("I think the answer is 5. Wait, the answer is 6.", "6"),
        ("The answer is 3.5.", "3.5"),
        ("The answer is: 42 apples", "42"),
        ("The answer is $\\frac{1}{2}$.", "\\frac{1}{2}"),
        ("The answer is B.", "B"),
        # Stage 4: last number
        ("She has 3 apples and buys 12 more, so 15", "15"),
        ("It went from 10 to -4.", "-4"),
        ("about 0.25 of it", "0.25"),
        ("a total of 1,000,000 people", "1000000"),
        ("the list 1,2,3", "3"),
        ("Result: 12.0", "12"),
    ],
)
def test_extract_answer_each_stage(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text", [None, "", "no numbers here", "####. ####. ####.", "\\boxed{}"])
def test_extract_answer_none_when_nothing_is_stated(text):
    assert extract_answer(text) is None


def test_extract_answer_stage_order():
    # #### beats \boxed beats "answer is" beats the last number.
    assert extract_answer("answer is 1. \\boxed{2} 3\n#### 4\n5") == "4"
    assert extract_answer("The answer is 1. \\boxed{2} then 3") == "2"
    assert extract_answer("The answer is 1, not 3") == "1"
    # A stage with nothing usable falls through: degenerate #### then a number.
    assert extract_answer("####. ####. so it is 8") == "8"
    assert extract_answer("\\boxed{} answer is 7") == "7"


@pytest.mark.parametrize(
    "raw,normalised",
    [("1,000", "1000"), ("$5", "5"), ("\\$5", "5"), ("**18**.", "18"), (" 12.0 ", "12"), ("-0012.500", "-12.5"),
     ("\u22125", "-5"), (".5", "0.5"), ("-0", "0"), ("1,2,3", "1,2,3"), ("\\frac{1}{2}", "\\frac{1}{2}")],
)
def test_normalize_answer(raw, normalised):
    assert normalize_answer(raw) == normalised
    assert normalize_answer(normalised) == normalised  # idempotent


@pytest.mark.parametrize(
    "pred,gold,expected",
    [
        ("12.0", "12", True),
        ("1,000", "1000", True),
        ("$5.00", "5", True),
        ("-5", "-5.0", True),
        ("1/2", "0.5", True),
        ("100.00001", "100", True),  # within relative 1e-6
        ("100.1", "100", False),
        ("2", "3", False),
        ("-2", "2", False),
        (None, "3", False),
        ("3", None, False),
        ("", "", False),
        ("B", "B", True),
    ],
)
def test_answers_match_without_math_verify(pred, gold, expected):
    assert answers_match(pred, gold, use_math_verify=False) is expected


@pytest.mark.parametrize(
    "pred,gold,expected",
    [
        ("0.5", "\\frac{1}{2}", True),
        ("\\frac{1}{2}", "0.5", True),
        ("2", "\\sqrt{4}", True),
        ("1+x", "x+1", True),
        ("3.14159", "\\pi", False),
        ("0.333", "\\frac{1}{3}", False),
        ("garbage{", "1", False),
    ],
)
def test_answers_match_symbolic_through_math_verify(pred, gold, expected):
    pytest.importorskip("math_verify")
    assert answers_match(pred, gold) is expected
    if expected and pred != gold:
        assert answers_match(pred, gold, use_math_verify=False) is False  # it really was math-verify


def test_answers_match_from_a_worker_thread_does_not_crash():
    pytest.importorskip("math_verify")
    results = []
    worker = threading.Thread(target=lambda: results.append(answers_match("0.5", "\\frac{1}{2}")))
    worker.start()
    worker.join()
    assert results == [True]


def test_math_reward_and_environment_score():
    assert math_reward("so the total is 3 + 4 = 7\n#### 7", "7") == 1.0
    assert math_reward("#### 8", "7") == 0.0
    assert math_reward("no answer", "7") == 0.0
    assert math_reward("#### 7", None) == 0.0
    # A worked gold solution is reduced to its final answer.
    assert math_reward("The answer is 72.", "48 + 24 = 72\n#### 72") == 1.0
    env = MathEnvironment(use_math_verify=False)
    assert env.score(["#### 1", "\\boxed{2}", "answer is 4"], ["1", "2", "3"]) == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="2 responses but 1 gold answers"):
        env.score(["a", "b"], ["1"])
