"""PNG curves from metrics.jsonl: what is plotted, what is skipped, when nothing is written."""

from __future__ import annotations

import json
import logging

import pytest

from nemo_distill.utils import plot as plot_module
from nemo_distill.utils.plot import plot_metric_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def captured_axes(monkeypatch):
    """Record what each subplot is asked to draw (title -> (steps, values))."""
    from matplotlib.axes import Axes

    drawn: dict[str, tuple] = {}
    original_plot, original_title = Axes.plot, Axes.set_title

    def plot(self, x, y, *args, **kwargs):
        self._test_series = (list(x), list(y))
        return original_plot(self, x, y, *args, **kwargs)

    def set_title(self, title, *args, **kwargs):
        drawn[title] = self._test_series
        return original_title(self, title, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", plot)
    monkeypatch.setattr(Axes, "set_title", set_title)
    return drawn


def test_one_subplot_per_logged_metric(tmp_path, captured_axes, caplog):
    metrics = _write(
        tmp_path / "metrics.jsonl",
        [
            {"step": 1, "train/loss": 2.0, "train/reward_mean": 0.0},
            {"step": 2, "train/loss": 1.5},
            {"step": 3, "train/loss": 1.0, "train/reward_mean": 0.5, "validation/accuracy": 0.25},
        ],
    )
    out = tmp_path / "plots" / "curves.png"
    with caplog.at_level(logging.WARNING, logger=plot_module.__name__):
        result = plot_metric_curves(metrics, ["train/loss", "train/reward_mean", "validation/accuracy", "never/logged"], out)
    assert result == out
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert captured_axes == {
        "train/loss": ([1, 2, 3], [2.0, 1.5, 1.0]),
        "train/reward_mean": ([1, 3], [0.0, 0.5]),
        "validation/accuracy": ([3], [0.25]),
    }
    assert "never/logged was never logged" in caplog.text


def test_a_step_logged_twice_after_resume_keeps_the_later_value(tmp_path, captured_axes):
    metrics = _write(
        tmp_path / "metrics.jsonl",
        [{"step": 1, "train/loss": 3.0}, {"step": 2, "train/loss": 2.0}, {"step": 2, "train/loss": 2.5}, {"step": 3, "train/loss": 1.0}],
    )
    plot_metric_curves(metrics, ["train/loss"], tmp_path / "c.png")
    assert captured_axes["train/loss"] == ([1, 2, 3], [3.0, 2.5, 1.0])


def test_nothing_to_plot_returns_none_and_writes_nothing(tmp_path):
    metrics = _write(tmp_path / "metrics.jsonl", [{"step": 1, "train/loss": 1.0}])
    out = tmp_path / "curves.png"
    assert plot_metric_curves(metrics, ["validation/accuracy"], out) is None
    assert plot_metric_curves(metrics, [], out) is None
    assert plot_metric_curves(tmp_path / "missing.jsonl", ["train/loss"], out) is None
    assert not out.exists()


def test_torn_line_is_skipped(tmp_path, captured_axes):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1, "train/loss": 1.0}\n{"step": 2, "train/lo')
    assert plot_metric_curves(metrics, ["train/loss"], tmp_path / "c.png") is not None
    assert captured_axes["train/loss"] == ([1], [1.0])
