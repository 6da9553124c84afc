"""issue16_pending.sh: part a's CPU smoke run (SMOKE=1, tiny shape) runs all three measurements, keeps their
JSON in the snapshot archive and deletes the random models' weights; a wrong part is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "benchmarks" / "issue16_pending.sh"


@pytest.mark.slow
def test_part_a_cpu_smoke_run(tmp_path, tokenizer_cli_args):
    env = {**os.environ, "SMOKE": "1", "PY": sys.executable, "OUT": str(tmp_path)}
    if tokenizer_cli_args:
        env["TOK"] = tokenizer_cli_args[1]
    result = subprocess.run(["bash", str(SCRIPT), "a"], cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    samplers = json.loads((tmp_path / "gs" / "generation_samplers.json").read_text())
    assert {row["sampler"] for row in samplers["samplers"]} == {"loop", "loop_repeat_kv"}
    phases = json.loads((tmp_path / "prof" / "profile_step.json").read_text())["phases"]
    assert [row["phase"] for row in phases] == ["teacher_topk", "train"]
    fused = json.loads((tmp_path / "prof_fused_norm" / "profile_step.json").read_text())
    assert "teacher.fused_rms_norm=true" in fused["setting"]["overrides"] and len(fused["phases"]) == 2
    windowed = json.loads((tmp_path / "prof_ac" / "profile_step.json").read_text())
    assert "policy.train_head_chunk_rows=64" in windowed["setting"]["overrides"]
    assert not list(tmp_path.rglob("*.safetensors"))  # the random models' weights never come back
    with tarfile.open(tmp_path / "issue16_a.tgz") as archive:
        names = archive.getnames()
    assert {"./gs/generation_samplers.json", "./prof/profile_step.json", "./prof_ac/profile_step.json",
            "./prof_fused_norm/profile_step.json"} <= set(names)
    assert "teacher_topk" in result.stdout and "loop_repeat_kv" in result.stdout


def test_an_unknown_part_is_refused(tmp_path):
    result = subprocess.run(["bash", str(SCRIPT), "z"], cwd=REPO, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "SMOKE": "1", "PY": sys.executable, "OUT": str(tmp_path)})
    assert result.returncode == 2 and "unknown part 'z'" in result.stderr
