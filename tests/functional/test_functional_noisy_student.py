"""The noisy-student pipeline end to end on CPU (marker ``slow``): a tiny random model (hidden 64) on the
built-in arithmetic task, splits 16 / 32 / 16, K=4, base + 3 conditions trained with SFT for 2 steps
each on one cluster, the report files; then the same command again, which skips every phase."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN = [sys.executable, str(REPO / "examples" / "run_noisy_student.py"), "--config", str(REPO / "configs" / "noisy_student_arithmetic.yaml")]
TINY = ["noisy_student.splits.num_labelled=16", "noisy_student.splits.num_unlabelled=32", "noisy_student.splits.num_test=16",
        "noisy_student.conditions=[base,baseline,filtered,pseudo_only]", "noisy_student.trainers=[sft]", "noisy_student.compute.control=same_steps",
        "noisy_student.compute.steps=2", "noisy_student.compute.batch_size=4", "noisy_student.pseudo_label.num_samples=4",
        # a random model rarely agrees with itself: accept one vote in four so `filtered` trains on pseudo-labels too
        "noisy_student.pseudo_label.min_agreement=0.25", "noisy_student.pseudo_label.max_new_tokens=16",
        "noisy_student.eval.max_new_tokens=16", "policy.max_total_sequence_length=160", "data.max_input_seq_length=128",
        "pipeline.sft_lr=1e-3", "pipeline.save_checkpoints=false"]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_noisy_student_pipeline_end_to_end_then_resume(tmp_path):
    from nemo_distill.models.tiny import build_tiny_model

    model = build_tiny_model(tmp_path / "student", hidden_size=64, seed=0, initializer_range=0.2)
    out = tmp_path / "study"
    command = RUN + [f"policy.model_name={model}", f"pipeline.output_dir={out}", *TINY]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    report = json.loads((out / "report" / "report.json").read_text())
    assert [c["name"] for c in report["conditions"]] == ["base", "sft/baseline", "sft/filtered", "sft/pseudo_only"]
    assert all(c["n"] == 16 for c in report["conditions"])
    assert {(c["condition_a"], c["condition_b"]) for c in report["comparisons"]} == {("sft/filtered", "sft/baseline"), ("sft/pseudo_only", "sft/baseline"),
                                                                                         ("sft/baseline", "base")}
    for name in ("report.md", "accuracy.png", "agreement.png"):
        assert (out / "report" / name).stat().st_size > 0, name
    assert [len(_jsonl(out / "splits" / f"{s}.jsonl")) for s in ("labelled", "unlabelled", "test")] == [16, 32, 16]
    labels = _jsonl(out / "pseudo_labels" / "round1.jsonl")
    assert len(labels) == 32 and {row["k"] for row in labels} == {4}
    confident = sum(row["confident"] for row in labels)
    runs = {name: json.loads((out / "conditions" / name / "run.json").read_text()) for name in ("sft_baseline", "sft_filtered")}
    assert runs["sft_baseline"]["num_train_examples"] == 16 and runs["sft_filtered"]["num_train_examples"] == 16 + confident
    # pseudo_only: a random model labels few problems; under one batch (4) it is evaluated untrained, with a note
    pseudo_only = json.loads((out / "conditions" / "sft_pseudo_only" / "run.json").read_text())
    labelled = sum(row["pseudo_answer"] is not None for row in labels)
    assert pseudo_only["num_train_examples"] == labelled
    assert (pseudo_only["steps"], pseudo_only["note"] is not None) == ((0, True) if labelled < 4 else (2, False))
    for name in ("base", "sft_baseline", "sft_filtered", "sft_pseudo_only"):
        assert len(_jsonl(out / "conditions" / name / "predictions.jsonl")) == 16
    for name in ("sft_baseline", "sft_filtered"):
        assert [row["step"] for row in _jsonl(out / "conditions" / name / "metrics.jsonl")] == [1, 2]
    timings = json.loads((out / "timings.json").read_text())
    assert {"splits", "startup", "pseudo-labels round1", "evaluate base", "train sft/baseline", "report", "total"} <= set(timings)

    started = time.perf_counter()
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    for phase in ("splits", "base", "sft/baseline", "sft/filtered", "sft/pseudo_only", "pseudo-labels round1"):
        assert f"noisy-student: {phase}: skipped (finished earlier" in second.stdout, phase
    assert "ran: 0 phases" in second.stdout
    assert json.loads((out / "timings.json").read_text())["startup"] == timings["startup"]  # no worker was started again
    assert json.loads((out / "report" / "report.json").read_text()) == report
    assert time.perf_counter() - started < 60
