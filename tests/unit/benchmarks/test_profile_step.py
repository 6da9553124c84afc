"""profile_step.py: the CPU smoke run (tiny Qwen3-shaped models) writes its table, JSON and operator tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "benchmarks"))


def test_random_batch_masks_the_prompt():
    from profile_step import random_batch

    batch = random_batch(3, prompt_len=5, new_tokens=4, vocab_size=50, seed=1)
    assert batch.input_ids.shape == (3, 9) and int(batch.input_ids.max()) < 50
    assert batch.loss_mask[:, :5].sum() == 0 and batch.loss_mask[:, 5:].all() and batch.attention_mask.all()


def run_cpu_smoke(out: Path, tokenizer_cli_args: list[str], *args: str) -> tuple[dict, str]:
    """Run the script on CPU with tiny models; ``(profile_step.json, stdout)``."""
    command = [sys.executable, str(REPO / "benchmarks" / "profile_step.py"), "--device", "cpu", "--shape", "tiny", *args,
               "--out", str(out), *tokenizer_cli_args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return json.loads((out / "profile_step.json").read_text()), result.stdout


@pytest.mark.slow
def test_cpu_smoke_run(tmp_path, tokenizer_cli_args):
    report, stdout = run_cpu_smoke(tmp_path, tokenizer_cli_args, "--prompts", "4", "--micro-batch", "2", "--teacher-batch", "4",
                                   "--prompt-len", "16", "--new-tokens", "8")
    phases = {row["phase"]: row for row in report["phases"]}
    assert set(phases) == {"generation", "teacher_topk", "train"}
    for name, row in phases.items():
        tokens = row["generated_tokens"] if name == "generation" else 4 * 24
        assert row["seconds"] > 0 and row["tokens_per_sec"] == pytest.approx(tokens / row["seconds"])
        assert "Name" in (tmp_path / row["ops_file"]).read_text(), name
        assert "Self CPU" in (tmp_path / f"{name}_cpu_ops.txt").read_text(), name  # the table by host time
        assert "device_kernel_s" not in row and "host_waits" not in row  # GPU-only figures
    generation = phases["generation"]
    assert 4 <= generation["generated_tokens"] <= 4 * 8  # one response per prompt, at most new_tokens each
    assert generation["decode_step_ms"] >= 1000 * generation["seconds"] / 8
    assert 0 < phases["train"]["mfu"] < 1
    assert "== train: top operators" in stdout


@pytest.mark.slow
def test_cpu_smoke_run_of_one_phase(tmp_path, tokenizer_cli_args):
    report, _ = run_cpu_smoke(tmp_path, tokenizer_cli_args, "--prompts", "2", "--micro-batch", "2", "--prompt-len", "8",
                              "--new-tokens", "4", "--phases", "generation")
    assert [row["phase"] for row in report["phases"]] == ["generation"]
    assert not (tmp_path / "train_ops.txt").exists()
