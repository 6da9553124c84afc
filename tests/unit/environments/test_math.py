"""Math environment: each extraction stage, their order, normalisation, matching, rewards."""

from __future__ import annotations

import threading
import time

import pytest

from nemo_distill.environments.math import (
    MathEnvironment,
    answers_match,
    extract_answer,
    final_answer,
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
        ("#### \\frac{1}{2}", "1/2"),  # integer LaTeX fractions are written a/b
        ("#### \\sqrt{2}", "\\sqrt{2}"),  # other LaTeX is kept whole
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
        ("The answer is $\\frac{1}{2}$.", "1/2"),
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
     ("\u22125", "-5"), (".5", "0.5"), ("-0", "0"), ("1,2,3", "1,2,3"), ("\\frac{1}{2}", "1/2"),
     ("-\\dfrac{3}{4}", "-3/4"), ("\\sqrt{2}", "\\sqrt{2}"), ("18 dollars", "18"), ("12 kg", "12"), ("50%", "50"),
     ("50\\%", "50"), ("90^\\circ", "90"), ("5\\text{ cm}", "5"), ("x = 5", "5"), ("2x", "2x"), ("ab = 5", "ab = 5"),
     ("1,000 apples", "1000"), ("B", "B")],
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
        ("0.5", "\\frac{\\sqrt{4}}{4}", True),
        ("\\frac{x}{2}", "x/2", True),
        ("\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}", True),
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
    worker = threading.Thread(target=lambda: results.append(answers_match("2", "\\sqrt{4}")))
    worker.start()
    worker.join()
    assert results == [True]


def test_a_hanging_math_verify_in_a_worker_thread_gives_a_mismatch_after_the_deadline(monkeypatch):
    # math-verify's SIGALRM timeout cannot run off the main thread: the watchdog must bound the wait
    pytest.importorskip("math_verify")
    import math_verify

    from nemo_distill.environments import math as math_env

    release = threading.Event()
    monkeypatch.setattr(math_env, "MATH_VERIFY_TIMEOUT_SECONDS", 0.2)
    monkeypatch.setattr(math_verify, "verify", lambda *args, **kwargs: release.wait(30) or True)
    results = []
    worker = threading.Thread(target=lambda: results.append(answers_match("x^2", "x*x")))
    started = time.perf_counter()
    worker.start()
    worker.join(10)
    release.set()
    assert results == [False] and time.perf_counter() - started < 5


def test_call_with_deadline_returns_and_reraises():
    from nemo_distill.environments.math import call_with_deadline

    assert call_with_deadline(lambda: 7, 5) == 7
    with pytest.raises(ZeroDivisionError):
        call_with_deadline(lambda: 1 / 0, 5)
    with pytest.raises(TimeoutError, match="0.05 s"):
        call_with_deadline(lambda: time.sleep(1), 0.05)


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


# Hard formats (issue 15): each stage returns the answer itself, never the text around it.
@pytest.mark.parametrize(
    "text,expected",
    [
        # Stage 1 (####): trailing text, several markers, negatives, commas, currency, units
        ("#### 10 and also some more words", "10"),
        ("#### 10 and also 20", "10"),
        ("Step 1 ... #### 5 #### 6", "5"),
        ("#### 72.\nThen the model rambles: #### 80", "72"),
        ("#### -1,000", "-1000"),
        ("#### \\$1,250.00 in total", "1250"),
        ("#### 3.50", "3.5"),
        ("#### 18 dollars", "18"),
        ("#### 45%", "45"),
        ("#### (4)", "4"),
        ("#### 1/2 of the cake", "1/2"),
        # Stage 2 (\boxed): fractions, negatives, units, currency, a nested brace, an equation
        ("so \\boxed{\\frac{3}{4}}", "3/4"),
        ("\\boxed{-\\dfrac{1}{2}}", "-1/2"),
        ("\\boxed{\\tfrac{7}{8}} cups", "7/8"),
        ("\\boxed{3/4}", "3/4"),
        ("\\boxed{-12}", "-12"),
        ("\\boxed{1,000}", "1000"),
        ("\\boxed{\\$18.00}", "18"),
        ("\\boxed{5\\text{ dollars}}", "5"),
        ("\\boxed{90^\\circ}", "90"),
        ("\\boxed{x = 5}", "5"),
        ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}"),
        # Stage 3 ("answer is"): trailing text, negatives, units, currency
        ("The answer is -7 degrees.", "-7"),
        ("The final answer is $2,500. Let me double check.", "2500"),
        ("So the answer is 1,000 dollars.", "1000"),
        ("the answer is x = 12", "12"),
        ("The answer is 6, wait no", "6"),
        ("The answer is 0.50", "0.5"),
        # Stage 4 (last number): negatives, commas, currency, trailing period
        ("5 - 7 = -2", "-2"),
        ("It costs $0.75 each.", "0.75"),
        ("In total they paid $12,345.60.", "12345.6"),
        ("Temperatures fell to -3.5 overnight", "-3.5"),
        ("He ran 3 laps, then 4, so 7 laps", "7"),
    ],
)
def test_extract_answer_hard_formats(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "pred,gold",
    [("3.50", "3.5"), ("1,000", "1000"), ("1/2", "0.5"), ("-1/2", "-0.5"), ("\\frac{1}{2}", "0.5"), ("-\\frac{3}{4}", "-0.75"),
     ("$18", "18"), ("18 dollars", "18"), ("50%", "50"), ("-1,234.50", "-1234.5"), ("2/4", "1/2"), ("72.", "72")],
)
def test_answers_match_hard_formats_without_math_verify(pred, gold):
    assert answers_match(pred, gold, use_math_verify=False)
    assert answers_match(gold, pred, use_math_verify=False)  # symmetric


def test_extracted_answers_match_gsm8k_gold():
    gold = extract_answer("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72")
    assert gold == "72"
    for response in ["48 + 24 = 72 clips.\n#### 72", "The answer is $72.", "\\boxed{72}", "so she sold 72 clips"]:
        assert answers_match(extract_answer(response), gold, use_math_verify=False)


@pytest.mark.parametrize(
    "gold,expected",
    [("Natalia sold 24 clips.\n#### 72", "72"), ("\\boxed{\\frac{1}{2}}", "1/2"), (" 1,000 ", "1000"), ("$18.00", "18"), ("B", "B"), ("  ", None)],
)
def test_final_answer_reduces_gold(gold, expected):
    assert final_answer(gold) == expected
