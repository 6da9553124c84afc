"""teacher_shared_prefix.py: its batch shares exactly the context, and the CPU smoke run (tiny
Qwen3-shaped teacher) writes a table and JSON in which sharing computes fewer positions for the same
log-probs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "benchmarks"))


def test_context_batch_shares_only_the_context():
    from nemo_distill.models.policy.head_scoring import shared_prefix_length
    from teacher_shared_prefix import context_batch

    batch = context_batch(5, context_len=6, own_len=4, vocab_size=1000, seed=2)
    assert batch.input_ids.shape == (5, 10) and batch.attention_mask.all()
    assert shared_prefix_length(batch.input_ids, batch.attention_mask) == 6
    assert batch.loss_mask.all()
    response_only = context_batch(5, context_len=6, own_len=4, vocab_size=1000, seed=2, response_len=3)
    assert torch.equal(response_only.input_ids, batch.input_ids)
    assert not response_only.loss_mask[:, :7].any() and response_only.loss_mask[:, 7:].all()
    assert response_only.first_target_row() == 6


@pytest.mark.slow
@pytest.mark.parametrize("targets_only", [False, True])
def test_cpu_smoke_run(tmp_path, tokenizer_cli_args, targets_only):
    command = [sys.executable, str(REPO / "benchmarks" / "teacher_shared_prefix.py"), "--device", "cpu", "--shape", "tiny",
               "--samples", "4", "--context-len", "24", "--prompt-len", "4", "--response-len", "4", "--teacher-batch", "2",
               "--repeats", "1", "--out", str(tmp_path)] + (["--targets-only"] if targets_only else [])
    result = subprocess.run(command + tokenizer_cli_args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "teacher_shared_prefix.json").read_text())
    modes = {row["mode"]: row for row in report["modes"]}
    assert modes["full"]["positions_computed"] == 4 * 32
    assert modes["shared_prefix"]["positions_computed"] == 2 * 24 + 4 * 8  # the context once per micro-batch of 2
    for row in modes.values():
        assert row["seconds"] > 0 and row["tokens_per_sec"] == pytest.approx(4 * 32 / row["seconds"])
    assert report["setting"]["targets_only"] is targets_only
    assert report["max_abs_logprob_diff"] < 1e-4  # fp32 on CPU: the same log-probs up to summation order
    assert "speed-up" in result.stdout
