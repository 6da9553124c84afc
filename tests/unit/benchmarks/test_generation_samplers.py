"""generation_samplers.py: the CPU smoke run (tiny Qwen3-shaped model) times the three samplers and writes its table and JSON."""

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
               "--prompts", "3", "--prompt-len", "8", "--new-tokens", "6", "--repeats", "2", "--out", str(tmp_path),
               *tokenizer_cli_args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "generation_samplers.json").read_text())
    rows = {row["sampler"]: row for row in report["samplers"]}
    assert set(rows) == {"generate", "loop", "loop_repeat_kv"}
    for row in rows.values():
        assert len(row["seconds"]) == 2 and 3 <= row["generated_tokens"] <= 3 * 6
        assert row["tokens_per_sec"] == pytest.approx(row["generated_tokens"] / row["median_s"])
        assert row["ms_per_decode_step"] >= 1000 * row["median_s"] / 6
    assert "loop" in result.stdout and "tokens/s" in result.stdout
