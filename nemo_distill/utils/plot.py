"""PNG curves of chosen metrics from a run's ``metrics.jsonl``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def plot_metric_curves(metrics_jsonl: Path, metric_names: list[str], out_png: Path) -> Path | None:
    """One subplot per metric (value vs step); metrics never logged are skipped with a warning.

    Returns the PNG path, or None when there is nothing to plot.
    """
    metrics_jsonl = Path(metrics_jsonl)
    if not metrics_jsonl.is_file():
        return None
    series: dict[str, list[tuple[int, float]]] = {name: [] for name in metric_names}
    for line in metrics_jsonl.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        for name in metric_names:
            if name in row:
                series[name].append((int(row["step"]), float(row[name])))
    present = [name for name in metric_names if series[name]]
    for name in metric_names:
        if not series[name]:
            log.warning("plot: metric %s was never logged; skipped", name)
    if not present:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(present), 1, figsize=(6, 2.4 * len(present)), squeeze=False)
    for axis, name in zip(axes[:, 0], present):
        steps, values = zip(*series[name])
        axis.plot(steps, values, marker="o", markersize=3)
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
