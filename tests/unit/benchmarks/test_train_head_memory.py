"""train_head_memory.py: the CPU run (tiny vocabulary) measures each setting in its own process and
the windowed output layer gives the same loss as full logits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_cpu_run_off_and_windowed(tmp_path):
    command = [sys.executable, str(REPO / "benchmarks" / "train_head_memory.py"), "--vocab", "512", "--micro-batch", "2",
               "--seq-len", "32", "--rows", "0", "8", "--losses", "sft", "distill", "--out", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "train_head_memory.json").read_text())
    rows = {(row["loss"], row["rows"]): row for row in report["results"]}
    assert set(rows) == {("sft", 0), ("sft", 8), ("distill", 0), ("distill", 8)}
    for loss in ("sft", "distill"):
        off, on = rows[(loss, 0)], rows[(loss, 8)]
        assert not off["windowed"] and on["windowed"], loss
        assert on["loss_value"] == pytest.approx(off["loss_value"], rel=1e-5), loss
        assert off["step_seconds"] > 0 and on["step_cpu_seconds"] > 0 and off["peak_added_mib"] >= 0
    assert report["setting"]["vocab"] == 512 and "peak +MiB" in result.stdout
