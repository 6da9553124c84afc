"""compare_trl.py: the CPU smoke run of our side (and TRL's when importable), and its word-level tokenizer."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "benchmarks"))


def test_word_level_tokenizer_names_every_id(tmp_path):
    from compare_trl import word_level_tokenizer

    tokenizer = word_level_tokenizer(tmp_path, 300, eos_id=2, pad_id=0)
    assert tokenizer("w7 w49 w1")["input_ids"] == [7, 49, 1]
    # A word that starts with a special id's digits stays one token (the specials are spelled <eos> / <pad>):
    # with eos spelled "w2", "w25" used to split into "w2" + an unknown piece.
    assert tokenizer("w25 w201 w3")["input_ids"] == [25, 201, 3]
    assert tokenizer.decode([7, 49, 3]) == "w7 w49 w3"  # any sampled id decodes
    assert tokenizer.eos_token_id == 2 and tokenizer.pad_token_id == 0 and len(tokenizer) == 300
    reloaded = type(tokenizer).from_pretrained(tmp_path)
    assert reloaded("w25 w201 w3")["input_ids"] == [25, 201, 3]


@pytest.mark.slow
def test_cpu_smoke_run(tmp_path, tokenizer_cli_args):
    command = [sys.executable, str(REPO / "benchmarks" / "compare_trl.py"), "--device", "cpu", "--shape", "tiny", "--steps", "2",
               "--prompts", "4", "--micro-batch", "2", "--max-new-tokens", "8", "--prompt-len", "16", "--out", str(tmp_path)]
    result = subprocess.run(command + tokenizer_cli_args, capture_output=True, text=True, timeout=500)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "compare_trl.json").read_text())
    ours = report["ours"]
    assert "error" not in ours and len(ours["step_s"]) == 2 and ours["steady_step_s"] > 0
    assert ours["summary"]["teacher_bytes_per_token"] == 64 * 8 and ours["summary"]["generated_tokens"] > 0
    if importlib.util.find_spec("trl") is None:
        assert report["trl"] == {"side": "trl", "skipped": "trl not importable"}
    else:
        assert len(report["trl"]["step_s"]) == 2 and report["trl_over_ours_step_time"] > 0
    assert "TRL step / our step" in result.stdout or "running our side only" in result.stdout
