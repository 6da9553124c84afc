"""Run logging: a stdout line per step, ``metrics.jsonl``, TensorBoard, W&B, sample dumps.

``metrics.jsonl`` is append-only, one ``{"step": N, ...}`` object per line, flushed per step, so a
crash loses at most the step in flight. Runs go to ``log_dir/exp_NNN`` (next free number).

A run that resumes at step N in the same directory passes ``resume_from_step=N``: rows with
``step >= N`` (written after the checkpoint it resumes from, by the process that died) are
dropped from ``metrics.jsonl`` by an atomic rewrite, and TensorBoard purges its events from step N,
so every step appears once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
_EXP_DIR = re.compile(r"^exp_(\d+)$")
# Shown first on the stdout line, in this order, when present.
HEADLINE_METRICS = ("train/loss", "train/reward_mean", "train/grad_norm", "validation/accuracy", "timing/train/total_step_time")


@dataclass
class WandbConfig:
    project: str = "nemo-distill"  # W&B project the run is filed under
    name: str | None = None  # run name; None lets W&B choose


@dataclass
class LoggerConfig:
    log_dir: str = "logs"  # runs go to log_dir/exp_NNN (or log_dir itself with exp_numbering false)
    exp_numbering: bool = True  # put each run in a fresh log_dir/exp_NNN
    stdout_enabled: bool = True  # one human-readable line per step on stdout
    tensorboard_enabled: bool = True  # scalars under run_dir/tensorboard
    wandb_enabled: bool = False  # offline mode when WANDB_API_KEY is unset; needs the `wandb` extra
    wandb: WandbConfig = field(default_factory=WandbConfig)
    num_val_samples_to_print: int = 0  # validation samples (prompt, response, reward) echoed to stdout
    plot_metrics: list[str] = field(default_factory=lambda: ["train/loss"])  # curves written to curves.png

    def __post_init__(self) -> None:
        if self.num_val_samples_to_print < 0:
            raise ValueError(f"logger.num_val_samples_to_print must be >= 0, got {self.num_val_samples_to_print}")


def resolve_experiment_dir(log_dir: str, exp_numbering: bool = True) -> Path:
    """Create and return ``log_dir/exp_NNN`` (1 + the highest existing, 3 digits), or ``log_dir`` itself.

    A resumed run that wants to keep appending to its old directory passes that directory to
    :class:`Logger` directly instead of calling this.
    """
    root = Path(log_dir)
    root.mkdir(parents=True, exist_ok=True)
    if not exp_numbering:
        return root
    taken = [int(m.group(1)) for p in root.iterdir() if (m := _EXP_DIR.match(p.name))]
    number = max(taken, default=0) + 1
    while True:
        run_dir = root / f"exp_{number:03d}"
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:  # another run took it between listing and mkdir
            number += 1


def format_step_line(step: int, metrics: dict[str, float]) -> str:
    """``step 3 | train/loss 0.4123 | ... | timing/train/total_step_time 4.2s`` (headline metrics first)."""

    def show(name: str, value: float) -> str:
        if name.startswith("timing/"):
            return f"{name} {value:.2f}s"
        if isinstance(value, float) and not math.isnan(value) and value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{name} {value:.3e}"
        return f"{name} {value:.4f}" if isinstance(value, float) else f"{name} {value}"

    names = [n for n in HEADLINE_METRICS if n in metrics] + sorted(n for n in metrics if n not in HEADLINE_METRICS)
    return " | ".join([f"step {step}"] + [show(n, metrics[n]) for n in names])


def format_validation_samples(rows: list[dict[str, Any]], n: int) -> str:
    """The first ``n`` validation samples as text (``logger.num_val_samples_to_print``).

    ``rows`` are the ``val_data_step{N}.jsonl`` rows (keys ``problem``, ``response``, ``reward``;
    ``answer`` shown when present). ``n = 0`` or no rows gives ``""``.
    """
    if n < 0:
        raise ValueError(f"logger.num_val_samples_to_print must be >= 0, got {n}")
    shown = rows[:n]
    if not shown:
        return ""
    blocks = [f"=== validation samples: first {len(shown)} of {len(rows)} ==="]
    for i, row in enumerate(shown):
        answer = f" | gold answer: {row['answer']}" if row.get("answer") is not None else ""
        blocks.append(
            f"--- sample {i} | reward {row.get('reward')}{answer} ---\n"
            f"[problem]\n{row.get('problem')}\n[response]\n{row.get('response')}"
        )
    return "\n".join(blocks)


class Logger:
    """Fans metrics out to every enabled sink; see module docstring."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, *, resume_from_step: int | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.resume_from_step = resume_from_step
        metrics_path = self.run_dir / "metrics.jsonl"
        if resume_from_step is not None and metrics_path.is_file():
            drop_metrics_from_step(metrics_path, resume_from_step)
        torn_tail = metrics_path.is_file() and metrics_path.stat().st_size > 0 and not metrics_path.read_bytes().endswith(b"\n")
        self._metrics_file = open(metrics_path, "a")
        if torn_tail:  # a previous process died mid-line: end that fragment so new rows stay parseable
            self._metrics_file.write("\n")
        self._tensorboard = None
        self._wandb_run = None
        if cfg.wandb_enabled:
            try:
                import wandb
            except ImportError as err:
                raise ImportError(
                    "logger.wandb_enabled is true but wandb is not installed; `pip install 'nemo-distill[wandb]'` "
                    "or set logger.wandb_enabled=false"
                ) from err
            mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
            self._wandb_run = wandb.init(project=cfg.wandb.project, name=cfg.wandb.name, dir=str(self.run_dir), mode=mode)

    def _tb(self):
        if self._tensorboard is None and self.cfg.tensorboard_enabled:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: TensorBoard hides this run's earlier events at steps >= N (a resume)
            self._tensorboard = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=self.resume_from_step)
        return self._tensorboard

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        """Append ``{"step": step, **metrics}`` to metrics.jsonl and forward to the other sinks.

        Values must be numbers (Python, numpy or 0-d tensors); anything else is skipped, because
        every sink (JSONL curves, TensorBoard scalars) plots numbers only. A non-finite value
        (NaN, +-inf: a diverged or skipped step) is written as ``null`` in metrics.jsonl, so the
        file stays strict JSON (Python's ``NaN``/``Infinity`` tokens break other readers); the
        stdout line, TensorBoard and W&B still get the float.
        """
        numeric = {name: number for name, value in metrics.items() if (number := _as_float(value)) is not None}
        row = {"step": step, **{name: value if math.isfinite(value) else None for name, value in numeric.items()}}
        self._metrics_file.write(json.dumps(row, allow_nan=False) + "\n")
        self._metrics_file.flush()
        if self.cfg.stdout_enabled:
            print(format_step_line(step, numeric), flush=True)
        writer = self._tb()
        if writer is not None:
            for name, value in numeric.items():
                writer.add_scalar(name, value, step)
            writer.flush()
        if self._wandb_run is not None:
            self._wandb_run.log(numeric, step=step)

    def log_samples(self, rows: list[dict[str, Any]], filename: str) -> Path:
        """Write ``rows`` as JSONL to ``run_dir/filename`` (e.g. ``train_data_step3.jsonl``)."""
        path = self.run_dir / filename
        partial = path.with_name(path.name + ".partial")
        with open(partial, "w") as handle:  # written aside, then renamed: readers never see half a file
            for row in rows:
                handle.write(json.dumps(row, default=str) + "\n")
        os.replace(partial, path)
        return path

    def close(self) -> None:
        """Flush and close every sink; safe to call twice."""
        if not self._metrics_file.closed:
            self._metrics_file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None


