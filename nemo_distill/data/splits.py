"""Seeded labelled / unlabelled / test splits for the noisy-student study (seed 004), and GSM8K gold.

Seed 004 draws, with seed 42, 1000 labelled training problems (real labels), 4000 unlabelled ones
(their labels kept hidden: only pseudo-label accuracy and the ``oracle`` condition read them) and
500 test problems (never trained on). :func:`split_problems` does the same for any list of
:class:`~nemo_distill.data.datasets.ProblemRecord`: the three splits are disjoint, and the same
records, config and seed always give the same splits, in the same order.

GSM8K as a local file: each row of the official ``train.jsonl`` / ``test.jsonl`` (from
https://github.com/openai/grade-school-math, ``grade_school_math/data/``, or a ``datasets``
``save_to_disk`` copy of ``openai/gsm8k``, config ``main``) has ``question`` and ``answer``, where
``answer`` is a worked solution whose last line is ``#### <number>``::

    {"question": "Natalia sold clips to 48 of her friends ...",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May. ...\\n#### 72"}

Load it with ``data.default.dataset=/path/train.jsonl data.default.problem_key=question
data.default.answer_key=answer``; :func:`gsm8k_gold_answer` turns such an ``answer`` into the gold
number (``"72"``), and :func:`gsm8k_records` builds records from raw rows directly. The
environment's reward already reduces a worked gold solution to its final answer, so records may
keep the full solution (the SFT target of the ``oracle`` / ``baseline`` conditions).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping

from nemo_distill.config import ConfigError
from nemo_distill.data.datasets import ProblemRecord
from nemo_distill.environments.math import extract_answer

GSM8K_MARKER = "#### "


@dataclass
class SplitConfig:
    """How many problems each split gets, and the seed of the draw (seed 004's defaults)."""

    num_labelled: int = 1000  # problems trained on with their real labels
    num_unlabelled: int = 4000  # problems pseudo-labelled (real labels hidden; read only for metrics / oracle)
    num_test: int = 500  # held-out evaluation problems (seed 004: 500 of GSM8K's 1319 test problems)
    seed: int = 42

    def __post_init__(self) -> None:
        for key in ("num_labelled", "num_unlabelled", "num_test"):
            if getattr(self, key) < 0:
                raise ConfigError(f"splits.{key}", f"must be >= 0, got {getattr(self, key)}")


@dataclass
class DataSplits:
    """The three disjoint splits. ``unlabelled`` records still carry their gold answers (hidden
    gold, for pseudo-label accuracy and the oracle); use :func:`hide_labels` before handing them to
    anything that must not see them."""

    labelled: list[ProblemRecord]
    unlabelled: list[ProblemRecord]
    test: list[ProblemRecord]

    def sizes(self) -> dict[str, int]:
        return {"labelled": len(self.labelled), "unlabelled": len(self.unlabelled), "test": len(self.test)}


def split_problems(
    records: list[ProblemRecord], config: SplitConfig, *, test_records: list[ProblemRecord] | None = None
) -> DataSplits:
    """Draw the labelled, unlabelled and test splits from ``records`` (seeded, disjoint).

    One seeded permutation of ``records`` is cut into ``[labelled | unlabelled | test]``; with
    ``test_records`` (e.g. GSM8K's separate test file) the test split is instead a seeded sample of
    those and ``records`` only feeds the two training splits. Records with the same ``record_id``
    are treated as one problem: duplicates are an error (they would leak across splits).
    """
    _check_unique_ids(records, "records")
    needed = config.num_labelled + config.num_unlabelled + (0 if test_records is not None else config.num_test)
    if needed > len(records):
        raise ConfigError(
            "splits",
            f"num_labelled={config.num_labelled} + num_unlabelled={config.num_unlabelled}"
            + ("" if test_records is not None else f" + num_test={config.num_test}")
            + f" = {needed} problems, but the dataset has only {len(records)}; lower the split sizes or use a larger dataset",
        )
    rng = random.Random(config.seed)
    order = list(range(len(records)))
    rng.shuffle(order)
    labelled = [records[i] for i in order[: config.num_labelled]]
    unlabelled = [records[i] for i in order[config.num_labelled : config.num_labelled + config.num_unlabelled]]
    if test_records is None:
        start = config.num_labelled + config.num_unlabelled
        test = [records[i] for i in order[start : start + config.num_test]]
    else:
        _check_unique_ids(test_records, "test_records")
        if config.num_test > len(test_records):
            raise ConfigError("splits.num_test", f"is {config.num_test}, but the test set has only {len(test_records)} problems")
        overlap = {r.record_id for r in test_records} & {r.record_id for r in records}
        if overlap:
            raise ValueError(f"test_records share {len(overlap)} record_id(s) with the training records, e.g. {sorted(overlap)[0]!r}")
        # A separate generator so the test draw does not depend on the training pool's size.
        test_order = list(range(len(test_records)))
        random.Random(config.seed + 1).shuffle(test_order)
        test = [test_records[i] for i in test_order[: config.num_test]]
    return DataSplits(labelled, unlabelled, test)


def hide_labels(records: Iterable[ProblemRecord]) -> list[ProblemRecord]:
    """Copies of ``records`` with ``answer=None`` (what an unlabelled set really looks like)."""
    return [replace(record, answer=None) for record in records]


def _check_unique_ids(records: list[ProblemRecord], name: str) -> None:
    seen: set[str] = set()
    for row, record in enumerate(records):
        if record.record_id in seen:
            raise ValueError(f"{name}[{row}] repeats record_id {record.record_id!r}; every problem needs a unique id so splits stay disjoint")
        seen.add(record.record_id)


def gsm8k_gold_answer(answer_text: str) -> str:
    """The gold number of a GSM8K ``answer`` field: the normalised text after ``#### ``.

    ``"... 48 + 24 = 72\\n#### 72"`` -> ``"72"``; ``"#### 1,000"`` -> ``"1000"``. Uses
    :func:`~nemo_distill.environments.math.extract_answer`, so gold and predictions are normalised
    alike. Raises ``ValueError`` when the text has no ``####`` answer (not a GSM8K solution).
    """
    if GSM8K_MARKER.strip() not in answer_text:
        raise ValueError(f"not a GSM8K answer (no '####' line): {answer_text[-80:]!r}")
    gold = extract_answer(answer_text)
    if gold is None:
        raise ValueError(f"GSM8K answer has an empty '####' line: {answer_text[-80:]!r}")
    return gold


def gsm8k_records(
    rows: Iterable[Mapping[str, Any]], *, split: str = "train", source: str = "gsm8k", keep_solution: bool = True
) -> list[ProblemRecord]:
    """:class:`ProblemRecord` s from raw GSM8K rows (``question`` / ``answer``).

    ``keep_solution=True`` keeps the worked solution as the record's answer (an SFT target; the
    reward reduces it to the number), ``False`` stores only :func:`gsm8k_gold_answer`. Ids are
    ``"<source>-<split>-<row>"``. A row missing a key is named by its index.
    """
    records = []
    for index, row in enumerate(rows):
        missing = [key for key in ("question", "answer") if key not in row]
        if missing:
            raise ValueError(f"GSM8K row {index} has no {missing} key(s); its keys are {sorted(row)}")
        answer = str(row["answer"])
        gold = gsm8k_gold_answer(answer)
        records.append(ProblemRecord(problem=str(row["question"]), answer=answer if keep_solution else gold, record_id=f"{source}-{split}-{index}"))
    return records
