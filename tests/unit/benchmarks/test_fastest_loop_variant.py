"""fastest_loop_variant.py: the overrides of the loop variant with the smallest median time."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "benchmarks"))

from fastest_loop_variant import fastest_overrides  # noqa: E402


def test_the_fastest_loop_variant_wins_and_generate_is_not_a_loop():
    report = {"samplers": [{"sampler": "generate", "median_s": 0.1}, {"sampler": "loop", "median_s": 1.0},
                           {"sampler": "loop_matmul", "median_s": 0.7}, {"sampler": "loop_matmul_fused", "median_s": 0.8}]}
    assert fastest_overrides(report) == ["policy.generation.hf_decode_attention=matmul"]
    report["samplers"][3]["median_s"] = 0.6
    assert fastest_overrides(report) == ["policy.generation.hf_decode_attention=matmul", "policy.generation.hf_fused_sampling=true"]
    assert fastest_overrides({"samplers": [{"sampler": "loop", "median_s": 1.0}]}) == []
    assert fastest_overrides({}) == []


def test_a_missing_file_prints_nothing(tmp_path):
    script = REPO / "benchmarks" / "fastest_loop_variant.py"
    missing = subprocess.run([sys.executable, str(script), str(tmp_path / "none.json")], capture_output=True, text=True)
    assert missing.returncode == 0 and missing.stdout.strip() == "" and "plain loop" in missing.stderr
    (tmp_path / "gs.json").write_text(json.dumps({"samplers": [{"sampler": "loop_matmul", "median_s": 0.5}]}))
    found = subprocess.run([sys.executable, str(script), str(tmp_path / "gs.json")], capture_output=True, text=True)
    assert found.stdout.strip() == "policy.generation.hf_decode_attention=matmul"
