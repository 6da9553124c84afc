"""kill -9 during a checkpoint save, at every stage of ``start`` -> fill -> ``finalize``: the previous
checkpoint stays intact (byte for byte), the partial one is ignored and removed on resume.

A child process saves ``step_1`` (and, for the re-save cases, ``step_2``), then saves ``step_2`` and
SIGKILLs itself at the chosen point (a real ``kill -9``: no ``finally``, no ``atexit``). The test
process then resumes as a new run would.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_distill.utils.checkpoint import CheckpointingConfig, CheckpointManager

CHILD = r"""
import os, signal, sys
from pathlib import Path
import nemo_distill.utils.checkpoint as ck

root, kill_at, resave = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
manager = ck.CheckpointManager(ck.CheckpointingConfig(enabled=True, checkpoint_dir=root, keep_top_k=None))

def die(point):
    if point == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

def fill(tmp, step, arm):
    (tmp / "policy").mkdir()
    payload = bytes([step]) * (1 << 20)
    with open(tmp / "policy" / "weights.bin", "wb") as handle:
        handle.write(payload[: len(payload) // 2])
        handle.flush()
        if arm:
            die("mid_file")
        handle.write(payload[len(payload) // 2 :])
    (tmp / "config.yaml").write_text(f"step: {step}\n")

def save(step, arm):
    tmp = manager.start(step)
    if arm:
        die("after_start")
    fill(tmp, step, arm)
    if arm:
        die("after_files")
    manager.finalize(step, tmp, {"step": step})

save(1, False)
if resave:
    save(2, False)

write_durably, replace = ck._write_durably, os.replace
def hooked_write(file, text):
    write_durably(file, text)
    die("after_" + Path(file).name)              # after_training_info.json, after_manifest.json.tmp
def hooked_replace(src, dst):
    die("before_rename_" + Path(dst).name)       # before_rename_manifest.json / step_2 / old_step_2
    replace(src, dst)
    die("after_rename_" + Path(dst).name)
ck._write_durably, ck.os.replace = hooked_write, hooked_replace
save(2, True)
sys.exit(3)  # the kill point was never reached
"""

# (kill point, a step_2 existed before, the checkpoint a resume must pick)
CASES = [
    ("after_start", False, 1),
    ("mid_file", False, 1),
    ("after_files", False, 1),
    ("after_training_info.json", False, 1),
    ("after_manifest.json.tmp", False, 1),
    ("before_rename_manifest.json", False, 1),
    ("after_rename_manifest.json", False, 1),
    ("before_rename_step_2", False, 1),
    ("after_rename_step_2", False, 2),  # the rename is the commit point: the new step_2 is complete
    # re-saving an existing step_2: the old one moves aside, then the new one takes its name
    ("mid_file", True, 2),
    ("before_rename_old_step_2", True, 2),
    ("after_rename_old_step_2", True, 2),  # step_2 is missing: the aside copy is put back
    ("after_rename_step_2", True, 2),
]


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.mark.parametrize("kill_at, resave, expected_step", CASES, ids=[f"{c[0]}{'-resave' if c[1] else ''}" for c in CASES])
def test_kill_9_during_a_save_keeps_the_previous_checkpoint_and_resume_drops_the_partial_one(tmp_path, kill_at, resave, expected_step):
    root = tmp_path / "ckpt"
    result = subprocess.run([sys.executable, "-c", CHILD, str(root), kill_at, "1" if resave else "0"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == -9, f"child exited {result.returncode}, not killed at {kill_at}: {result.stderr[-2000:]}"

    manager = CheckpointManager(CheckpointingConfig(enabled=True, checkpoint_dir=str(root), keep_top_k=None))
    latest = manager.latest_valid_checkpoint()
    assert latest == root / f"step_{expected_step}"
    assert json.loads((latest / "training_info.json").read_text())["step"] == expected_step
    assert manager.verify(latest) is None and manager.verify(root / "step_1") is None
    weights = (latest / "policy" / "weights.bin").read_bytes()
    assert weights == bytes([expected_step]) * (1 << 20)  # whole, and the right one (old or new)
    leftovers = sorted(p.name for p in root.iterdir() if not p.name.startswith("step_"))
    assert leftovers == [], f"partial saves left behind: {leftovers}"
    # and the run can save again over the same step
    tmp = manager.start(2)
    (tmp / "weights.bin").write_bytes(b"new")
    assert manager.finalize(2, tmp, {"step": 2}) == root / "step_2" and manager.latest_valid_checkpoint() == root / "step_2"


def test_the_previous_checkpoint_is_byte_identical_after_a_killed_save(tmp_path):
    root = tmp_path / "ckpt"
    subprocess.run([sys.executable, "-c", CHILD.replace("save(2, True)", "print('x')"), str(root), "never", "0"], timeout=60)
    before = _tree_digest(root / "step_1")
    result = subprocess.run([sys.executable, "-c", CHILD.replace("save(1, False)", "pass"), str(root), "after_files", "0"],
                            capture_output=True, timeout=60)
    assert result.returncode == -9
    assert _tree_digest(root / "step_1") == before
