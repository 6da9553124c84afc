"""Stacked bar of a distillation step's phases from a ``compare_trl.json`` (ours, and TRL's step when present).

    python benchmarks/plot_step_phases.py benchmarks/results/compare_trl_h200_ours_2026-12-04.json \
        --out docs/results/perf_h200_step_phases.png [--trl-step-s 15.6 --trl-label "TRL 1.16 (earlier run)"]

The phases are the means over steps 2.. that ``compare_trl.py`` stores under ``ours.summary``;
"other" is the step time they do not cover (driver work, batching, logging). ``--trl-step-s`` draws a
TRL bar from a figure measured elsewhere when the JSON has no TRL side (say so in ``--trl-label``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PHASES = (("generation_s", "generation"), ("teacher_topk_s", "teacher top-k"), ("policy_training_s", "training"),
          ("refit_s", "refit"))


def phase_bars(report: dict) -> dict[str, float]:
    """``{phase label: seconds}`` of our step, with "other" = step − the listed phases (never negative)."""
    summary = report["ours"]["summary"]
    bars = {label: float(summary.get(key) or 0.0) for key, label in PHASES}
    bars["other"] = max(0.0, float(summary["total_step_time_s"]) - sum(bars.values()))
    return bars


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", help="compare_trl.json")
    parser.add_argument("--out", required=True, help="PNG path")
    parser.add_argument("--trl-step-s", type=float, default=None, help="TRL's step seconds when the report has none")
    parser.add_argument("--trl-label", default="TRL DistillationTrainer")
    parser.add_argument("--target-s", type=float, default=None, help="draw a dashed line at this step time (e.g. TRL / 5)")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = json.loads(Path(args.report).read_text())
    bars = phase_bars(report)
    trl_step = (report.get("trl") or {}).get("steady_step_s") or args.trl_step_s
    fig, ax = plt.subplots(figsize=(7, 3.6))
    bottom = 0.0
    for label, seconds in bars.items():
        ax.barh(["nemo-distill"], [seconds], left=bottom, label=f"{label} {seconds:.2f} s")
        bottom += seconds
    if trl_step:
        ax.barh([args.trl_label], [trl_step], color="grey", label=f"{args.trl_label} {trl_step:.1f} s")
    if args.target_s:
        ax.axvline(args.target_s, color="black", linestyle="--", linewidth=1, label=f"target {args.target_s:.1f} s")
    ax.set_xlabel("seconds per step (steady)")
    ax.set_title(f"{report['shape']}, {report['prompts']} prompts x {report['max_new_tokens']} new tokens, micro-batch {report['micro_batch']}")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
