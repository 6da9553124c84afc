"""Real overlap_generation runs: Ray, tiny models, CPU slots (marker ``slow``: about 30-40 s a run).

Split placement: three steps of distillation with ``distillation.overlap_generation=true``: the
staleness is 0, 1, 1, the wait and the background sampling are both timed, and the step-2
checkpoint (taken while step 3's batch was already drawn and sampling) resumes at step 3 with step
3's prompts, sampled again. Colocated (all roles on one slot, ``cluster.offload: auto`` resolving
to resident): the same staleness, and the generation worker never sleeps.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SPLIT = ["cluster.colocated=false", "cluster.cpu_slots_per_node=2", "cluster.inference_gpu_ids=[0]",
         "cluster.teacher_gpu_ids=[0]", "cluster.trainer_gpu_ids=[1]"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_overlap_generation_distillation_is_one_step_stale_and_resumes_without_skipping(tmp_path, tiny_model_dir, tiny_teacher_dir):
    args = [sys.executable, str(REPO / "examples" / "run_distillation.py"), "--config", str(REPO / "configs" / "distillation_tiny_cpu.yaml"),
            f"policy.model_name={tiny_model_dir}", f"teacher.model_name={tiny_teacher_dir}", "distillation.max_num_steps=3",
            "distillation.overlap_generation=true", "logger.exp_numbering=false", f"checkpointing.checkpoint_dir={tmp_path / 'ckpt'}",
            "checkpointing.save_period=1", "checkpointing.keep_top_k=null", *SPLIT]
    first = subprocess.run(args + [f"logger.log_dir={tmp_path / 'run1'}"], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    rows = _rows(tmp_path / "run1" / "metrics.jsonl")
    assert [row["train/rollout_staleness"] for row in rows] == [0.0, 1.0, 1.0]
    assert all(row["timing/train/generation_overlapped"] > 0 and "timing/train/generation" in row for row in rows)

    info = json.loads((tmp_path / "ckpt" / "step_2" / "training_info.json").read_text())
    assert info["dataloader"]["step_in_epoch"] == 2  # step 3's prompts, drawn during step 2, are not in the saved position

    shutil.rmtree(tmp_path / "ckpt" / "step_3")  # resume from the step-2 checkpoint
    second = subprocess.run(args + [f"logger.log_dir={tmp_path / 'run2'}"], capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "continuing at step 3" in second.stdout
    resumed = _rows(tmp_path / "run2" / "metrics.jsonl")
    assert [row["step"] for row in resumed] == [3] and resumed[0]["train/rollout_staleness"] == 0.0  # sampled again, on-policy
    problems = [[row["problem"] for row in _rows(tmp_path / run / "train_data_step3.jsonl")] for run in ("run1", "run2")]
    assert problems[0] == problems[1]  # the same prompts: nothing skipped


@pytest.mark.slow
def test_overlap_generation_colocated_keeps_the_roles_resident(tmp_path, tiny_model_dir, tiny_teacher_dir):
    args = [sys.executable, str(REPO / "examples" / "run_distillation.py"), "--config", str(REPO / "configs" / "distillation_tiny_cpu.yaml"),
            f"policy.model_name={tiny_model_dir}", f"teacher.model_name={tiny_teacher_dir}", "distillation.max_num_steps=3",
            "distillation.overlap_generation=true", "logger.exp_numbering=false", "checkpointing.enabled=false",
            "distillation.val_at_end=false", f"logger.log_dir={tmp_path / 'run'}"]  # colocated, cluster.offload=auto: the recipe's
    run = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = _rows(tmp_path / "run" / "metrics.jsonl")
    assert [row["train/rollout_staleness"] for row in rows] == [0.0, 1.0, 1.0]
    assert all(row["timing/train/generation_overlapped"] > 0 for row in rows)
    assert not any(key.startswith("timing/train/offload/") for row in rows for key in row)  # resident: nothing slept or moved
