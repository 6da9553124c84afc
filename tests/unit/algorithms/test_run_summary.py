"""The end-of-run summary: first and last logged value of each labelled metric, metrics logged on only
some steps, metrics never logged, the JSON file, and the printed table."""

from __future__ import annotations

import json
import math

from nemo_distill.algorithms.run_summary import format_summary_table, write_summary

LABELS = {"train/loss": "loss", "validation/accuracy": "val accuracy", "train/never": "never logged"}


def test_summary_takes_each_metrics_first_and_last_logged_step(tmp_path):
    history = [{"step": 1, "train/loss": 2.0}, {"step": 2, "train/loss": 1.5, "validation/accuracy": 0.25},
               {"step": 3, "train/loss": 1.0}, {"step": 4, "train/loss": 0.5, "validation/accuracy": 0.75}]
    summary = write_summary(history, tmp_path, LABELS, elapsed_s=12.345, title="grpo")
    assert summary["train/loss"] == {"first": 2.0, "last": 0.5, "first_step": 1, "last_step": 4}
    assert summary["validation/accuracy"] == {"first": 0.25, "last": 0.75, "first_step": 2, "last_step": 4}
    assert "train/never" not in summary and summary["steps"] == 4 and summary["wall_time_s"] == 12.3
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    table = format_summary_table({**summary, "curves_png": "/runs/curves.png"}).splitlines()
    assert table[0] == f"== grpo summary: 4 steps in 12.3 s, run dir {tmp_path} =="
    assert table[2].split() == ["loss", "2.0000", "0.5000"]
    assert table[3].split() == ["val", "accuracy", "0.2500", "0.7500"]
    assert not any("never" in line for line in table) and table[-1] == "curves: /runs/curves.png"


def test_empty_history_and_a_missing_value(tmp_path):
    summary = write_summary([], tmp_path, LABELS, elapsed_s=0.0, title="sft")
    assert summary["steps"] == 0 and "train/loss" not in summary
    assert format_summary_table(summary).splitlines()[1:] == [f"{'metric':<36} {'first':>10} {'last':>10}"]
    shown = format_summary_table({**summary, "train/loss": {"first": None, "last": 1.0}})
    assert shown.splitlines()[-1].split() == ["loss", "-", "1.0000"]


def test_a_non_finite_value_is_null_in_the_json_and_shown_in_the_table(tmp_path):
    # a run whose first step was skipped (NaN loss) must still end with its summary
    history = [{"step": 1, "train/loss": math.nan}, {"step": 2, "train/loss": math.inf}]
    summary = write_summary(history, tmp_path, LABELS, elapsed_s=1.0, title="grpo")
    assert json.loads((tmp_path / "summary.json").read_text())["train/loss"] == {
        "first": None, "last": None, "first_step": 1, "last_step": 2}
    assert format_summary_table(summary).splitlines()[-1].split() == ["loss", "nan", "inf"]
