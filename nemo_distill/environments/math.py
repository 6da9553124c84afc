"""The math environment: final-answer extraction and verification; reward 1.0 or 0.0.

Extraction (seed 004's "4-stage fallback"), the first stage that yields an answer wins:

1. ``#### X`` (GSM8K): the FIRST ``####``; ``X`` runs to the end of its line or the next ``####``.
2. ``\\boxed{X}``: the LAST ``\\boxed{...}`` whose braces balance.
3. ``answer is X`` (any case): the LAST occurrence; ``X`` runs to the end of its sentence/line.
4. The last number in the text.

In stages 1 and 3 a LaTeX answer (one with a backslash, e.g. ``\\sqrt{2}``) is kept whole;
otherwise the first number in ``X`` is taken ("42 apples" -> "42"), else ``X`` itself ("B").
A stage that finds nothing usable (e.g. the degenerate ``"####. ####."``) falls through.

Normalisation (:func:`normalize_answer`, also the key of the noisy-student vote) removes what never
changes the value: ``$``, bold, a trailing period, thousands commas, a leading ``x =``, a unit after
a number (``"18 dollars"``, ``"12 kg"``, ``"50%"``, ``"5\\text{ cm}"``, ``"90^\\circ"`` -> the number), and
writes integer LaTeX fractions as ``a/b`` (``"\\frac{1}{2}"`` -> ``"1/2"``) and decimals canonically.

Matching (:func:`answers_match`): equal after :func:`normalize_answer`; else, when both are plain
numbers or fractions, equal within a relative 1e-6; else symbolic equivalence through math-verify
(imported lazily; any failure counts as a mismatch, never a crash).
"""

from __future__ import annotations

import logging
import math
import re
import threading

from nemo_distill.environments.registry import EnvironmentResult

log = logging.getLogger(__name__)

# A number as written in a response: optional sign and "$", thousands separators only in groups
# of three (so a list "1,2,3" is not read as 123), optional decimals, optional "/denominator".
_NUMBER = re.compile(r"-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|-?\$?\.\d+")
_PLAIN_DECIMAL = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
_FRACTION = re.compile(r"([-+]?\d+)/(\d+)")
_GSM8K_MARKER = "####"
_ANSWER_IS = re.compile(r"answer is", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?:\s|$)")
_VARIABLE_PREFIX = re.compile(r"^[A-Za-z]\s*=\s*(?=\S)")
_LATEX_FRACTION = re.compile(r"(-?)\\[dt]?frac\{\s*(\d+)\s*\}\{\s*(\d+)\s*\}")
# A number followed by a unit: percent, degrees, \text{...} / \mathrm{...}, or words of two or
# more letters ("dollars", "kg", "apples per box"); a single letter ("2x") is algebra, not a unit.
_UNIT = r"(?:\\?%|\^\s*\{?\\circ\}?|\\(?:text|mathrm|mbox)\{[^{}]*\}|[A-Za-z]{2,}(?:\s+[A-Za-z]+)*)"
_NUMBER_WITH_UNIT = re.compile(r"([-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?)\s*(?:\\[,;! ]\s*)*" + _UNIT)
RELATIVE_TOLERANCE = 1e-6
MATH_VERIFY_TIMEOUT_SECONDS = 5


def _canonical_decimal(number: str) -> str:
    """"-0012.500" -> "-12.5", "12.0" -> "12", ".5" -> "0.5", "-0" -> "0"."""
    sign = "-" if number.startswith("-") else ""
    number = number.lstrip("+-")
    whole, _, fraction = number.partition(".")
    whole = whole.lstrip("0") or "0"
    fraction = fraction.rstrip("0")
    canonical = f"{whole}.{fraction}" if fraction else whole
    return "0" if canonical == "0" else sign + canonical


