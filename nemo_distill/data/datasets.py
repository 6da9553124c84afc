"""Problem datasets: local JSONL / parquet, HF ``save_to_disk`` folders, or a built-in task.

Config (``data:``): ``default`` names the source and prompt files; ``train`` / ``validation``
override any of its keys (``null`` inherits), matching the runbook's ``data.default.prompt_file``,
``data.train.prompt_file``, ``data.validation.prompt_file``, ``data.default.system_prompt_file``.
A ``dataset`` that names a built-in task (``data/tasks.py``: arithmetic, sokoban) generates its
problems, with knobs from ``task_args``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterator, Literal

from nemo_distill.config.errors import DataError
from nemo_distill.data import tasks
from nemo_distill.data.records import ProblemRecord

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_NUM_SAMPLES = {"train": 512, "validation": 64}


@dataclass
class DataSourceConfig:
    dataset: str = "arithmetic"  # a built-in task (data/tasks.py: arithmetic, sokoban), or a .jsonl / .parquet file or a save_to_disk folder
    split: str | None = None  # split of a DatasetDict on disk (None: the split being loaded)
    problem_key: str = "problem"  # column holding the problem text
    answer_key: str = "answer"  # column holding the gold answer
    response_key: str | None = None  # column holding a target response (SFT); built-in tasks give their worked answer
    prompt_file: str | None = None  # format string with one {} for the problem
    system_prompt_file: str | None = None  # text file with a system prompt, or null
    num_samples: int | None = None  # cap (built-in task: how many to generate; default 512 train / 64 validation)
    task_args: dict[str, Any] = field(default_factory=dict)  # built-in task knobs, e.g. {board_size: 6, num_boxes: 1}

    def __post_init__(self) -> None:
        _check_num_samples(self.num_samples)
        if not self.dataset:
            raise ValueError(f"dataset must be a built-in task {tasks.task_names()} or a path to a .jsonl / .parquet file or save_to_disk folder, got ''")


@dataclass
class DataSourceOverrides:
    """Per-split overrides of ``data.default``; every ``None`` inherits."""

    dataset: str | None = None
    split: str | None = None
    problem_key: str | None = None
    answer_key: str | None = None
    response_key: str | None = None
    prompt_file: str | None = None
    system_prompt_file: str | None = None
    num_samples: int | None = None
    task_args: dict[str, Any] | None = None  # merged knob by knob over data.default.task_args

    def __post_init__(self) -> None:
        _check_num_samples(self.num_samples)


@dataclass
class DataConfig:
    max_input_seq_length: int = 256  # prompts longer than this (tokens) get sample mask 0 and are counted
    shuffle: bool = True  # reshuffle the training prompts every epoch
    seed: int = 42  # seed of the built-in task's generator and of the data order
    default: DataSourceConfig = field(default_factory=DataSourceConfig)  # shared by both splits
    train: DataSourceOverrides = field(default_factory=DataSourceOverrides)  # train-only changes to default
    validation: DataSourceOverrides = field(default_factory=DataSourceOverrides)  # validation-only changes
    # a malformed data row (not JSON / not UTF-8, no problem text, a list or number where the text
    # belongs, a whitespace-only problem): stop with an error naming file, line and key, or skip it
    # and count it (logged as data/skipped_rows)
    on_bad_row: Literal["skip", "error"] = "error"

    def __post_init__(self) -> None:
        if self.max_input_seq_length < 1:
            raise ValueError(f"max_input_seq_length must be >= 1 token, got {self.max_input_seq_length}")
        for split, overrides in (("train", self.train), ("validation", self.validation)):
            source = resolve_source(self.default, overrides)
            for knob in source.task_args:  # an unknown knob fails at validation, before any worker starts
                where = split if overrides.task_args and knob in overrides.task_args else "default"
                problem = tasks.task_args_problem(source.dataset, {knob: source.task_args[knob]}, key_path=f"data.{where}.task_args")
                if problem is not None:
                    raise ValueError(" ".join(problem))


def _check_num_samples(num_samples: int | None) -> None:
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples must be >= 1 or null (no cap), got {num_samples}")


def resolve_source(default: DataSourceConfig, overrides: DataSourceOverrides) -> DataSourceConfig:
    """``default`` with every non-None field of ``overrides`` applied."""
    changes = {f.name: getattr(overrides, f.name) for f in fields(overrides) if getattr(overrides, f.name) is not None}
    if overrides.task_args is not None:
        changes["task_args"] = {**default.task_args, **overrides.task_args}
    return replace(default, **changes)


def resolve_repo_path(path: str) -> Path:
    """``path`` relative to the working directory if it exists there, else relative to the repo root.

    The fallback lets configs say ``examples/prompts/cot.txt`` and run from any directory; the repo
    root is the parent of the ``nemo_distill`` package folder.
    """
    candidate = Path(path).expanduser()
    if candidate.exists() or candidate.is_absolute():
        return candidate
    return REPO_ROOT / candidate


class LoadedProblems(list):
    """The :class:`ProblemRecord` list of one file, plus how many malformed rows were skipped."""

    def __init__(self, records: list = (), *, skipped_rows: int = 0):
        super().__init__(records)
        self.skipped_rows = skipped_rows  # rows dropped under data.on_bad_row=skip (log as data/skipped_rows)


class _BadRow(Exception):
    """One malformed row; ``load_problems`` raises it as a DataError or counts it."""


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """``("line N", row or _BadRow)`` for every non-blank line, N 1-based, decoded one line at a time."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"line {number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield where, _BadRow(f"is not valid UTF-8 (byte {err.start} of the line: {raw[err.start:err.start + 1]!r})")
                continue
            if not line.strip():
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as err:
                yield where, _BadRow(f"is not valid JSON: {err}")


def _rows_from_file(path: Path, split: str) -> Iterator[tuple[str, Any]]:
    """``(where, raw row)`` of a JSONL / parquet file or a save_to_disk folder (``split`` picks from a DatasetDict).

    ``where`` is ``"line N"`` for JSONL and ``"row N"`` otherwise (1-based); a row that could not
    even be decoded comes as a :class:`_BadRow`.
    """
    if path.is_dir():
        from datasets import DatasetDict, load_from_disk

        data = load_from_disk(str(path))
        if isinstance(data, DatasetDict):
            if split not in data:
                raise DataError(f"dataset folder {path} has splits {list(data)}, not '{split}' (set data.<split>.split)")
            data = data[split]
        return ((f"row {number}", dict(row)) for number, row in enumerate(data, start=1))
    if path.suffix == ".jsonl":
        return _jsonl_rows(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return ((f"row {number}", row) for number, row in enumerate(pq.read_table(path).to_pylist(), start=1))
    raise DataError(f"dataset {path}: unsupported format (use .jsonl, .parquet, a save_to_disk folder, or 'arithmetic')")


def _problem_and_answer(row: Any, source: DataSourceConfig, split: str) -> tuple[str, str | None]:
    """The problem text and the gold answer of one raw row, or :class:`_BadRow` saying what is wrong."""
    key, answer_key = source.problem_key, source.answer_key
    if isinstance(row, _BadRow):
        raise row
    if not isinstance(row, dict):
        raise _BadRow(f"is a {type(row).__name__}, expected an object with a '{key}' key")
    if key not in row:
        raise _BadRow(f"has no key '{key}' (data.{split}.problem_key / data.default.problem_key); the row has keys {sorted(row)}")
    problem = row[key]
    if problem is None or problem == "":
        raise _BadRow(f"has an empty '{key}'")
    if not isinstance(problem, str):  # str() would turn ['a', 'b'] or 3 into a prompt
        raise _BadRow(f"has a {type(problem).__name__} under '{key}' ({problem!r:.60}), expected text")
    if not problem.strip():
        raise _BadRow(f"has only whitespace under '{key}'")
    answer = row.get(answer_key)
    if answer is not None and (isinstance(answer, bool) or not isinstance(answer, (str, int, float))):
        raise _BadRow(f"has a {type(answer).__name__} under '{answer_key}' ({answer!r:.60}), expected text or a number")
    return problem, None if answer is None else str(answer)


def load_problems(
    source: DataSourceConfig, *, split: str, seed: int, on_bad_row: Literal["skip", "error"] = "error"
) -> list[ProblemRecord]:
    """The problems of one split (``"train"`` or ``"validation"``), at most ``source.num_samples``.

    ``seed`` drives the built-in generator only; files keep their row order (the dataloader
    shuffles). A file gives a :class:`LoadedProblems` (a list) whose ``skipped_rows`` counts the
    malformed rows skipped under ``on_bad_row="skip"``; with ``"error"`` the first one raises a
    :class:`DataError` naming the file, the 1-based line (JSONL) or row, and the key. A file with
    no usable row is a :class:`DataError` naming it.
    """
    if tasks.is_task(source.dataset):
        count = source.num_samples or DEFAULT_NUM_SAMPLES.get(split, 64)
        return tasks.generate_task(source.dataset, count, split=source.split or split, seed=seed,
                                   task_args=source.task_args, key_path=f"data.{split}.task_args")
    path = resolve_repo_path(source.dataset)
    if not path.exists():
        raise FileNotFoundError(
            f"data.{split}.dataset (or data.default.dataset) is '{source.dataset}', which does not exist "
            f"(looked in {Path.cwd()} and {REPO_ROOT}); use a built-in task {tasks.task_names()} or a .jsonl / .parquet file "
            "or a save_to_disk folder"
        )
    records = LoadedProblems()
    seen = 0
    for number, (where, row) in enumerate(_rows_from_file(path, source.split or split), start=1):
        seen = number
        try:
            problem, answer = _problem_and_answer(row, source, split)
        except _BadRow as bad:
            if on_bad_row == "error":
                raise DataError(f"{path}: {where} {bad} (set data.on_bad_row=skip to skip such rows)") from None
            log.warning("%s: %s %s; skipped (data.on_bad_row=skip)", path, where, bad)
            records.skipped_rows += 1
            continue
        metadata = {}
        if source.response_key is not None:
            response = row.get(source.response_key) if isinstance(row, dict) else None
            if not isinstance(response, str) or not response.strip():
                bad = _BadRow(f"has no text under '{source.response_key}' (data.{split}.response_key), which SFT trains on")
                if on_bad_row == "error":
                    raise DataError(f"{path}: {where} {bad} (set data.on_bad_row=skip to skip such rows)") from None
                log.warning("%s: %s %s; skipped (data.on_bad_row=skip)", path, where, bad)
                records.skipped_rows += 1
                continue
            metadata["response"] = response
        records.append(ProblemRecord(problem=problem, answer=answer, record_id=f"{path.stem}-{split}-{number}", metadata=metadata))
        if source.num_samples is not None and len(records) >= source.num_samples:
            break
    if not records:
        detail = "has no rows" if seen == 0 else f"has no usable rows (all {seen} skipped as malformed)"
        raise DataError(f"{path} (data.{split}.dataset) {detail}")
    return records
