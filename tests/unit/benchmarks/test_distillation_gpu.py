"""The distillation benchmark's split case runs end to end on CPU slots, refitting over a gloo broadcast group."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_cpu_smoke_run_of_the_split_case_with_broadcast_refit(tmp_path, tokenizer_cli_args):
    command = [sys.executable, str(REPO / "benchmarks" / "distillation_gpu.py"), "--device", "cpu", "--shape", "tiny", "--gpus", "2",
               "--steps", "2", "--max-new-tokens", "8", "--transports", "broadcast", "--only", "distill_split_broadcast",
               "--out", str(tmp_path)]
    command += tokenizer_cli_args
    result = subprocess.run(command, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    [row] = json.loads((tmp_path / "distillation_gpu.json").read_text())["results"]
    assert "error" not in row, row.get("error")
    assert row["case"] == "distill_split_broadcast" and row["steps"] == 2 and row["refit_s"] is not None
    config = (tmp_path / "distill_split_broadcast" / "config.yaml").read_text()
    assert "refit_transport: broadcast" in config and "colocated: false" in config