def normalize_answer(answer: str) -> str:
    """Strip what never changes the value: surrounding whitespace, ``**`` bold, ``$`` (also
    ``\\$``), a trailing ``.``, thousands commas, a leading single-letter ``x =``, a unit after a
    number; write numbers canonically (``"12.0"`` -> ``"12"``, ``"1,000"`` -> ``"1000"``, Unicode
    minus -> ``-``) and integer LaTeX fractions as ``a/b`` (``"-\\frac{1}{2}"`` -> ``"-1/2"``).
    Anything else (``"B"``, ``"x+1"``, ``"\\sqrt{2}"``) is returned stripped but otherwise as is.
    Idempotent: ``normalize_answer(normalize_answer(a)) == normalize_answer(a)``."""
    answer = answer.replace("\\$", "").replace("$", "").replace("\u2212", "-")
    answer = re.sub(r"^[\s*]+|[\s*.]+$", "", answer)  # "**18**." -> "18"
    answer = _VARIABLE_PREFIX.sub("", answer)  # "x = 5" -> "5" (one letter only: "ab = 5" is left alone)
    fraction = _LATEX_FRACTION.fullmatch(answer)
    if fraction:  # "\\dfrac{3}{4}" -> "3/4", the form a response writes without LaTeX
        answer = f"{fraction.group(1)}{fraction.group(2)}/{fraction.group(3)}"
    with_unit = _NUMBER_WITH_UNIT.fullmatch(answer)
    if with_unit:  # "18 dollars" -> "18": the unit names the quantity, it does not change it
        answer = with_unit.group(1)
    without_commas = answer.replace(",", "")
    if re.fullmatch(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|[-+]?\.\d+", answer) and _PLAIN_DECIMAL.fullmatch(without_commas):
        return _canonical_decimal(without_commas)
    return answer


def _answer_from_phrase(phrase: str) -> str | None:
    """The answer stated by the text after ``####`` or "answer is" (see module docstring)."""
    phrase = phrase.strip().lstrip(":").strip()
    phrase = _SENTENCE_END.split(phrase, maxsplit=1)[0]
    phrase = normalize_answer(phrase)
    if not phrase or not any(c.isalnum() for c in phrase):
        return None
    if "\\" in phrase:
        return phrase
    number = _NUMBER.search(phrase)
    return normalize_answer(number.group(0)) if number else phrase


def _gsm8k_answer(text: str) -> str | None:
    start = text.find(_GSM8K_MARKER)
    if start < 0:
        return None
    rest = text[start + len(_GSM8K_MARKER) :]
    rest = rest.split("\n", 1)[0].split(_GSM8K_MARKER, 1)[0]
    return _answer_from_phrase(rest)


def _boxed_answer(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}`` with balanced braces."""
    search_end = len(text)
    while True:
        start = text.rfind("\\boxed{", 0, search_end)
        if start < 0:
            return None
        begin = start + len("\\boxed{")
        depth = 1
        for position in range(begin, len(text)):
            if text[position] == "{":
                depth += 1
            elif text[position] == "}":
                depth -= 1
                if depth == 0:
                    content = normalize_answer(text[begin:position])
                    if content:
                        return content
                    break
        search_end = start  # unbalanced or empty: try the \boxed before this one


def _answer_is_answer(text: str) -> str | None:
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :].split("\n", 1)[0]
    return _answer_from_phrase(rest)


def _last_number(text: str) -> str | None:
    numbers = _NUMBER.findall(text)
    return normalize_answer(numbers[-1]) if numbers else None


def extract_answer(text: str | None) -> str | None:
    """The final answer of a response (normalised), or ``None`` when it states none."""
    if not text:
        return None
    for stage in (_gsm8k_answer, _boxed_answer, _answer_is_answer, _last_number):
        answer = stage(text)
        if answer:
            return answer
    return None


def final_answer(gold: str) -> str | None:
    """A gold answer reduced to what a prediction is compared with: a worked solution (one with
    ``####`` or ``\\boxed{``, e.g. a GSM8K ``answer`` field) gives its extracted answer, anything
    else its :func:`normalize_answer` form (``None`` when nothing is left)."""
    if _GSM8K_MARKER in gold or "\\boxed{" in gold:
        return extract_answer(gold)
    return normalize_answer(gold) or None


def _as_number(answer: str) -> float | None:
    """A plain decimal or a simple fraction ``a/b`` as a float; ``None`` otherwise."""
    if _PLAIN_DECIMAL.fullmatch(answer):
        return float(answer)
    fraction = _FRACTION.fullmatch(answer)
    if fraction and int(fraction.group(2)) != 0:
        return int(fraction.group(1)) / int(fraction.group(2))
    return None


def _math_verify_equal(pred: str, gold: str) -> bool:
    try:
        from math_verify import parse, verify
    except ImportError:
        log.warning("math-verify is not installed; symbolic answers are compared as text only")
        return False
    def compare(timeout: int | None) -> bool:
        gold_parsed = parse(f"${gold}$", parsing_timeout=timeout)
        pred_parsed = parse(f"${pred}$", parsing_timeout=timeout)
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))

    try:
        # math-verify's own timeouts use SIGALRM, which only the main thread may set; elsewhere (the
        # overlap_generation thread scores rewards) a watchdog thread bounds the wait instead.
        if threading.current_thread() is threading.main_thread():
            return compare(MATH_VERIFY_TIMEOUT_SECONDS)
        return call_with_deadline(lambda: compare(None), MATH_VERIFY_TIMEOUT_SECONDS)
    except Exception as err:  # odd input or a timeout: a mismatch, not a crashed run
        log.debug("math-verify failed on pred=%r gold=%r: %s", pred, gold, err)
        return False


def call_with_deadline(function, seconds: float):
    """``function()``'s result, or ``TimeoutError`` after ``seconds``. The call runs in a daemon thread,
    which Python cannot stop: a call past its deadline finishes (or hangs) in the background, but the
    caller goes on."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:  # handed to the caller below
            outcome["error"] = error

    worker = threading.Thread(target=run, name="math-verify", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise TimeoutError(f"no answer within {seconds} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def answers_match(pred: str | None, gold: str | None, *, use_math_verify: bool = True) -> bool:
    """Whether ``pred`` states the same value as ``gold`` (see the module docstring)."""
    if pred is None or gold is None:
        return False
    pred, gold = normalize_answer(pred), normalize_answer(gold)
    if not pred or not gold:
        return False
    if pred == gold:
        return True
    pred_value, gold_value = _as_number(pred), _as_number(gold)
    if pred_value is not None and gold_value is not None:
        return math.isclose(pred_value, gold_value, rel_tol=RELATIVE_TOLERANCE, abs_tol=1e-12)
    return use_math_verify and _math_verify_equal(pred, gold)


def math_reward(response_text: str, gold_answer: str | None, *, use_math_verify: bool = True) -> float:
    """1.0 when the answer extracted from ``response_text`` matches ``gold_answer``, else 0.0.

    A gold answer that is itself a worked solution (contains ``####`` or ``\\boxed``) is reduced
    to its final answer first.
    """
    if gold_answer is not None and (_GSM8K_MARKER in gold_answer or "\\boxed{" in gold_answer):
        gold_answer = extract_answer(gold_answer)
    return 1.0 if answers_match(extract_answer(response_text), gold_answer, use_math_verify=use_math_verify) else 0.0


class MathEnvironment:
    """Scores batches of responses against gold answers with :func:`math_reward`."""

    def __init__(self, *, use_math_verify: bool = True):
        self.use_math_verify = use_math_verify

    def score(self, responses: list[str], gold_answers: list[str | None]) -> list[float]:
        """One reward (1.0 / 0.0) per response; ``responses[i]`` is checked against ``gold_answers[i]``."""
        if len(responses) != len(gold_answers):
            raise ValueError(f"{len(responses)} responses but {len(gold_answers)} gold answers; they must pair up one to one")
        return [math_reward(r, g, use_math_verify=self.use_math_verify) for r, g in zip(responses, gold_answers)]

    def evaluate(self, responses: list[str], gold_answers: list[str | None]) -> EnvironmentResult:
        """Rewards as :meth:`score`, plus ``math/accuracy`` (mean reward) and ``math/no_answer_rate``
        (fraction of responses from which no answer could be extracted)."""
        rewards = self.score(responses, gold_answers)
        count = max(len(responses), 1)
        no_answer = sum(extract_answer(response) is None for response in responses)
        return EnvironmentResult(rewards=rewards, metrics={"math/accuracy": sum(rewards) / count, "math/no_answer_rate": no_answer / count})
