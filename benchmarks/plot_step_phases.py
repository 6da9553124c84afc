"""Stacked bars of a distillation step's phases from ``compare_trl.json`` reports (ours, and TRL's step when present).

    python benchmarks/plot_step_phases.py benchmarks/results/compare_trl_h200_ours_2026-12-04.json \
        --out docs/results/perf_h200_step_phases.png [--trl-step-s 15.6 --trl-label "TRL 1.16 (earlier run)"]
    python benchmarks/plot_step_phases.py benchmarks/results/compare_trl_h200_2026-12-05.json \
        benchmarks/results/compare_trl_h200_2026-12-05_hf_sampler_loop.json --labels "ours, generate" "ours, loop" \
        --out docs/results/perf_h200_step_phases_2026-12-05.png --target-s 1.95

One bar per report (``--labels`` names them; default "nemo-distill", numbered when several), in the
order given. The phases are the means over steps 2.. that ``compare_trl.py`` stores under
``ours.summary``; "other" is the step time they do not cover (driver work, batching, logging). TRL's
bar comes from the first report that ran TRL; ``--trl-step-s`` draws one from a figure measured
elsewhere when none did (say so in ``--trl-label``).
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


def trl_step_seconds(reports: list[dict], fallback: float | None) -> float | None:
    """TRL's steady step from the first report that ran TRL, else ``fallback`` (``--trl-step-s``)."""
    return next((r["trl"]["steady_step_s"] for r in reports if (r.get("trl") or {}).get("steady_step_s")), fallback)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", help="compare_trl.json files, one bar each")
    parser.add_argument("--labels", nargs="+", default=None, help="one bar label per report")
    parser.add_argument("--out", required=True, help="PNG path")
    parser.add_argument("--trl-step-s", type=float, default=None, help="TRL's step seconds when no report has them")
    parser.add_argument("--trl-label", default="TRL DistillationTrainer")
    parser.add_argument("--target-s", type=float, default=None, help="draw a dashed line at this step time (e.g. TRL / 5)")
    args = parser.parse_args(argv)
    reports = [json.loads(Path(path).read_text()) for path in args.reports]
    if args.labels is None:
        args.labels = ["nemo-distill"] if len(reports) == 1 else [f"nemo-distill ({i})" for i in range(1, len(reports) + 1)]
    if len(args.labels) != len(reports):
        parser.error(f"--labels: {len(args.labels)} labels for {len(reports)} reports")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trl_step = trl_step_seconds(reports, args.trl_step_s)
    colors = dict(zip([label for _, label in PHASES] + ["other"], plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig, ax = plt.subplots(figsize=(8.5, 1.6 + 0.8 * (len(reports) + bool(trl_step))))
    if trl_step:  # bottom row; the reports above it, the first on top
        ax.barh([args.trl_label], [trl_step], color="grey")
        ax.text(trl_step, args.trl_label, f" {trl_step:.2f} s", va="center", fontsize=8)
    widest = trl_step or 0.0
    for label, report in reversed(list(zip(args.labels, reports))):
        left = 0.0
        for phase, seconds in phase_bars(report).items():
            ax.barh([label], [seconds], left=left, color=colors[phase], label=phase)  # legend: one entry per phase, below
            left += seconds
        ax.text(left, label, f" {left:.2f} s", va="center", fontsize=8)
        widest = max(widest, left)
    if args.target_s:
        ax.axvline(args.target_s, color="black", linestyle="--", linewidth=1, label=f"target {args.target_s:.2f} s")
    first = reports[0]
    ax.set_xlabel("seconds per step (ours: mean of steps 2..; TRL: its steady step)")
    ax.set_title(f"{first['shape']}, {first['prompts']} prompts x {first['max_new_tokens']} new tokens, micro-batch {first['micro_batch']}",
                 fontsize=9)
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_xlim(0, widest * 1.15)  # room for the seconds written after each bar
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
