"""The end-of-run summary every loop prints: each labelled metric's first and last logged value.

``run_algorithm`` (:mod:`.runtime`) writes it to ``<run dir>/summary.json``; the example scripts
print :func:`format_summary_table` of it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def write_summary(history: list[dict[str, Any]], run_dir: Path, labels: dict[str, str], elapsed_s: float,
                  title: str) -> dict[str, Any]:
    """First/last-step values of ``labels``' metrics in ``history`` (one dict per logged step, with its
    ``step``), saved as ``run_dir / "summary.json"``; a metric never logged is left out. A NaN / inf
    value (a skipped step's loss) stays in the returned dict and is written as null, as in ``metrics.jsonl``."""
    summary: dict[str, Any] = {"title": title, "run_dir": str(run_dir), "steps": len(history), "wall_time_s": round(elapsed_s, 1),
                               "labels": labels}
    for name in labels:
        logged = [row for row in history if name in row]
        if logged:
            first, last = logged[0], logged[-1]
            summary[name] = {"first": first[name], "last": last[name], "first_step": first["step"], "last_step": last["step"]}
    (Path(run_dir) / "summary.json").write_text(json.dumps(_finite_or_null(summary), indent=2, allow_nan=False, default=str))
    return summary


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    return None if isinstance(value, float) and not math.isfinite(value) else value


def format_summary_table(summary: dict[str, Any]) -> str:
    """The first/last-step table printed at the end of a run."""
    lines = [f"== {summary['title']} summary: {summary['steps']} steps in {summary['wall_time_s']} s, run dir {summary['run_dir']} =="]
    lines.append(f"{'metric':<36} {'first':>10} {'last':>10}")

    def show(value):
        return "-" if value is None else f"{value:.4f}"

    for name, label in summary["labels"].items():
        if name in summary:
            entry = summary[name]
            lines.append(f"{label:<36} {show(entry['first']):>10} {show(entry['last']):>10}")
    if summary.get("curves_png"):
        lines.append(f"curves: {summary['curves_png']}")
    return "\n".join(lines)
