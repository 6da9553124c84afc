"""The built-in task: seeded arithmetic word problems with exact integer answers.

Runs offline, needs no dataset. ``train`` and ``validation`` never share a problem: each
candidate is assigned to a split by a hash of its text, and each split draws from its own
random stream.
"""

from __future__ import annotations

import hashlib
import random

from nemo_distill.data.records import ProblemRecord

_NAMES = ["Ava", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kira", "Liam"]
_ITEMS = ["apples", "marbles", "books", "stickers", "pencils", "shells", "coins", "cards"]
SPLITS = ("train", "validation")


def _templates(rng: random.Random, max_operand: int) -> tuple[str, int, str]:
    """One random problem, its integer answer and a worked solution ending ``#### answer``:
    add, subtract, multiply, add-then-multiply, divide."""
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a, b, c = (rng.randint(2, max_operand) for _ in range(3))
    kind = rng.randrange(5)
    if kind == 0:
        answer = a + b
        return (f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?", answer,
                f"{name} has {a} + {b} = {answer} {item}.")
    if kind == 1:
        big, small = max(a, b) + c, min(a, b)
        return (f"{name} had {big} {item} and gave away {small}. How many {item} are left?", big - small,
                f"{big} - {small} = {big - small} {item} are left.")
    if kind == 2:
        return (f"{name} buys {a} bags with {b} {item} in each bag. How many {item} is that in total?", a * b,
                f"{a} bags x {b} {item} = {a * b} {item}.")
    if kind == 3:
        return ((f"{name} has {a} {item}, then buys {b} boxes with {c} {item} each. "
                 f"How many {item} does {name} have?"), a + b * c,
                f"The boxes hold {b} x {c} = {b * c} {item}, so {name} has {a} + {b * c} = {a + b * c} {item}.")
    total = a * b
    return (f"{name} shares {total} {item} equally among {a} friends. How many {item} does each friend get?", b,
            f"{total} / {a} = {b} {item} each.")


def _split_of(problem: str) -> str:
    # A hash of the text, not the RNG stream, decides the split, so a problem drawn by both
    # streams still lands in only one of them.
    digest = hashlib.sha256(problem.encode()).digest()[0]
    return "validation" if digest < 32 else "train"  # about 1 in 8 problems is validation


def generate_arithmetic_problems(num_samples: int, *, split: str, seed: int = 0, max_operand: int = 20) -> list[ProblemRecord]:
    """``num_samples`` distinct problems of ``split`` ("train" or "validation"), deterministic in ``seed``.

    ``max_operand`` is the difficulty knob: operands are drawn from ``[2, max_operand]``. Answers
    are exact non-negative integers, given as decimal strings.
    """
    if split not in SPLITS:
        raise ValueError(f"arithmetic split '{split}' is not one of {SPLITS}")
    if max_operand < 2:
        raise ValueError(f"arithmetic max_operand must be >= 2 (operands are drawn from [2, max_operand]), got {max_operand}")
    if num_samples < 0:
        raise ValueError(f"arithmetic num_samples must be >= 0, got {num_samples}")
    rng = random.Random(f"{seed}-{split}")
    records: list[ProblemRecord] = []
    seen: set[str] = set()
    attempts = 0
    while len(records) < num_samples:
        attempts += 1
        if attempts > 200 * max(num_samples, 1):
            raise ValueError(
                f"cannot draw {num_samples} distinct {split} arithmetic problems with max_operand={max_operand}; "
                "raise max_operand or lower num_samples"
            )
        problem, answer, worked = _templates(rng, max_operand)
        if problem in seen or _split_of(problem) != split:
            continue
        seen.add(problem)
        # metadata["response"]: the worked answer SFT trains on (GSM8K style, final line "#### answer")
        records.append(ProblemRecord(problem=problem, answer=str(answer), record_id=f"arithmetic-{split}-{len(records)}",
                                     metadata={"response": f"{worked}\n#### {answer}"}))
    return records
