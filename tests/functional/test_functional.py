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
    [("distillation.sh", []), ("context_distillation.sh", []),
     ("distillation.sh", [*NON_COLOCATED, "policy.generation.hf_sampler=loop"]),  # our token loop, refit by broadcast
     ("grpo.sh", []),
     ("grpo.sh", ["grpo.context_distillation.use_full_reward_baseline=false", "grpo.context_distillation.teacher_tau=0.1",
                  "loss_fn.loss_type=dr_grpo", "loss_fn.beta=0.01", "grpo.context_distillation.eval_baseline=true",
                  "grpo.context_distillation.context='Answer with the number only. '",
                  "teacher.logprob_shared_prefix_min_tokens=8"]),  # the short context: scored once per micro-batch
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
    if "grpo.context_distillation.eval_baseline=true" in extra:  # student vs teacher-with-context, logged at step 0
        baseline = _read_jsonl(tmp_path / "logs" / "metrics.jsonl")[0]
        assert baseline["step"] == 0 and {"eval/math/baseline_student/avg", "eval/math/baseline_teacher/avg",
                                          "eval/math/baseline_diff"} <= baseline.keys(), baseline
        assert (tmp_path / "logs" / "val_data_baseline_teacher.jsonl").is_file()


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


def _kill_at_a_random_point(args: list[str], checkpoint_dir: Path, rng, log: list[str]) -> bool:
    """Start a run, SIGKILL it (with everything it started) at a random moment after a random step's
    checkpoint appears; returns False when the run finished before the chosen moment."""
    run = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, text=True)
    target = checkpoint_dir / f"step_{rng.choice([1, 2])}" / "training_info.json"
    delay = rng.uniform(0.0, 4.0)  # lands anywhere in the next step: generation, teacher, training, the save
    log.append(f"kill {delay:.2f} s after {target.parent.name}")
    deadline = time.time() + 300
    while not target.is_file():
        if run.poll() is not None:
            output = run.stdout.read()
            assert run.returncode == 0, f"{log}: run failed: {output[-3000:]}"
            return False
        assert time.time() < deadline, f"{log}: no {target} within 300 s"
        time.sleep(0.1)
    time.sleep(delay)
    os.killpg(run.pid, signal.SIGKILL)  # the driver and everything it started in its session
    run.wait()
    run.stdout.close()
    return True


@pytest.mark.slow
@pytest.mark.timeout(900)  # four driver starts (reference, two killed, the last resume): 4-5 min on 2 busy cores
def test_sigkill_at_random_points_then_resume_matches_an_uninterrupted_sampled_run(tmp_path, tiny_model_dir, tiny_teacher_dir):
    """Sampling on (temperature 1, ``policy.generation.seed``): kill -9 at random points, resume, and every
    step's loss, reward and sampled responses equal those of a run that was never interrupted.

    CPU fp32 with the same worker layout runs the same kernels in the same order, and the sampler's
    state is the per-call seed (``seed + generate_calls``, restored from the checkpoint), so the
    values must agree to float round-off of the JSON text (rel 1e-9) and the samples exactly.
    """
    import random

    common = RUN + [
        f"policy.model_name={tiny_model_dir}", f"teacher.model_name={tiny_teacher_dir}", "distillation.max_num_steps=3",
        "distillation.val_at_end=false", "checkpointing.save_period=1", "checkpointing.keep_top_k=null",
        "policy.generation.temperature=1.0", "policy.generation.seed=1234", "logger.exp_numbering=false",
    ]

    def args(name: str) -> list[str]:
        return common + [f"checkpointing.checkpoint_dir={tmp_path / name / 'ckpt'}", f"logger.log_dir={tmp_path / name / 'logs'}"]

    reference = subprocess.run(args("reference"), capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stdout[-3000:] + reference.stderr[-3000:]

    seed = random.randrange(2**31)
    rng, log = random.Random(seed), [f"kill points from random seed {seed}"]
    kills = 0
    for _ in range(2):
        if not _kill_at_a_random_point(args("killed"), tmp_path / "killed" / "ckpt", rng, log):
            break
        kills += 1
    assert kills >= 1, f"{log}: the run finished before any kill"
    final = subprocess.run(args("killed"), capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, f"{log}\n" + final.stdout[-3000:] + final.stderr[-3000:]

    expected = _read_jsonl(tmp_path / "reference" / "logs" / "metrics.jsonl")
    resumed = _read_jsonl(tmp_path / "killed" / "logs" / "metrics.jsonl")  # the resumed run keeps its run dir
    assert [row["step"] for row in resumed] == [1, 2, 3], log
    for want, got in zip(expected, resumed):
        for name in ("train/loss", "train/reward_mean", "train/grad_norm", "train/mean_gen_tokens_per_sample"):
            assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-12), (log, want["step"], name)
        sample_file = f"train_data_step{want['step']}.jsonl"
        want_rows = _read_jsonl(tmp_path / "reference" / "logs" / sample_file)
        got_rows = _read_jsonl(tmp_path / "killed" / "logs" / sample_file)
        assert [row["response"] for row in got_rows] == [row["response"] for row in want_rows], (log, sample_file)
    # sampling really was on: two samples of one prompt differ somewhere in the run
    rows = [row for step in (1, 2, 3) for row in _read_jsonl(tmp_path / "reference" / "logs" / f"train_data_step{step}.jsonl")]
    assert any(a["response"] != b["response"] for a, b in zip(rows[::2], rows[1::2]))


@pytest.mark.slow
@pytest.mark.parametrize("target", ["trainer:0:train:2", "teacher:0:get_topk_logits:2", "inference:0:generate:2"],
                         ids=["trainer", "teacher", "generation"])
def test_a_worker_killed_mid_step_stops_the_driver_naming_role_and_rank(target, tmp_path, tiny_model_dir, tiny_teacher_dir):
    """kill -9 of one worker in step 2 (the NEMO_DISTILL_TEST_KILL_WORKER_AT_CALL hook of worker_group):
    the driver exits non-zero within 60 s of step 1's metrics row, naming the role and rank."""
    role, rank = target.split(":")[:2]
    args = RUN + [f"policy.model_name={tiny_model_dir}", f"teacher.model_name={tiny_teacher_dir}", "distillation.max_num_steps=3",
                  "distillation.val_at_end=false", "checkpointing.enabled=false", f"logger.log_dir={tmp_path}",
                  "logger.exp_numbering=false"]
    env = {**os.environ, "NEMO_DISTILL_TEST_KILL_WORKER_AT_CALL": target}
    run = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, text=True)
    try:
        deadline = time.time() + 300
        while not ((tmp_path / "metrics.jsonl").is_file() and (tmp_path / "metrics.jsonl").read_text().strip()):
            assert run.poll() is None, f"run ended before step 1 finished: {run.stdout.read()[-3000:]}"
            assert time.time() < deadline, "step 1 did not finish within 300 s"
            time.sleep(0.2)
        step_1_done = time.time()
        output, _ = run.communicate(timeout=90)  # generous for the assertion below to report
        elapsed = time.time() - step_1_done
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert run.returncode not in (0, None), output[-3000:]
    assert elapsed < 60, f"driver took {elapsed:.0f} s to exit after the worker died"
    assert f"{role} worker rank {rank} died" in output, output[-3000:]
    assert [row["step"] for row in _read_jsonl(tmp_path / "metrics.jsonl")] == [1]
