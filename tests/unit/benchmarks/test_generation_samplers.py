"""generation_samplers.py: the CPU smoke run (tiny Qwen3-shaped model) times every sampler, profiles
one more call of each (``--profile``) and writes its table, op tables and JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_cpu_smoke_run(tmp_path, tokenizer_cli_args):
    command = [sys.executable, str(REPO / "benchmarks" / "generation_samplers.py"), "--device", "cpu", "--shape", "tiny",
               "--prompts", "3", "--prompt-len", "8", "--new-tokens", "6", "--repeats", "2", "--profile", "--out", str(tmp_path),
               *tokenizer_cli_args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "generation_samplers.json").read_text())
    rows = {row["sampler"]: row for row in report["samplers"]}
    assert set(rows) == {"generate", "loop", "loop_repeat_kv", "loop_fused", "loop_matmul", "loop_matmul_fused"}
    for name, row in rows.items():
        assert len(row["seconds"]) == 2 and 3 <= row["generated_tokens"] <= 3 * 6
        assert row["tokens_per_sec"] == pytest.approx(row["generated_tokens"] / row["median_s"])
        assert row["ms_per_decode_step"] >= 1000 * row["median_s"] / 6
        profile = row["profile"]
        assert 1 <= profile["decode_steps"] <= 6 and profile["device_ms_per_step"] == 0 and profile["device_busy"] is None
        assert 0 < profile["cpu_ms_per_step"] and 0 < profile["wall_ms_per_step"]
        assert profile["host_wait_ms_per_step"] == 0 and profile["host_busy"] == 1  # no GPU to wait for
        ops = (tmp_path / profile["ops_table"]).read_text()
        assert profile["ops_table"] == f"{name}_ops.txt" and "Self CPU time total" in ops
        assert "aten::" in ops and len([line for line in ops.splitlines() if "aten::" in line]) <= 30  # top 30 rows
    assert "loop_fused" in result.stdout and "loop_matmul" in result.stdout and "tokens/s" in result.stdout and "per decode step" in result.stdout
