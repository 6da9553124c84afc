"""Noisy-student splits: sizes, disjointness, determinism, errors; GSM8K gold answers."""

from __future__ import annotations

import json

import pytest

from nemo_distill.config import ConfigError
from nemo_distill.data.datasets import ProblemRecord
from nemo_distill.data.splits import SplitConfig, gsm8k_gold_answer, gsm8k_records, hide_labels, split_problems


def _records(n: int, prefix: str = "p") -> list[ProblemRecord]:
    return [ProblemRecord(problem=f"problem {i}", answer=str(i), record_id=f"{prefix}-{i}") for i in range(n)]


def _ids(records: list[ProblemRecord]) -> list[str]:
    return [r.record_id for r in records]


def test_defaults_are_the_seed_sizes():
    config = SplitConfig()
    assert (config.num_labelled, config.num_unlabelled, config.num_test, config.seed) == (1000, 4000, 500, 42)


def test_split_sizes_disjoint_and_deterministic():
    records = _records(60)
    config = SplitConfig(num_labelled=10, num_unlabelled=30, num_test=15, seed=3)
    splits = split_problems(records, config)
    assert splits.sizes() == {"labelled": 10, "unlabelled": 30, "test": 15}
    all_ids = _ids(splits.labelled) + _ids(splits.unlabelled) + _ids(splits.test)
    assert len(set(all_ids)) == len(all_ids) == 55  # disjoint
    again = split_problems(records, config)
    assert (_ids(again.labelled), _ids(again.unlabelled), _ids(again.test)) == (_ids(splits.labelled), _ids(splits.unlabelled), _ids(splits.test))
    other_seed = split_problems(records, SplitConfig(num_labelled=10, num_unlabelled=30, num_test=15, seed=4))
    assert _ids(other_seed.labelled) != _ids(splits.labelled)
    # The draw is a shuffle, not the file order.
    assert _ids(splits.labelled) != _ids(records[:10])


def test_growing_a_split_keeps_the_smaller_ones_prefix():
    # One permutation cut into consecutive blocks: more unlabelled problems never change the labelled set.
    records = _records(100)
    small = split_problems(records, SplitConfig(num_labelled=10, num_unlabelled=20, num_test=5))
    large = split_problems(records, SplitConfig(num_labelled=10, num_unlabelled=60, num_test=5))
    assert _ids(small.labelled) == _ids(large.labelled)
    assert _ids(large.unlabelled)[:20] == _ids(small.unlabelled)


def test_separate_test_records():
    train, test = _records(40, "train"), _records(25, "test")
    splits = split_problems(train, SplitConfig(num_labelled=5, num_unlabelled=35, num_test=10), test_records=test)
    assert len(splits.test) == 10 and all(r.record_id.startswith("test-") for r in splits.test)
    assert len(set(_ids(splits.labelled + splits.unlabelled))) == 40
    with pytest.raises(ConfigError, match="splits.num_test"):
        split_problems(train, SplitConfig(num_labelled=5, num_unlabelled=5, num_test=26), test_records=test)
    with pytest.raises(ValueError, match="share 1 record_id"):
        split_problems(train, SplitConfig(num_labelled=5, num_unlabelled=5, num_test=2), test_records=test + [train[39]])


def test_split_errors_name_the_sizes():
    with pytest.raises(ConfigError, match=r"num_labelled=10 \+ num_unlabelled=30 \+ num_test=15 = 55 problems, but the dataset has only 50"):
        split_problems(_records(50), SplitConfig(num_labelled=10, num_unlabelled=30, num_test=15))
    with pytest.raises(ConfigError, match="splits.num_test"):
        SplitConfig(num_test=-1)
    with pytest.raises(ValueError, match=r"records\[3\] repeats record_id 'p-0'"):
        split_problems(_records(3) + _records(1), SplitConfig(num_labelled=1, num_unlabelled=1, num_test=1))


def test_hide_labels_copies():
    records = _records(3)
    hidden = hide_labels(records)
    assert [r.answer for r in hidden] == [None, None, None]
    assert [r.answer for r in records] == ["0", "1", "2"]  # originals untouched
    assert _ids(hidden) == _ids(records)


@pytest.mark.parametrize(
    "answer,gold",
    [
        ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether.\n#### 72", "72"),
        ("... = 1,000\n#### 1,000", "1000"),
        ("She lost 5 - 8 = -3\n#### -3", "-3"),
        ("#### 0.5", "0.5"),
    ],
)
def test_gsm8k_gold_answer(answer, gold):
    assert gsm8k_gold_answer(answer) == gold


def test_gsm8k_gold_answer_errors():
    with pytest.raises(ValueError, match="no '####'"):
        gsm8k_gold_answer("The answer is 5")
    with pytest.raises(ValueError, match="empty"):
        gsm8k_gold_answer("work\n#### ")


def test_gsm8k_records_from_a_jsonl_file(tmp_path):
    rows = [{"question": "Q1?", "answer": "2 + 2 = 4\n#### 4"}, {"question": "Q2?", "answer": "#### 1,200"}]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    loaded = [json.loads(line) for line in path.read_text().splitlines()]
    records = gsm8k_records(loaded)
    assert [(r.problem, r.answer, r.record_id) for r in records] == [("Q1?", "2 + 2 = 4\n#### 4", "gsm8k-train-0"), ("Q2?", "#### 1,200", "gsm8k-train-1")]
    numbers = gsm8k_records(loaded, split="test", keep_solution=False)
    assert [(r.answer, r.record_id) for r in numbers] == [("4", "gsm8k-test-0"), ("1200", "gsm8k-test-1")]
    with pytest.raises(ValueError, match=r"GSM8K row 1 has no \['answer'\]"):
        gsm8k_records([rows[0], {"question": "Q"}])
