"""End-to-end runs of examples/run_{distillation,grpo,sft}.py on CPU with tiny models (marker ``slow``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN = [sys.executable, str(REPO / "examples" / "run_distillation.py"), "--config", str(REPO / "configs" / "distillation_tiny_cpu.yaml")]


NON_COLOCATED = ["cluster.colocated=false", "cluster.cpu_slots_per_node=2", "cluster.inference_gpu_ids=[0]",
                 "cluster.teacher_gpu_ids=[0]", "cluster.trainer_gpu_ids=[1]"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, extra",
    [("distillation.sh", []), ("context_distillation.sh", []), ("distillation.sh", NON_COLOCATED), ("grpo.sh", []),
     ("grpo.sh", ["grpo.context_distillation.use_full_reward_baseline=false", "grpo.context_distillation.teacher_tau=0.1",
                  "loss_fn.loss_type=dr_grpo", "loss_fn.beta=0.01"]),
     ("sft.sh", [])],
    ids=["distillation", "context_distillation", "distillation-non-colocated", "grpo", "grpo-token-level-teacher-reference",
         "sft"],
)
def test_functional_script(script, extra, tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "WORK": str(tmp_path)}
    command = ["bash", str(REPO / "tests" / "functional" / script), *extra]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "OK" in result.stdout


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_sigkill_then_resume_continues_same_data_order(tmp_path, tiny_model_dir, tiny_teacher_dir):
    from nemo_distill.data.dataloader import PromptDataLoader
    from nemo_distill.data.datasets import DataSourceConfig, load_problems

    args = RUN + [
        f"policy.model_name={tiny_model_dir}", f"teacher.model_name={tiny_teacher_dir}", "distillation.max_num_steps=4",
        "distillation.val_at_end=false", f"checkpointing.checkpoint_dir={tmp_path / 'ckpt'}", "checkpointing.save_period=1",
        "checkpointing.keep_top_k=null",
    ]
    first = subprocess.Popen(args + [f"logger.log_dir={tmp_path / 'run1'}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True, text=True)
    deadline = time.time() + 300
    while not (tmp_path / "ckpt" / "step_2" / "training_info.json").is_file():
        assert first.poll() is None, f"run ended early: {first.stdout.read()[-3000:]}"
        assert time.time() < deadline, "no step_2 checkpoint within 300 s"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # the driver and everything it started in its session
    first.wait()

    second = subprocess.run(args + [f"logger.log_dir={tmp_path / 'run2'}"], capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "continuing at step 3" in second.stdout
    steps = [row["step"] for row in _read_jsonl(tmp_path / "run2" / "exp_001" / "metrics.jsonl")]
    assert steps == [3, 4]

    # Step 3 must train on the third batch of the seeded order, as an uninterrupted run would.
    records = load_problems(DataSourceConfig(num_samples=64), split="train", seed=42)
    loader = PromptDataLoader(records, batch_size=4, seed=42, shuffle=True)
    expected = [next(loader) for _ in range(3)][-1]
    rows = _read_jsonl(tmp_path / "run2" / "exp_001" / "train_data_step3.jsonl")
    assert [row["problem"] for row in rows[::2]] == [record.problem for record in expected]
