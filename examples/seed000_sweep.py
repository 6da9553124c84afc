"""Seed 000's sweep: run A1 -> A2 -> A3 -> B1 one after the other, then write its results table.

Each run trains with ``examples/run_grpo.py`` and logs to ``OUT_DIR/<run>/metrics.jsonl``; at the
end (also after a failed run, for the runs that finished) ``OUT_DIR/results.md`` holds seed 000's
table (final task reward, teacher KL and loss per run) and ``OUT_DIR/reward_curves.png`` the four
task-reward curves (nemo_distill/algorithms/context_distillation_sweep.py).

Qwen3-4B on 8 GPUs, each run its own Slurm job of ray_bare.sub (waited for before the next):
    python examples/seed000_sweep.py --slurm
The embedded SmolLM2-135M on easy boards, one GPU, locally (recipes <prefix>-a1-*.yaml, ...):
    python examples/seed000_sweep.py --recipe-prefix configs/recipes/llm/context-distill-sokoban-smollm2 --out-dir logs/sweep-smollm2
CPU smoke with a tiny random model (the taus come from overrides on one config):
    python -m nemo_distill.models.tiny --out /tmp/tiny-student --hidden-size 64
    python examples/seed000_sweep.py --base-config configs/context_distill_sokoban_tiny_cpu.yaml --out-dir /tmp/sweep
Overrides (words with "=", also after --runs) go to every run: ... grpo.max_num_steps=2 logger.wandb_enabled=false
Only the report of finished runs: ... --report-only
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from nemo_distill.algorithms.context_distillation_sweep import SEED000_RUNS, SweepRun, runs_by_key, write_sweep_report  # noqa: E402

DEFAULT_PREFIX = "configs/recipes/llm/context-distill-sokoban"


def recipe_for(prefix: str, run: SweepRun) -> Path:
    """The one recipe ``<prefix>-<run.key>-*.yaml`` (e.g. ``...-sokoban-a1-task1.0-kl0.0.yaml``)."""
    base = REPO / prefix if not Path(prefix).is_absolute() else Path(prefix)
    matches = sorted(base.parent.glob(f"{base.name}-{run.key}-*.yaml"))
    if len(matches) != 1:
        found = [p.name for p in matches] or "none"
        raise SystemExit(f"--recipe-prefix {prefix}: expected exactly one {base.name}-{run.key}-*.yaml in {base.parent}, found {found}")
    return matches[0]


def run_command(args: argparse.Namespace, run: SweepRun, log_dir: Path) -> list[str]:
    """The ``run_grpo.py`` command line of one run: its config, its log directory, the pass-through overrides."""
    if args.base_config:
        config, taus = Path(args.base_config), run.tau_overrides()
    else:
        config, taus = recipe_for(args.recipe_prefix, run), []
    return [*shlex.split(args.python), str(REPO / "examples" / "run_grpo.py"), "--config", str(config), *taus,
            f"logger.log_dir={log_dir}", "logger.exp_numbering=false", *args.overrides]


def launch(args: argparse.Namespace, run: SweepRun, command: list[str]) -> int:
    """Run one training to the end (locally, or as a waited-for ``sbatch ray_bare.sub`` job); its exit code."""
    if not args.slurm:
        print(f"== {run.label}: {shlex.join(command)}", flush=True)
        return subprocess.run(command, cwd=REPO).returncode
    # COMMAND travels in the environment (--export=ALL), not as --export=ALL,COMMAND=...: sbatch splits
    # that list on commas, and overrides such as cluster.trainer_gpu_ids=[4,5,6,7] contain them.
    sbatch = ["sbatch", "--wait", *shlex.split(args.sbatch_args), f"--job-name=seed000-{run.key}", "--export=ALL",
              str(REPO / "ray_bare.sub")]
    print(f"== {run.label}: COMMAND={shlex.quote(shlex.join(command))} {shlex.join(sbatch)}", flush=True)
    return subprocess.run(sbatch, cwd=REPO, env={**os.environ, "COMMAND": shlex.join(command)}).returncode


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 1)[1])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--recipe-prefix", default=DEFAULT_PREFIX,
                        help=f"recipes are <prefix>-<run>-*.yaml for run in a1 a2 a3 b1 (default {DEFAULT_PREFIX})")
    source.add_argument("--base-config", help="one config for every run; each run's taus are set by overrides")
    parser.add_argument("--runs", nargs="+", default=[run.key for run in SEED000_RUNS], help="subset / order (default a1 a2 a3 b1)")
    parser.add_argument("--out-dir", default="logs/seed000-sweep", help="runs log to OUT_DIR/<run>; the report goes to OUT_DIR")
    parser.add_argument("--slurm", action="store_true", help="each run as `sbatch --wait ... ray_bare.sub`")
    parser.add_argument("--sbatch-args", default="-N1", help="extra sbatch arguments (default -N1)")
    parser.add_argument("--python", default=None, help="interpreter of the runs (default: this one; with --slurm: `uv run python`)")
    parser.add_argument("--window", type=int, default=10, help="final = mean of the last WINDOW steps (default 10)")
    parser.add_argument("--report-only", action="store_true", help="launch nothing; write the report of the runs in OUT_DIR")
    parser.add_argument("--keep-going", action="store_true", help="launch the next run after a failed one")
    parser.add_argument("overrides", nargs="*", help="config overrides for every run, e.g. grpo.max_num_steps=2")
    args = parser.parse_args(argv)
    # `--runs a1 b1 grpo.max_num_steps=2`: argparse gives the overrides to --runs; a run key has no '='
    args.overrides = [word for word in args.runs if "=" in word] + args.overrides
    args.runs = [word for word in args.runs if "=" not in word]
    if args.python is None:
        args.python = "uv run python" if args.slurm else shlex.quote(sys.executable)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        runs = runs_by_key(args.runs)
    except ValueError as err:
        raise SystemExit(f"--runs: {err}") from None
    out_dir = Path(args.out_dir).resolve()
    log_dirs = [out_dir / run.key for run in runs]
    status = 0
    if not args.report_only:
        for run, log_dir in zip(runs, log_dirs):
            code = launch(args, run, run_command(args, run, log_dir))
            if code != 0:
                print(f"== {run.label} failed with exit code {code}", file=sys.stderr, flush=True)
                status = code
                if not args.keep_going:
                    break
    md, png = write_sweep_report(runs, [log_dir / "metrics.jsonl" for log_dir in log_dirs], out_dir, window=args.window)
    print(md.read_text())
    print(f"results: {md}" + (f", curves: {png}" if png else ""))
    return status


if __name__ == "__main__":
    sys.exit(main())
