"""benchmarks/refit.py (named apart from tests/unit/models/generation/test_refit.py: test basenames must be unique) runs end to end on CPU slots for both CPU transports and reports the bytes moved."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_cpu_refit_benchmark_split_placement(tmp_path, tiny_model_dir):
    command = [sys.executable, str(REPO / "benchmarks" / "refit.py"), "--model", tiny_model_dir, "--split", "--bucket-mb", "1",
               "--transports", "object_store", "auto", "--repeats", "1", "--out", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((tmp_path / "refit.json").read_text())["results"]
    assert [(row["transport"], row["resolved"]) for row in rows] == [("object_store", "object_store"), ("auto", "broadcast")]
    assert rows[0]["bytes"] == rows[1]["bytes"] > 0 and rows[1]["buckets"] > 1  # 1 MiB buckets: several
