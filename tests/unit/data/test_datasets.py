"""Dataset configs, split overrides and loading from every supported source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_distill.config.errors import DataError, UserError
from nemo_distill.data.datasets import (
    REPO_ROOT,
    DataConfig,
    DataSourceConfig,
    DataSourceOverrides,
    LoadedProblems,
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
    assert str(path) in message and "line 2" in message and "'problem'" in message and "['answer', 'question']" in message


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
    with pytest.raises(ValueError, match="line 1 has an empty 'problem'"):
        load_problems(DataSourceConfig(dataset=str(path)), split="train", seed=0)


def test_resolve_repo_path_prefers_cwd_then_repo_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_repo_path("examples/prompts/cot.txt") == REPO_ROOT / "examples/prompts/cot.txt"
    assert (REPO_ROOT / "nemo_distill").is_dir()
    local = tmp_path / "examples/prompts"
    local.mkdir(parents=True)
    (local / "cot.txt").write_text("mine {}")
    assert resolve_repo_path("examples/prompts/cot.txt").resolve() == (local / "cot.txt").resolve()


# -- malformed rows: named (file, 1-based line or row, key) or skipped and counted ---------------

BAD_ROWS = [
    ({"problem": ["a", "b"]}, r"line 2 has a list under 'problem' \(\['a', 'b'\]\), expected text"),
    ({"problem": 3}, r"line 2 has a int under 'problem' \(3\), expected text"),
    ({"problem": {"text": "x"}}, r"line 2 has a dict under 'problem'"),
    ({"problem": " \n\t "}, r"line 2 has only whitespace under 'problem'"),
    ({"problem": None}, r"line 2 has an empty 'problem'"),
    ({"problem": "q", "answer": [1, 2]}, r"line 2 has a list under 'answer'"),
    ({"question": "q"}, r"line 2 has no key 'problem'"),
    (["problem", "q"], r"line 2 is a list, expected an object"),
]


@pytest.mark.parametrize("bad, message", BAD_ROWS)
def test_malformed_row_is_an_error_naming_file_line_and_key(tmp_path, bad, message):
    path = _write_jsonl(tmp_path / "rows.jsonl", [{"problem": "fine"}, bad, {"problem": "also fine"}])
    with pytest.raises(DataError, match=message) as err:
        load_problems(DataSourceConfig(dataset=str(path)), split="train", seed=0)
    assert str(err.value).startswith(f"{path}: line 2 ") and "data.on_bad_row=skip" in str(err.value)
    assert isinstance(err.value, UserError)


@pytest.mark.parametrize("bad, message", BAD_ROWS)
def test_malformed_row_is_skipped_and_counted_with_skip(tmp_path, caplog, bad, message):
    path = _write_jsonl(tmp_path / "rows.jsonl", [{"problem": "fine"}, bad, {"problem": "also fine"}])
    records = load_problems(DataSourceConfig(dataset=str(path)), split="train", seed=0, on_bad_row="skip")
    assert isinstance(records, LoadedProblems) and records.skipped_rows == 1
    assert records == [ProblemRecord("fine", None, "rows-train-1"), ProblemRecord("also fine", None, "rows-train-3")]
    assert "line 2" in caplog.text and "skipped" in caplog.text


def test_invalid_utf8_names_file_and_line_and_can_be_skipped(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"problem": "ok"}\n{"problem": "caf\xe9"}\n{"problem": "ok too"}\n')
    with pytest.raises(DataError, match=rf"{path}: line 2 is not valid UTF-8 \(byte 16 of the line: b'\\xe9'\)"):
        load_problems(DataSourceConfig(dataset=str(path)), split="train", seed=0)
    records = load_problems(DataSourceConfig(dataset=str(path)), split="train", seed=0, on_bad_row="skip")
    assert [r.problem for r in records] == ["ok", "ok too"] and records.skipped_rows == 1


def test_invalid_json_line_is_skipped_and_counted_with_skip(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"problem": "a"}\n{not json\n\n{"problem": "b"}\n')
    records = load_problems(DataSourceConfig(dataset=str(path)), split="train", seed=0, on_bad_row="skip")
    assert [r.problem for r in records] == ["a", "b"] and records.skipped_rows == 1


def test_parquet_rows_are_checked_too(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"problem": ["fine", "   "]}), path)
    with pytest.raises(DataError, match=rf"{path}: row 2 has only whitespace under 'problem'"):
        load_problems(DataSourceConfig(dataset=str(path)), split="train", seed=0)


@pytest.mark.parametrize("content, detail", [("", "has no rows"), ("\n\n", "has no rows"),
                                             ('{"problem": 1}\n', r"has no usable rows \(all 1 skipped as malformed\)")])
def test_empty_file_is_named(tmp_path, content, detail):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=rf"{path} \(data.validation.dataset\) {detail}"):
        load_problems(DataSourceConfig(dataset=str(path)), split="validation", seed=0, on_bad_row="skip")


def test_on_bad_row_defaults_to_error_and_is_validated():
    from nemo_distill.config import ConfigError, build_dataclass

    assert DataConfig().on_bad_row == "error"
    assert build_dataclass(DataConfig, {"on_bad_row": "skip"}, "data").on_bad_row == "skip"
    with pytest.raises(ConfigError, match=r"data.on_bad_row.*choose one of \['skip', 'error'\]"):
        build_dataclass(DataConfig, {"on_bad_row": "ignore"}, "data")
