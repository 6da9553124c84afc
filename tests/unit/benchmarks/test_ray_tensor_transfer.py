"""ray_tensor_transfer.py: the CPU smoke run times every hop with both serializers and writes its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_cpu_smoke_run(tmp_path):
    command = [sys.executable, str(REPO / "benchmarks" / "ray_tensor_transfer.py"), "--rows", "4", "--tokens", "16", "--k", "8",
               "--repeats", "1", "--out", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "ray_tensor_transfer.json").read_text())
    assert report["payload_mb"] == pytest.approx(4 * 16 * 8 * 8 / 1e6)
    for serializer in ("torch", "bytes"):
        assert set(report["seconds"][serializer]) == {"fetch", "send", "pass_ref"}
        assert all(seconds > 0 for seconds in report["seconds"][serializer].values())
    assert "bytes" in result.stdout and "torch" in result.stdout
