"""Seed 000's sweep of reward-mixed context distillation: its four runs and its results table.

Seed 000 launches A1 -> A2 -> A3 -> B1 one after the other and fills a table of each run's final
task reward, KL and loss. This module holds the run definitions (:data:`SEED000_RUNS`), reads each
run's ``metrics.jsonl`` (:func:`read_run_result`) and writes the report (:func:`write_sweep_report`):
``results.md`` (seed 000's table) and ``reward_curves.png`` (task reward per step, one curve per
run). ``examples/seed000_sweep.py`` launches the runs and calls it.

"Final" is the mean over the last ``window`` logged steps (1 = the last step alone): RL metrics are
noisy step to step, and a single step would rank runs by chance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from nemo_distill.utils.logger import read_metrics_file

REWARD_METRIC = "train/reward_mean"  # the task reward (verifier), whatever its weight adv_tau
KL_METRIC = "train/teacher_kl"  # mean over sampled tokens of log p_student - log p_teacher (absent without a teacher)
LOSS_METRIC = "train/loss/policy"


@dataclass(frozen=True)
class SweepRun:
    """One run of the sweep: its taus and how seed 000's table names it."""

    key: str  # "a1": recipe files are <prefix>-a1-*.yaml
    label: str  # the table's "Run" cell, e.g. "A1 (task only)"
    adv_tau: float
    teacher_tau: float
    student_tau: float

    def tau_overrides(self) -> list[str]:
        """Overrides that give any config this run's taus (the ``--base-config`` mode of the sweep)."""
        section = "grpo.context_distillation"
        return [f"{section}.adv_tau={self.adv_tau}", f"{section}.teacher_tau={self.teacher_tau}",
                f"{section}.student_tau={self.student_tau}"]


SEED000_RUNS: tuple[SweepRun, ...] = (
    SweepRun("a1", "A1 (task only)", 1.0, 0.0, 0.0),
    SweepRun("a2", "A2 (task + kl0.01)", 1.0, 0.01, 0.01),
    SweepRun("a3", "A3 (task + kl0.001)", 1.0, 0.001, 0.001),
    SweepRun("b1", "B1 (kl only)", 0.0, 1.0, 1.0),
)


def runs_by_key(keys: list[str]) -> list[SweepRun]:
    """The runs named by ``keys`` (e.g. ``["a1", "b1"]``), in the order given; an unknown key is a ``ValueError``."""
    known = {run.key: run for run in SEED000_RUNS}
    unknown = [key for key in keys if key.lower() not in known]
    if unknown:
        raise ValueError(f"unknown sweep run(s) {unknown}; choose from {list(known)}")
    return [known[key.lower()] for key in keys]


@dataclass
class RunResult:
    """What the table and the plot need from one run's ``metrics.jsonl``; ``None`` = never logged."""

    run: SweepRun
    steps: int  # training steps logged (rows with the reward metric)
    task_reward: float | None
    teacher_kl: float | None
    loss: float | None
    reward_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, task reward), sorted by step
    note: str = ""


def _series(rows: list[dict], name: str) -> dict[int, float]:
    """``{step: value}`` of one metric; a later row wins for a repeated step (a resumed run); null = NaN."""
    values: dict[int, float] = {}
    for row in rows:
        if name in row and "step" in row:
            values[int(row["step"])] = math.nan if row[name] is None else float(row[name])
    return values


def _final(series: dict[int, float], window: int) -> float | None:
    if not series:
        return None
    last = [series[step] for step in sorted(series)[-window:]]
    return sum(last) / len(last)


def read_run_result(run: SweepRun, metrics_jsonl: Path, *, window: int = 10) -> RunResult:
    """Final task reward, teacher KL and policy loss of one run (means over its last ``window`` steps).

    A missing file gives a row of ``None`` s with the note "not run" so a partial sweep still
    reports the runs that finished.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1 step, got {window}")
    path = Path(metrics_jsonl)
    if not path.is_file():
        return RunResult(run, 0, None, None, None, note=f"not run ({path} missing)")
    rows = read_metrics_file(path)
    reward = _series(rows, REWARD_METRIC)
    return RunResult(
        run=run, steps=len(reward), task_reward=_final(reward, window), teacher_kl=_final(_series(rows, KL_METRIC), window),
        loss=_final(_series(rows, LOSS_METRIC), window), reward_curve=sorted(reward.items()),
        note=f"{len(reward)} steps" if reward else "no training step logged",
    )


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def results_table(results: list[RunResult], *, window: int = 10) -> str:
    """Seed 000's "Results Summary" table in Markdown (one row per run, in sweep order)."""
    lines = [
        f"Final = mean of the last {window} logged step(s). KL = `{KL_METRIC}` (mean over sampled tokens of "
        "log p_student − log p_teacher; — where the run has no teacher term). Loss = `" + LOSS_METRIC + "`.",
        "",
        "| Run | adv_tau | teacher_tau | student_tau | Final Task Reward | Final KL | Final Loss | Notes |",
        "|-----|---------|-------------|-------------|------------------|----------|------------|-------|",
    ]
    for result in results:
        run = result.run
        lines.append(f"| {run.label} | {run.adv_tau:g} | {run.teacher_tau:g} | {run.student_tau:g} | {_cell(result.task_reward)} | "
                     f"{_cell(result.teacher_kl)} | {_cell(result.loss)} | {result.note} |")
    return "\n".join(lines) + "\n"


def plot_reward_curves(results: list[RunResult], out_png: Path) -> Path | None:
    """Task reward per step, one line per run; ``None`` when no run logged a reward."""
    plotted = [result for result in results if result.reward_curve]
    if not plotted:
        return None
    # A bare Figure renders with Agg and never touches pyplot's global backend.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    axis = fig.subplots()
    for result in plotted:
        steps, values = zip(*result.reward_curve)
        axis.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=result.run.label)
    axis.set_xlabel("step")
    axis.set_ylabel(f"task reward ({REWARD_METRIC})")
    axis.set_title("Seed 000 sweep: task reward per step")
    axis.grid(alpha=0.3)
    axis.legend()
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    return out_png


def write_sweep_report(runs: list[SweepRun], metrics_files: list[Path], out_dir: Path, *, window: int = 10,
                       title: str = "Seed 000 sweep") -> tuple[Path, Path | None]:
    """Read each run's metrics, write ``out_dir/results.md`` and ``out_dir/reward_curves.png``; return both paths
    (the PNG is ``None`` when no run logged a reward)."""
    if len(runs) != len(metrics_files):
        raise ValueError(f"{len(runs)} runs but {len(metrics_files)} metrics files")
    results = [read_run_result(run, path, window=window) for run, path in zip(runs, metrics_files)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = plot_reward_curves(results, out_dir / "reward_curves.png")
    markdown = f"# {title}\n\n" + results_table(results, window=window)
    if png is not None:
        markdown += f"\n![task reward per step]({png.name})\n"
    md_path = out_dir / "results.md"
    md_path.write_text(markdown)
    return md_path, png
