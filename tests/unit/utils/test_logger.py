"""Experiment dirs, metrics.jsonl, the stdout line, TensorBoard, sample dumps, W&B errors."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from nemo_distill.utils.logger import (
    Logger,
    LoggerConfig,
    drop_metrics_from_step,
    format_step_line,
    read_metrics,
    resolve_experiment_dir,
)


def _quiet(**overrides) -> LoggerConfig:
    return LoggerConfig(**{"stdout_enabled": False, "tensorboard_enabled": False, **overrides})


def test_config_defaults_and_check():
    cfg = LoggerConfig()
    assert (cfg.log_dir, cfg.wandb_enabled, cfg.tensorboard_enabled, cfg.stdout_enabled) == ("logs", False, True, True)
    assert (cfg.wandb.project, cfg.wandb.name, cfg.num_val_samples_to_print, cfg.exp_numbering) == ("nemo-distill", None, 0, True)
    assert cfg.plot_metrics == ["train/loss"] and cfg.plot_metrics is not LoggerConfig().plot_metrics
    with pytest.raises(ValueError, match="num_val_samples_to_print must be >= 0"):
        LoggerConfig(num_val_samples_to_print=-1)


def test_experiment_dirs_are_numbered_after_the_highest(tmp_path):
    root = tmp_path / "logs"
    assert resolve_experiment_dir(str(root), True) == root / "exp_001"
    assert resolve_experiment_dir(str(root), True) == root / "exp_002"
    (root / "exp_017").mkdir()
    (root / "exp_notanumber").mkdir()
    (root / "other").mkdir()
    assert resolve_experiment_dir(str(root), True) == root / "exp_018"
    assert (root / "exp_018").is_dir()
    assert resolve_experiment_dir(str(root / "plain"), False) == root / "plain"
    assert (root / "plain").is_dir()


def test_metrics_jsonl_is_appended_and_flushed_per_step(tmp_path):
    logger = Logger(_quiet(), tmp_path)
    logger.log_metrics({"train/loss": 0.5, "train/count": 3}, step=1)
    # Readable before close: each step is flushed.
    assert read_metrics(tmp_path) == [{"step": 1, "train/loss": 0.5, "train/count": 3.0}]
    logger.log_metrics({"train/loss": 0.25}, step=2)
    logger.close()
    logger.close()  # idempotent
    # A second logger on the same dir (a resume) appends, never rewrites.
    again = Logger(_quiet(), tmp_path)
    again.log_metrics({"train/loss": 0.125}, step=3)
    again.close()
    assert [row["train/loss"] for row in read_metrics(tmp_path)] == [0.5, 0.25, 0.125]
    assert [row["step"] for row in read_metrics(tmp_path)] == [1, 2, 3]


def test_numeric_types_are_converted_and_non_numbers_skipped(tmp_path):
    logger = Logger(_quiet(), tmp_path)
    logger.log_metrics(
        {
            "a/np": np.float32(1.5),
            "a/np_int": np.int64(4),
            "a/tensor": torch.tensor(2.5),
            "a/bool": True,
            "a/text": "hello",
            "a/vector": torch.tensor([1.0, 2.0]),
            "a/none": None,
        },
        step=7,
    )
    logger.close()
    assert read_metrics(tmp_path) == [{"step": 7, "a/np": 1.5, "a/np_int": 4.0, "a/tensor": 2.5}]


def test_torn_last_line_from_a_crash_is_recovered(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "train/loss": 1.0}\n{"step": 2, "train/lo')
    assert read_metrics(tmp_path) == [{"step": 1, "train/loss": 1.0}]
    logger = Logger(_quiet(), tmp_path)
    logger.log_metrics({"train/loss": 0.5}, step=2)
    logger.close()
    assert read_metrics(tmp_path) == [{"step": 1, "train/loss": 1.0}, {"step": 2, "train/loss": 0.5}]


def test_step_line_puts_headline_metrics_first():
    line = format_step_line(
        3,
        {"z/other": 2.0, "timing/train/total_step_time": 4.2, "train/reward_mean": 0.25, "train/loss": 0.41234, "a/tiny": 1e-5},
    )
    assert line == "step 3 | train/loss 0.4123 | train/reward_mean 0.2500 | timing/train/total_step_time 4.20s | a/tiny 1.000e-05 | z/other 2.0000"


def test_stdout_line_is_printed(tmp_path, capsys):
    logger = Logger(_quiet(stdout_enabled=True), tmp_path)
    logger.log_metrics({"train/loss": 1.0}, step=5)
    logger.close()
    assert capsys.readouterr().out == "step 5 | train/loss 1.0000\n"


def test_tensorboard_scalars_are_written(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = Logger(_quiet(tensorboard_enabled=True), tmp_path)
    assert not (tmp_path / "tensorboard").exists()  # created lazily
    logger.log_metrics({"train/loss": 0.75}, step=1)
    logger.log_metrics({"train/loss": 0.5}, step=2)
    logger.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 0.75), (2, 0.5)]


def test_log_samples_writes_jsonl_rows(tmp_path):
    logger = Logger(_quiet(), tmp_path)
    path = logger.log_samples([{"prompt": "p", "reward": 1.0, "path": tmp_path}, {"prompt": "q", "reward": 0.0}], "val_data_step4.jsonl")
    logger.close()
    assert path == tmp_path / "val_data_step4.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [{"prompt": "p", "reward": 1.0, "path": str(tmp_path)}, {"prompt": "q", "reward": 0.0}]
    assert not list(tmp_path.glob("*.partial"))


def test_wandb_missing_names_the_key_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` fail even if installed
    with pytest.raises(ImportError) as err:
        Logger(_quiet(wandb_enabled=True), tmp_path)
    assert "logger.wandb_enabled" in str(err.value) and "pip install 'nemo-distill[wandb]'" in str(err.value)


def test_wandb_goes_offline_without_an_api_key(tmp_path, monkeypatch):
    calls = []

    class FakeRun:
        def log(self, metrics, step):
            calls.append(("log", metrics, step))

        def finish(self):
            calls.append(("finish",))

    class FakeWandb:
        @staticmethod
        def init(**kwargs):
            calls.append(("init", kwargs))
            return FakeRun()

    monkeypatch.setitem(sys.modules, "wandb", FakeWandb)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    logger = Logger(_quiet(wandb_enabled=True), tmp_path)
    logger.log_metrics({"train/loss": 0.5}, step=2)
    logger.close()
    assert calls[0] == ("init", {"project": "nemo-distill", "name": None, "dir": str(tmp_path), "mode": "offline"})
    assert calls[1:] == [("log", {"train/loss": 0.5}, 2), ("finish",)]
    monkeypatch.setenv("WANDB_API_KEY", "dummy")
    Logger(_quiet(wandb_enabled=True), tmp_path / "online").close()
    assert calls[-2][1]["mode"] == "online"


def test_resume_drops_rows_of_steps_that_will_be_logged_again(tmp_path):
    # A run logged steps 1..4, was killed with -9 mid-line in step 5, and resumes from its step-2 checkpoint.
    logger = Logger(_quiet(), tmp_path)
    for step in range(1, 5):
        logger.log_metrics({"train/loss": float(step)}, step=step)
    logger.close()
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 5, "train/lo')
    resumed = Logger(_quiet(), tmp_path, resume_from_step=3)
    assert [row["step"] for row in read_metrics(tmp_path)] == [1, 2]
    for step in (3, 4):
        resumed.log_metrics({"train/loss": 10.0 * step}, step=step)
    resumed.close()
    rows = read_metrics(tmp_path)
    assert [(row["step"], row["train/loss"]) for row in rows] == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
    assert not (tmp_path / "metrics.jsonl.partial").exists()


def test_drop_metrics_from_step_counts_what_it_dropped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\nnot json\n{"step": 3}\n\n{"step": 2}\n')
    assert drop_metrics_from_step(path, 2) == 4
    assert path.read_text() == '{"step": 1}\n'
    assert drop_metrics_from_step(path, 1) == 1 and path.read_text() == ""


def test_resume_without_a_metrics_file_starts_one(tmp_path):
    logger = Logger(_quiet(), tmp_path, resume_from_step=7)
    logger.log_metrics({"train/loss": 1.0}, step=7)
    logger.close()
    assert read_metrics(tmp_path) == [{"step": 7, "train/loss": 1.0}]


def test_format_validation_samples_shows_the_first_n_rows():
    # logger.num_val_samples_to_print acts through this (issue 11 item 5: the key was never read).
    from nemo_distill.utils.logger import format_validation_samples

    rows = [{"problem": f"p{i}", "answer": str(i), "response": f"r{i}", "reward": float(i % 2)} for i in range(3)]
    text = format_validation_samples(rows, 2)
    assert text.splitlines()[0] == "=== validation samples: first 2 of 3 ==="
    assert "--- sample 0 | reward 0.0 | gold answer: 0 ---\n[problem]\np0\n[response]\nr0" in text
    assert "p1" in text and "r1" in text and "reward 1.0" in text and "p2" not in text
    assert format_validation_samples(rows, 10).count("--- sample") == 3
    assert format_validation_samples(rows, 0) == "" and format_validation_samples([], 5) == ""
    assert "gold answer" not in format_validation_samples([{"problem": "p", "answer": None, "response": "r", "reward": 0.0}], 1)
    with pytest.raises(ValueError, match="num_val_samples_to_print"):
        format_validation_samples(rows, -1)


def test_non_finite_values_are_written_as_null_so_metrics_jsonl_stays_strict_json(tmp_path):
    logger = Logger(_quiet(), tmp_path)
    logger.log_metrics({"train/loss": float("nan"), "train/grad_norm": float("inf"), "a/neg": -np.inf,
                        "a/tensor": torch.tensor(float("nan")), "train/lr": 1e-3}, step=1)
    logger.close()
    text = (tmp_path / "metrics.jsonl").read_text()
    for token in ("NaN", "Infinity"):
        assert token not in text
    strict = json.loads(text, parse_constant=lambda token: pytest.fail(f"non-JSON token {token}"))
    assert strict == {"step": 1, "train/loss": None, "train/grad_norm": None, "a/neg": None, "a/tensor": None, "train/lr": 1e-3}


def test_a_null_metric_is_a_gap_in_the_curves(tmp_path):
    from nemo_distill.utils.plot import plot_metric_curves

    logger = Logger(_quiet(), tmp_path)
    for step, loss in enumerate([1.0, float("nan"), 0.5], start=1):
        logger.log_metrics({"train/loss": loss}, step=step)
    logger.close()
    assert plot_metric_curves(tmp_path / "metrics.jsonl", ["train/loss"], tmp_path / "curves.png").is_file()