def _as_float(value: Any) -> float | None:
    """``value`` as a float if it is a (non-bool) number or a one-element array/tensor, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    item = getattr(value, "item", None)  # numpy scalars and arrays, torch tensors
    if not callable(item):
        return None
    try:
        result = item()
    except (ValueError, RuntimeError):  # more than one element
        return None
    if isinstance(result, bool) or not isinstance(result, (int, float)):
        return None
    return float(result)


def drop_metrics_from_step(path: Path, first_dropped_step: int) -> int:
    """Rewrite ``metrics.jsonl`` at ``path`` without rows whose ``step >= first_dropped_step``.

    Used when a run resumes at ``first_dropped_step`` from a checkpoint: those rows came from the
    process that died and are about to be logged again. Torn (non-JSON) lines are dropped too.
    The new file is written aside, fsynced and renamed over the old one, so a crash during the
    rewrite leaves either the old file or the new one. Returns the number of lines dropped.
    """
    path = Path(path)
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        step = row.get("step") if isinstance(row, dict) else None
        if isinstance(step, (int, float)) and step >= first_dropped_step:
            dropped += 1
            continue
        kept.append(line)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w") as handle:
        handle.write("".join(line + "\n" for line in kept))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    if dropped:
        log.info("%s: dropped %d row(s) from step %d on (superseded by the resumed run)", path, dropped, first_dropped_step)
    return dropped


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """Every row of ``run_dir/metrics.jsonl`` in file order (see :func:`read_metrics_file`)."""
    return read_metrics_file(Path(run_dir) / "metrics.jsonl")


def read_metrics_file(path: Path) -> list[dict[str, float]]:
    """Every row of a ``metrics.jsonl`` file in file order.

    Lines that are not valid JSON (a fragment left by a process killed mid-write) are skipped with
    a warning. After a resume, a step may appear twice; the later row is the one that counts.
    """
    path = Path(path)
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s: line %d is not valid JSON (torn write?); skipped", path, number)
    return rows
