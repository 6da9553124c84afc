"""The FSDP2 scaling / TP-correctness benchmark runs end to end on CPU (gloo), so a GPU session only runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_cpu_smoke_run_writes_results_and_tp_matches_one_worker(tmp_path, tokenizer_cli_args):
    command = [sys.executable, str(REPO / "benchmarks" / "fsdp2_scaling.py"), "--device", "cpu", "--shape", "tiny", "--gpus", "1", "2",
               "--tp", "--global-batch", "4", "--seq-len", "16", "--steps", "1", "--precision", "float32", "--out", str(tmp_path)]
    command += tokenizer_cli_args
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((tmp_path / "fsdp2_scaling.json").read_text())["results"]
    assert [(row["gpus"], row["tp"]) for row in rows] == [(1, 1), (2, 1), (2, 2)]
    for row in rows:
        assert row["step_time_s"] > 0 and len(row["losses"]) == 1
        # fp32: data and tensor parallel score the same tokens as one worker
        assert row["max_logprob_diff_vs_1gpu"] < 1e-4, row
    assert "max_logprob_diff_vs_1gpu" in result.stdout
