"""Dataset configs, split overrides and loading from every supported source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_distill.data.datasets import (
    REPO_ROOT,
    DataConfig,
    DataSourceConfig,
    DataSourceOverrides,
    ProblemRecord,
    load_problems,
    resolve_repo_path,
    resolve_source,
)


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


ROWS = [
    {"problem": "What is 2+2?", "answer": 4, "extra": "x"},
    {"problem": "What is 3*3?", "answer": "9"},
    {"problem": "Unlabelled question"},
]
EXPECTED = [
    ProblemRecord("What is 2+2?", "4", "rows-train-1"),
    ProblemRecord("What is 3*3?", "9", "rows-train-2"),
    ProblemRecord("Unlabelled question", None, "rows-train-3"),
]


def test_resolve_source_inherits_none_and_applies_overrides():
    default = DataSourceConfig(dataset="a.jsonl", prompt_file="examples/prompts/cot.txt", system_prompt_file="sys.txt")
    train = resolve_source(default, DataSourceOverrides(prompt_file="examples/prompts/math.txt", num_samples=10))
    assert train == DataSourceConfig(
        dataset="a.jsonl", prompt_file="examples/prompts/math.txt", system_prompt_file="sys.txt", num_samples=10
    )
    assert resolve_source(default, DataSourceOverrides()) == default
    assert default.prompt_file == "examples/prompts/cot.txt"  # the default itself is not mutated


def test_data_config_defaults_live_in_the_dataclass():
    cfg = DataConfig()
    assert (cfg.max_input_seq_length, cfg.shuffle, cfg.seed) == (256, True, 42)
    assert cfg.default.dataset == "arithmetic"
    assert cfg.train == DataSourceOverrides() and cfg.validation == DataSourceOverrides()
    assert cfg.train is not cfg.validation  # no shared mutable default


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: DataConfig(max_input_seq_length=0), "max_input_seq_length must be >= 1"),
        (lambda: DataSourceConfig(num_samples=0), "num_samples must be >= 1"),
        (lambda: DataSourceOverrides(num_samples=-3), "num_samples must be >= 1"),
        (lambda: DataSourceConfig(dataset=""), "dataset must be"),
    ],
)
def test_config_checks_name_the_field(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_jsonl(tmp_path):
    path = _write_jsonl(tmp_path / "rows.jsonl", ROWS)
    assert load_problems(DataSourceConfig(dataset=str(path)), split="train", seed=0) == EXPECTED


def test_jsonl_blank_lines_and_num_samples_cap(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n" + json.dumps(ROWS[2]) + "\n")
    records = load_problems(DataSourceConfig(dataset=str(path), num_samples=2), split="train", seed=0)
    assert records == EXPECTED[:2]


def test_custom_keys(tmp_path):
    path = _write_jsonl(tmp_path / "rows.jsonl", [{"question": "Q1", "solution": "7"}])
    source = DataSourceConfig(dataset=str(path), problem_key="question", answer_key="solution")
    assert load_problems(source, split="validation", seed=0) == [ProblemRecord("Q1", "7", "rows-validation-1")]


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    # Parquet columns are typed: an integer answer column (with a null) must still reach the
    # record as text, and the null as None.
    table = pa.table({"problem": [r["problem"] for r in ROWS], "answer": pa.array([4, 9, None], type=pa.int64())})
    pq.write_table(table, path)
    records = load_problems(DataSourceConfig(dataset=str(path)), split="train", seed=0)
    assert records == [
        ProblemRecord("What is 2+2?", "4", "rows-train-1"),
        ProblemRecord("What is 3*3?", "9", "rows-train-2"),
        ProblemRecord("Unlabelled question", None, "rows-train-3"),
    ]


def test_save_to_disk_dataset_dict_picks_the_split(tmp_path):
    from datasets import Dataset, DatasetDict

    folder = tmp_path / "hf"
    DatasetDict(
        {"train": Dataset.from_list([{"problem": "T1", "answer": "1"}]), "test": Dataset.from_list([{"problem": "E1", "answer": "2"}])}
    ).save_to_disk(str(folder))
    assert load_problems(DataSourceConfig(dataset=str(folder)), split="train", seed=0) == [ProblemRecord("T1", "1", "hf-train-1")]
    # data.validation.split maps our "validation" onto the folder's "test" split.
    source = DataSourceConfig(dataset=str(folder), split="test")
    assert [r.problem for r in load_problems(source, split="validation", seed=0)] == ["E1"]
    with pytest.raises(ValueError, match=r"has splits \['train', 'test'\], not 'validation'"):
        load_problems(DataSourceConfig(dataset=str(folder)), split="validation", seed=0)


def test_save_to_disk_single_dataset(tmp_path):
    from datasets import Dataset

    folder = tmp_path / "single"
    Dataset.from_list([{"problem": "P", "answer": None}]).save_to_disk(str(folder))
    assert load_problems(DataSourceConfig(dataset=str(folder)), split="train", seed=0) == [ProblemRecord("P", None, "single-train-1")]


def test_builtin_arithmetic_uses_split_defaults_and_seed():
    train = load_problems(DataSourceConfig(), split="train", seed=42)
    validation = load_problems(DataSourceConfig(), split="validation", seed=42)
    assert (len(train), len(validation)) == (512, 64)
    assert not {r.problem for r in train} & {r.problem for r in validation}
    assert load_problems(DataSourceConfig(num_samples=5), split="train", seed=42) == train[:5]
    assert load_problems(DataSourceConfig(num_samples=5), split="train", seed=43) != train[:5]


def test_missing_file_names_path_and_config_key(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError) as err:
        load_problems(DataSourceConfig(dataset=str(missing)), split="validation", seed=0)
    assert str(missing) in str(err.value) and "data.validation.dataset" in str(err.value)


def test_row_without_problem_key_names_file_row_key_and_row_keys(tmp_path):
    path = _write_jsonl(tmp_path / "bad.jsonl", [{"problem": "ok"}, {"question": "q", "answer": "1"}])
    with pytest.raises(ValueError) as err:
        load_problems(DataSourceConfig(dataset=str(path)), split="train", seed=0)
    message = str(err.value)
    assert str(path) in message and "row 2" in message and "'problem'" in message and "['answer', 'question']" in message


def test_invalid_json_and_unsupported_format(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"problem": "a"}\n{not json\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        load_problems(DataSourceConfig(dataset=str(path)), split="train", seed=0)
    csv = tmp_path / "rows.csv"
    csv.write_text("problem\nx\n")
    with pytest.raises(ValueError, match="unsupported format"):
        load_problems(DataSourceConfig(dataset=str(csv)), split="train", seed=0)


def test_empty_problem_is_rejected(tmp_path):
    path = _write_jsonl(tmp_path / "empty.jsonl", [{"problem": ""}])
    with pytest.raises(ValueError, match="row 1 has an empty 'problem'"):
        load_problems(DataSourceConfig(dataset=str(path)), split="train", seed=0)


def test_resolve_repo_path_prefers_cwd_then_repo_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_repo_path("examples/prompts/cot.txt") == REPO_ROOT / "examples/prompts/cot.txt"
    assert (REPO_ROOT / "nemo_distill").is_dir()
    local = tmp_path / "examples/prompts"
    local.mkdir(parents=True)
    (local / "cot.txt").write_text("mine {}")
    assert resolve_repo_path("examples/prompts/cot.txt").resolve() == (local / "cot.txt").resolve()
