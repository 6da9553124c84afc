"""Seed 000's sweep report from fake metrics.jsonl files: final values, the table, the curve PNG,
and the sweep script's command lines (no run is launched)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from nemo_distill.algorithms.context_distillation_sweep import (
    SEED000_RUNS,
    read_run_result,
    results_table,
    runs_by_key,
    write_sweep_report,
)

REPO = Path(__file__).resolve().parents[3]


def _write_metrics(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _fake_run(path: Path, rewards: list[float], kls: list[float] | None, losses: list[float]) -> Path:
    rows = [{"step": 0, "eval/sokoban/baseline_student/avg": 0.1}]  # eval_baseline's row is not a training step
    for step, (reward, loss) in enumerate(zip(rewards, losses), start=1):
        row = {"step": step, "train/reward_mean": reward, "train/loss/policy": loss, "train/loss": loss}
        if kls is not None:
            row["train/teacher_kl"] = kls[step - 1]
        rows.append(row)
    return _write_metrics(path, rows)


def test_seed000_runs_have_the_seed_taus():
    assert [(r.key, r.adv_tau, r.teacher_tau, r.student_tau) for r in SEED000_RUNS] == [
        ("a1", 1.0, 0.0, 0.0), ("a2", 1.0, 0.01, 0.01), ("a3", 1.0, 0.001, 0.001), ("b1", 0.0, 1.0, 1.0)]
    assert SEED000_RUNS[1].tau_overrides() == ["grpo.context_distillation.adv_tau=1.0", "grpo.context_distillation.teacher_tau=0.01",
                                               "grpo.context_distillation.student_tau=0.01"]
    assert [r.key for r in runs_by_key(["B1", "a2"])] == ["b1", "a2"]
    with pytest.raises(ValueError, match=r"unknown sweep run\(s\) \['c9'\]"):
        runs_by_key(["c9"])


def test_final_values_are_means_of_the_last_window_steps(tmp_path):
    path = _fake_run(tmp_path / "a2.jsonl", rewards=[0.0, 0.25, 0.5, 1.0], kls=[2.0, 1.0, 0.5, 0.25], losses=[0.1, 0.2, 0.3, 0.4])
    result = read_run_result(SEED000_RUNS[1], path, window=2)
    assert result.steps == 4
    assert result.task_reward == pytest.approx((0.5 + 1.0) / 2)
    assert result.teacher_kl == pytest.approx((0.5 + 0.25) / 2)
    assert result.loss == pytest.approx((0.3 + 0.4) / 2)
    assert result.reward_curve == [(1, 0.0), (2, 0.25), (3, 0.5), (4, 1.0)]
    last = read_run_result(SEED000_RUNS[1], path, window=1)
    assert (last.task_reward, last.teacher_kl, last.loss) == (1.0, 0.25, 0.4)
    whole = read_run_result(SEED000_RUNS[1], path, window=100)  # a window longer than the run: all steps
    assert whole.task_reward == pytest.approx(1.75 / 4)


def test_resumed_step_counts_once_and_null_is_nan(tmp_path):
    rows = [{"step": 1, "train/reward_mean": 0.0}, {"step": 2, "train/reward_mean": 0.2},
            {"step": 2, "train/reward_mean": 0.6}, {"step": 3, "train/reward_mean": None}]
    result = read_run_result(SEED000_RUNS[0], _write_metrics(tmp_path / "m.jsonl", rows), window=2)
    assert result.steps == 3 and result.reward_curve[1] == (2, 0.6)
    assert math.isnan(result.task_reward)  # a non-finite last step is shown, not hidden
    assert result.teacher_kl is None and result.loss is None


def test_missing_run_and_bad_window(tmp_path):
    result = read_run_result(SEED000_RUNS[3], tmp_path / "nope" / "metrics.jsonl")
    assert (result.steps, result.task_reward, result.teacher_kl, result.loss) == (0, None, None, None)
    assert result.note.startswith("not run")
    with pytest.raises(ValueError, match="window must be >= 1"):
        read_run_result(SEED000_RUNS[0], tmp_path / "x.jsonl", window=0)


def test_table_rows_in_sweep_order_with_dashes_for_missing(tmp_path):
    a1 = read_run_result(SEED000_RUNS[0], _fake_run(tmp_path / "a1.jsonl", [0.5, 0.75], None, [0.01, -0.02]), window=1)
    b1 = read_run_result(SEED000_RUNS[3], tmp_path / "missing.jsonl")
    table = results_table([a1, b1], window=1)
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| Run | adv_tau | teacher_tau | student_tau | Final Task Reward | Final KL | Final Loss |")
    assert rows[1] == "| A1 (task only) | 1 | 0 | 0 | 0.7500 | — | -0.0200 | 2 steps |"
    assert rows[2].startswith("| B1 (kl only) | 0 | 1 | 1 | — | — | — | not run")


def test_write_sweep_report_writes_markdown_and_png(tmp_path):
    files = []
    for index, run in enumerate(SEED000_RUNS):
        kls = None if run.teacher_tau == 0 else [1.0 - 0.1 * step for step in range(5)]
        files.append(_fake_run(tmp_path / run.key / "metrics.jsonl", [0.1 * index + 0.05 * step for step in range(5)], kls,
                               [0.0] * 5))
    md, png = write_sweep_report(list(SEED000_RUNS), files, tmp_path / "report", window=2)
    text = md.read_text()
    assert text.startswith("# Seed 000 sweep")
    assert "| A2 (task + kl0.01) | 1 | 0.01 | 0.01 | 0.2750 | 0.6500 | 0.0000 | 5 steps |" in text
    assert "![task reward per step](reward_curves.png)" in text
    assert png == tmp_path / "report" / "reward_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    with pytest.raises(ValueError, match="4 runs but 1 metrics files"):
        write_sweep_report(list(SEED000_RUNS), files[:1], tmp_path / "x")


def test_no_reward_logged_gives_no_png(tmp_path):
    md, png = write_sweep_report([SEED000_RUNS[0]], [tmp_path / "missing.jsonl"], tmp_path / "out")
    assert png is None and "reward_curves.png" not in md.read_text()


def _sweep_module():
    spec = importlib.util.spec_from_file_location("seed000_sweep", REPO / "examples" / "seed000_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_commands_use_each_recipe_or_the_base_config_with_taus(tmp_path):
    sweep = _sweep_module()
    args = sweep.parse_args(["--out-dir", str(tmp_path), "grpo.max_num_steps=2"])
    command = sweep.run_command(args, SEED000_RUNS[2], tmp_path / "a3")
    assert command[command.index("--config") + 1].endswith("configs/recipes/llm/context-distill-sokoban-a3-task1.0-kl0.001.yaml")
    assert command[-3:] == [f"logger.log_dir={tmp_path / 'a3'}", "logger.exp_numbering=false", "grpo.max_num_steps=2"]
    small = sweep.parse_args(["--recipe-prefix", "configs/recipes/llm/context-distill-sokoban-smollm2"])
    assert sweep.recipe_for(small.recipe_prefix, SEED000_RUNS[3]).name == "context-distill-sokoban-smollm2-b1-1n1g.yaml"
    base = sweep.parse_args(["--base-config", "configs/context_distill_sokoban_tiny_cpu.yaml"])
    command = sweep.run_command(base, SEED000_RUNS[3], tmp_path / "b1")
    assert "grpo.context_distillation.adv_tau=0.0" in command and "grpo.context_distillation.teacher_tau=1.0" in command
    with pytest.raises(SystemExit, match="expected exactly one nope-a1-"):
        sweep.recipe_for("configs/recipes/llm/nope", SEED000_RUNS[0])
    assert sweep.parse_args(["--slurm"]).python == "uv run python"


def test_report_only_prints_the_table(tmp_path, capsys):
    _fake_run(tmp_path / "a1" / "metrics.jsonl", [0.25, 0.5], None, [0.0, 0.0])
    assert _sweep_module().main(["--report-only", "--out-dir", str(tmp_path), "--runs", "a1", "--window", "1"]) == 0
    out = capsys.readouterr().out
    assert "| A1 (task only) | 1 | 0 | 0 | 0.5000 |" in out and (tmp_path / "reward_curves.png").is_file()


def test_overrides_after_runs_stay_overrides():
    # argparse's nargs="+" gives `--runs a1 b1 x=1` all three words; a run key never holds '='
    sweep = _sweep_module()
    args = sweep.parse_args(["--runs", "a1", "b1", "grpo.max_num_steps=2", "logger.wandb_enabled=false"])
    assert args.runs == ["a1", "b1"] and args.overrides == ["grpo.max_num_steps=2", "logger.wandb_enabled=false"]
    args = sweep.parse_args(["grpo.max_num_steps=2", "--runs", "b1"])
    assert args.runs == ["b1"] and args.overrides == ["grpo.max_num_steps=2"]
