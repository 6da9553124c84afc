import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from check_metrics import check, load_metrics  # noqa: E402


@pytest.fixture
def metrics_file(tmp_path):
    rows = [{"step": 1, "train/loss": 3.0, "x": 1}, {"step": 2, "train/loss": 2.0}, {"step": 3, "train/loss": 1.0, "x": 5}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_load(metrics_file):
    assert load_metrics(metrics_file)["x"] == {1: 1.0, 3: 5.0}


def test_expressions_pass_and_fail(metrics_file):
    assert check(metrics_file, ["last('train/loss') < first('train/loss')", "mean('train/loss') == 2", "max('x') == 5"]) == []
    failures = check(metrics_file, ["min('train/loss', 1, 2) < 2", "value('x', 3) == 1"])
    assert len(failures) == 2 and all("false" in f for f in failures)


def test_missing_metric_is_failure_naming_it(metrics_file):
    [failure] = check(metrics_file, ["last('nope') > 0"])
    assert "nope" in failure and "never logged" in failure


def test_no_builtins(metrics_file):
    [failure] = check(metrics_file, ["__import__('os') is None"])
    assert "error" in failure



def test_a_null_value_is_nan_and_fails_bounds(tmp_path):
    # Logger.log_metrics writes a non-finite value as null: the step must not vanish from the checks
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "train/loss": 0.5}\n{"step": 2, "train/loss": null}\n')
    loss = load_metrics(path)["train/loss"]
    assert loss[1] == 0.5 and loss[2] != loss[2]  # NaN
    assert len(check(path, ["last('train/loss') < 5", "value('train/loss', 2) > -1"])) == 2
