"""The math environment: answer extraction and verification (reward 1.0 or 0.0).

Extraction order (seed 004, "4-stage fallback"): ``#### X`` (GSM8K), ``\\boxed{X}``, "answer is X",
then the last number in the text. Matching: exact after normalisation, then numeric, then
symbolic equivalence through math-verify.
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)

_NUMBER = r"-?\$?\d[\d,]*(?:\.\d+)?|-?\$?\.\d+"
_GSM8K = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS = re.compile(r"answer is[:\s]*\**\s*([^\n]+)", re.IGNORECASE)
_LAST_NUMBER = re.compile(_NUMBER)


def _boxed_contents(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}``, with balanced braces."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for position in range(begin - 1, len(text)):
        if text[position] == "{":
            depth += 1
        elif text[position] == "}":
            depth -= 1
            if depth == 0:
                return text[begin:position]
    return None


def normalize_answer(answer: str) -> str:
    """Strip markup that never changes the value: ``$``, ``**``, commas in numbers, a trailing ``.``."""
    answer = answer.strip().strip("*").strip()
    answer = answer.replace("$", "").strip()
    answer = answer.rstrip(".").strip()
    if re.fullmatch(r"-?[\d,]+(\.\d+)?", answer):
        answer = answer.replace(",", "")
    return answer


def _first_number(text: str) -> str | None:
    match = _LAST_NUMBER.search(text)
    return normalize_answer(match.group(0)) if match else None


def extract_answer(text: str) -> str | None:
    """The final answer of a response, or None when it has no recognisable answer."""
    if not text:
        return None
    match = _GSM8K.search(text)
    if match:
        number = _first_number(match.group(1))
        return number if number is not None else normalize_answer(match.group(1))
    boxed = _boxed_contents(text)
    if boxed is not None and boxed.strip():
        return normalize_answer(boxed)
    match = _ANSWER_IS.search(text)
    if match:
        number = _first_number(match.group(1))
        return number if number is not None else normalize_answer(match.group(1))
    numbers = _LAST_NUMBER.findall(text)
    return normalize_answer(numbers[-1]) if numbers else None


def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def answers_match(pred: str | None, gold: str | None, *, use_math_verify: bool = True) -> bool:
    """Whether ``pred`` states the same value as ``gold`` (see module docstring)."""
    if pred is None or gold is None:
        return False
    pred, gold = normalize_answer(pred), normalize_answer(gold)
    if pred == gold:
        return True
    pred_value, gold_value = _as_float(pred), _as_float(gold)
    if pred_value is not None and gold_value is not None:
        return abs(pred_value - gold_value) <= 1e-6 * max(1.0, abs(gold_value))
    if not use_math_verify:
        return False
    try:
        from math_verify import parse, verify

        return bool(verify(parse(f"${gold}$"), parse(f"${pred}$")))
    except Exception as err:  # math-verify can fail on odd input; a failure is a mismatch, not a crash
        log.debug("math_verify failed on %r vs %r: %s", pred, gold, err)
        return False


def math_reward(response_text: str, gold_answer: str | None, *, use_math_verify: bool = True) -> float:
    """1.0 when the extracted answer matches the gold answer, else 0.0."""
    return 1.0 if answers_match(extract_answer(response_text), gold_answer, use_math_verify=use_math_verify) else 0.0


class MathEnvironment:
    """Scores batches of responses against gold answers."""

    def __init__(self, *, use_math_verify: bool = True):
        self.use_math_verify = use_math_verify

    def score(self, responses: list[str], gold_answers: list[str | None]) -> list[float]:
        if len(responses) != len(gold_answers):
            raise ValueError(f"{len(responses)} responses but {len(gold_answers)} gold answers")
        return [math_reward(r, g, use_math_verify=self.use_math_verify) for r, g in zip(responses, gold_answers)]
