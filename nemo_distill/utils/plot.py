"""PNG curves of chosen metrics from a run's ``metrics.jsonl``."""

from __future__ import annotations

import logging
from pathlib import Path

from nemo_distill.utils.logger import read_metrics_file

log = logging.getLogger(__name__)


def plot_metric_curves(metrics_jsonl: Path, metric_names: list[str], out_png: Path) -> Path | None:
    """One subplot per metric (value vs step); metrics never logged are skipped with a warning.

    Returns the PNG path, or None when there is nothing to plot (no file, or none of the metrics
    was ever logged). Renders with matplotlib's Agg canvas, so it works without a display.
    """
    metrics_jsonl = Path(metrics_jsonl)
    if not metrics_jsonl.is_file():
        return None
    # A resumed run may log a step twice; the later row wins, as in the run's own bookkeeping.
    series: dict[str, dict[int, float]] = {name: {} for name in metric_names}
    for row in read_metrics_file(metrics_jsonl):
        for name in metric_names:
            if name in row and "step" in row:
                # null = a non-finite value (Logger.log_metrics): a gap in the curve
                series[name][int(row["step"])] = float("nan") if row[name] is None else float(row[name])
    present = [name for name in metric_names if series[name]]
    for name in metric_names:
        if not series[name]:
            log.warning("plot: metric %s was never logged; skipped", name)
    if not present:
        return None
    # A bare Figure renders with Agg and never touches pyplot's global backend or open windows.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 2.4 * len(present)))
    axes = fig.subplots(len(present), 1, squeeze=False)
    for axis, name in zip(axes[:, 0], present):
        steps, values = zip(*sorted(series[name].items()))
        axis.plot(steps, values, marker="o", markersize=3)
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    return out_png
