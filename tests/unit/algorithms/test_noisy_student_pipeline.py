"""The noisy-student pipeline's pure parts: config checks, per-run configs, SFT targets, report pairs,
pseudo-label accuracy per condition, saved splits, phase log, and pointing a runtime at a new run.
The whole pipeline end to end: tests/functional/test_functional_noisy_student.py."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nemo_distill.algorithms.noisy_student import ConditionRun
from nemo_distill.algorithms.noisy_student_pipeline import (
    NoisyStudentMasterConfig,
    PhaseLog,
    check_noisy_student_config,
    labels_accuracy,
    optimizer_for,
    report_pairs,
    retarget_runtime,
    run_folder,
    runtime_config,
    save_or_check_splits,
    trainer_config,
    training_records,
)
from nemo_distill.algorithms.pseudo_labels import PseudoLabeledProblem
from nemo_distill.config import ConfigError, load_config, validate
from nemo_distill.data.datasets import ProblemRecord
from nemo_distill.data.processors import ProcessedPrompt
from nemo_distill.data.splits import DataSplits
from nemo_distill.utils.logger import LoggerConfig

REPO = Path(__file__).resolve().parents[3]
CONFIGS = sorted((REPO / "configs").glob("noisy_student_*.yaml"))


def _cfg(path: Path = REPO / "configs" / "noisy_student_arithmetic.yaml") -> NoisyStudentMasterConfig:
    return validate(load_config(path), NoisyStudentMasterConfig)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate_and_pass_the_checks(path):
    cfg = _cfg(path)
    check_noisy_student_config(cfg)
    assert cfg.sft.num_prompts_per_step == cfg.grpo.num_prompts_per_step == cfg.noisy_student.compute.batch_size
    assert path.read_text().startswith("#") and "run_noisy_student.py" in path.read_text()


def test_shipped_configs_include_the_three_studies():
    assert {p.name for p in CONFIGS} >= {"noisy_student_arithmetic.yaml", "noisy_student_gsm8k.yaml", "noisy_student_smollm2_gpu.yaml"}


def test_loop_batch_must_equal_compute_batch():
    cfg = _cfg()
    cfg.sft.num_prompts_per_step = 3
    with pytest.raises(ConfigError, match=r"sft\.num_prompts_per_step.*compute\.batch_size is 8"):
        check_noisy_student_config(cfg)


def test_pool_smaller_than_splits_is_named():
    cfg = _cfg()
    cfg.data.default.num_samples = 10
    with pytest.raises(ConfigError, match=r"data\.default\.num_samples.*need 1200"):
        check_noisy_student_config(cfg)


def test_sft_gold_template_needs_answer_slot():
    cfg = _cfg()
    cfg.pipeline.sft_gold_template = "####"
    with pytest.raises(ConfigError, match="pipeline.sft_gold_template"):
        check_noisy_student_config(cfg)


def test_policy_lora_points_to_the_study_lora():
    cfg = _cfg()
    cfg.policy.lora.enabled = True
    with pytest.raises(ConfigError, match=r"policy\.lora\.enabled.*noisy_student\.lora\.enabled=true"):
        check_noisy_student_config(cfg)


def test_trainer_config_sets_steps_epochs_batch_and_turns_off_validation_and_checkpoints():
    cfg = _cfg()
    run = trainer_config(cfg, "sft", steps=7, num_examples=20)  # 20 // 8 = 2 batches per epoch -> ceil(7 / 2) = 4 epochs
    assert (run.sft.max_num_steps, run.sft.max_num_epochs, run.sft.num_prompts_per_step) == (7, 4, 8)
    assert (run.sft.val_period, run.sft.val_at_start, run.sft.val_at_end) == (0, False, False)
    assert run.policy.train_global_batch_size == 8 and run.checkpointing.enabled is False
    assert cfg.sft.max_num_steps != 7 or cfg is not run  # the original is untouched
    grpo = trainer_config(cfg, "grpo", steps=3, num_examples=8)
    assert (grpo.grpo.max_num_steps, grpo.grpo.max_num_epochs) == (3, 3)
    assert grpo.policy.train_global_batch_size == cfg.grpo.num_prompts_per_step * cfg.grpo.num_generations_per_prompt


def test_optimizer_lr_per_trainer_and_lora_multiplier():
    cfg = _cfg()
    assert optimizer_for(cfg, "sft").lr == pytest.approx(2e-5)
    assert optimizer_for(cfg, "grpo").lr == pytest.approx(1e-6)
    cfg.pipeline.sft_lr = None
    assert optimizer_for(cfg, "sft").lr == pytest.approx(cfg.policy.optimizer.lr)
    cfg.noisy_student.lora.enabled = True
    assert optimizer_for(cfg, "grpo").lr == pytest.approx(1e-6 * 10)
    started = runtime_config(cfg)
    assert started.policy.lora.enabled and started.policy.lora.rank == 8 and started.policy.lora.alpha == 32
    assert started.checkpointing.enabled is False and started.logger.log_dir.endswith("logs")


def test_training_records_sft_targets():
    worked = ProblemRecord("2+2?", "#### 4", "a", metadata={"response": "2 + 2 = 4\n#### 4"})
    templated = ProblemRecord("3+3?", "#### 6", "b")
    pseudo = ProblemRecord("1+1?", "one plus one is 2\n#### 2", "c")
    sft = training_records([worked, templated, pseudo], "sft")
    assert [r.metadata["response"] for r in sft] == ["2 + 2 = 4\n#### 4", "#### 6", "one plus one is 2\n#### 2"]
    assert [r.answer for r in sft] == ["#### 4", "#### 6", "one plus one is 2\n#### 2"]
    assert training_records([templated], "grpo")[0] is templated


def _label(record_id: str, answer: str | None, *, confident: bool, correct: bool | None) -> PseudoLabeledProblem:
    return PseudoLabeledProblem(record_id, "p", answer, 0.5, 2, 4, confident, gold="1", correct=correct)


def test_labels_accuracy_counts_the_labels_each_condition_trains_on():
    labels = [_label("a", "1", confident=True, correct=True), _label("b", "2", confident=False, correct=False),
              _label("c", "3", confident=False, correct=False), _label("d", None, confident=False, correct=False)]
    assert labels_accuracy("filtered", labels) == 1.0
    assert labels_accuracy("noisy_student", labels) == pytest.approx(1 / 3)  # "d" has no label: not trained on
    assert labels_accuracy("pseudo_only", labels) == pytest.approx(1 / 3)
    assert labels_accuracy("baseline", labels) is None and labels_accuracy("oracle", labels) is None
    assert labels_accuracy("filtered", [_label("a", "1", confident=True, correct=None)]) is None


def test_report_pairs():
    names = ["base", "sft/baseline", "sft/filtered", "grpo/baseline", "grpo/filtered"]
    assert report_pairs(names, ["sft", "grpo"]) == [
        ("sft/filtered", "sft/baseline"), ("sft/baseline", "base"), ("grpo/filtered", "grpo/baseline"), ("grpo/baseline", "base"),
        ("sft/baseline", "grpo/baseline"), ("sft/filtered", "grpo/filtered")]
    assert report_pairs(["sft/filtered", "sft/oracle"], ["sft"]) is None  # no baseline: every pair


def test_run_folder_names():
    assert run_folder(Path("o"), ConditionRun("base", None, 1)) == Path("o/conditions/base")
    assert run_folder(Path("o"), ConditionRun("filtered", "grpo", 2)) == Path("o/conditions/grpo_filtered_round2")


def _splits(ids: str) -> DataSplits:
    records = [ProblemRecord(f"q{i}", str(i), i) for i in ids]
    return DataSplits(records[:2], records[2:4], records[4:])


def test_splits_saved_then_reused_then_mismatch_named(tmp_path):
    assert save_or_check_splits(_splits("abcdef"), tmp_path) is False
    rows = [json.loads(line) for line in (tmp_path / "test.jsonl").read_text().splitlines()]
    assert [row["record_id"] for row in rows] == ["e", "f"] and rows[0]["problem"] == "qe"
    assert save_or_check_splits(_splits("abcdef"), tmp_path) is True
    with pytest.raises(ConfigError, match=r"pipeline\.output_dir.*labelled"):
        save_or_check_splits(_splits("xbcdef"), tmp_path)


def test_phase_log_keeps_times_across_runs(tmp_path, capsys):
    log = PhaseLog(tmp_path / "timings.json")
    log.done("splits", 1.234, labelled=2)
    again = PhaseLog(tmp_path / "timings.json")
    assert again.phases == {"splits": {"seconds": 1.23, "labelled": 2}}
    PhaseLog.skipped("splits", tmp_path)
    assert "splits: skipped (finished earlier" in capsys.readouterr().out


@dataclass
class _FakePolicy:
    resets: list = field(default_factory=list)

    def reset(self, optimizer_cfg=None, scheduler_cfg=None, total_steps=None):
        self.resets.append((optimizer_cfg, scheduler_cfg, total_steps))


def test_retarget_runtime_starts_a_new_run_on_the_same_workers(tmp_path):
    from nemo_distill.algorithms.runtime import Runtime
    from nemo_distill.utils.logger import Logger

    cfg = trainer_config(_cfg(), "sft", steps=3, num_examples=16)
    cfg.logger = LoggerConfig(tensorboard_enabled=False, stdout_enabled=False)
    old_dir = tmp_path / "old"
    policy = _FakePolicy()
    rt = Runtime(cfg=cfg, loop=cfg.grpo, config_yaml="", tokenizer=None, train_prompts=[], val_prompts=["v"], train_loader=None,
                 policy=policy, frozen=None, generation=None, refitter=None, cluster=None, environment=None,
                 logger=Logger(cfg.logger, old_dir), run_dir=old_dir, checkpoints=None, timer=None, start_step=5, num_trainer_workers=1,
                 generation_is_stale=False, consecutive_skipped_steps=2, skipped_steps=3, history=[{"step": 4}])
    new_dir = tmp_path / "conditions" / "sft_baseline"
    new_dir.mkdir(parents=True)
    (new_dir / "metrics.jsonl").write_text('{"step": 1}\n')  # a crashed earlier attempt: starts over
    prompts = [ProcessedPrompt(ProblemRecord(f"q{i}", "1", str(i)), "", "", [1], False) for i in range(16)]
    retarget_runtime(rt, cfg=cfg, loop=cfg.sft, train_prompts=prompts, run_dir=new_dir, optimizer_cfg=cfg.policy.optimizer, total_steps=3)
    assert rt.loop is cfg.sft and rt.run_dir == new_dir and rt.logger.run_dir == new_dir
    assert (rt.start_step, rt.history, rt.skipped_steps, rt.consecutive_skipped_steps) == (1, [], 0, 0)
    assert rt.generation_is_stale and rt.val_prompts == [] and len(rt.train_loader) == 2 and rt.max_steps == 3
    assert (new_dir / "metrics.jsonl").read_text() == ""
    assert policy.resets == [(cfg.policy.optimizer, cfg.policy.scheduler, 3)]
    rt.logger.close()
