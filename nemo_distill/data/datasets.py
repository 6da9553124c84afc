"""Problem datasets: local JSONL / parquet, HF ``save_to_disk`` folders, or a built-in task.

Config (``data:``): ``default`` names the source and prompt files; ``train`` / ``validation``
override any of its keys (``null`` inherits), matching the runbook's ``data.default.prompt_file``,
``data.train.prompt_file``, ``data.validation.prompt_file``, ``data.default.system_prompt_file``.
A ``dataset`` that names a built-in task (``data/tasks.py``: arithmetic, sokoban) generates its
problems, with knobs from ``task_args``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from nemo_distill.data import tasks
from nemo_distill.data.records import ProblemRecord

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_NUM_SAMPLES = {"train": 512, "validation": 64}


@dataclass
class DataSourceConfig:
    dataset: str = "arithmetic"  # a built-in task (data/tasks.py: arithmetic, sokoban), or a .jsonl / .parquet file or a save_to_disk folder
    split: str | None = None  # split of a DatasetDict on disk (None: the split being loaded)
    problem_key: str = "problem"  # column holding the problem text
    answer_key: str = "answer"  # column holding the gold answer
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


def _rows_from_file(path: Path, split: str) -> list[dict]:
    """Raw rows of a JSONL / parquet file or a save_to_disk folder (``split`` picks from a DatasetDict)."""
    if path.is_dir():
        from datasets import DatasetDict, load_from_disk

        data = load_from_disk(str(path))
        if isinstance(data, DatasetDict):
            if split not in data:
                raise ValueError(f"dataset folder {path} has splits {list(data)}, not '{split}' (set data.<split>.split)")
            data = data[split]
        return [dict(row) for row in data]
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}: line {number} is not valid JSON: {err}") from err
        return rows
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise ValueError(f"dataset {path}: unsupported format (use .jsonl, .parquet, a save_to_disk folder, or 'arithmetic')")


def load_problems(source: DataSourceConfig, *, split: str, seed: int) -> list[ProblemRecord]:
    """The problems of one split (``"train"`` or ``"validation"``), at most ``source.num_samples``.

    ``seed`` drives the built-in generator only; files keep their row order (the dataloader
    shuffles). Errors name the file, the 1-based row and the missing key.
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
    records = []
    for number, row in enumerate(_rows_from_file(path, source.split or split), start=1):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: row {number} is a {type(row).__name__}, expected an object with a '{source.problem_key}' key")
        if source.problem_key not in row:
            raise ValueError(
                f"{path}: row {number} has no key '{source.problem_key}' (data.{split}.problem_key / "
                f"data.default.problem_key); the row has keys {sorted(row)}"
            )
        if row[source.problem_key] in (None, ""):
            raise ValueError(f"{path}: row {number} has an empty '{source.problem_key}'")
        answer = row.get(source.answer_key)
        records.append(ProblemRecord(problem=str(row[source.problem_key]), answer=None if answer is None else str(answer),
                                     record_id=f"{path.stem}-{split}-{number}"))
        if source.num_samples is not None and len(records) >= source.num_samples:
            break
    return records
