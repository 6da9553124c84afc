"""GRPO config: the shipped YAMLs load and pass the checks; each cross-section check names its key;
``examples/run_grpo.py --print-config`` exits 0, or 2 with one ``error:`` line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nemo_distill.algorithms.grpo_config import (
    GRPOMasterConfig,
    check_grpo_config,
    needs_frozen_model,
    resolve_context,
    samples_per_step,
)
from nemo_distill.config import ConfigError, apply_overrides, load_config, validate, with_schema_defaults

REPO = Path(__file__).resolve().parents[3]
MATH_CONFIG = REPO / "configs" / "grpo_math.yaml"
TINY_CONFIG = REPO / "configs" / "grpo_tiny_cpu.yaml"
RUN_GRPO = REPO / "examples" / "run_grpo.py"


def config_with(*overrides: str, path: Path = MATH_CONFIG) -> GRPOMasterConfig:
    cfg = with_schema_defaults(load_config(path), GRPOMasterConfig)
    return validate(apply_overrides(cfg, list(overrides)), GRPOMasterConfig)


def test_math_config_values():
    cfg = config_with()
    assert (cfg.grpo.num_prompts_per_step, cfg.grpo.num_generations_per_prompt) == (8, 8)
    assert cfg.policy.train_global_batch_size == samples_per_step(cfg) == 64
    assert cfg.loss_fn.loss_type == "grpo" and cfg.loss_fn.dual_clip_c is None and cfg.loss_fn.beta == 0.0
    assert cfg.teacher.model_name == cfg.policy.model_name
    assert cfg.grpo.context_distillation.enabled is False and not needs_frozen_model(cfg)
    check_grpo_config(cfg)


def test_tiny_cpu_config_inherits_math():
    cfg = config_with(path=TINY_CONFIG)
    assert cfg.policy.model_name == "/tmp/tiny-student" and cfg.teacher.model_name == "/tmp/tiny-student"
    assert cfg.policy.train_global_batch_size == 16 and cfg.policy.generation.max_new_tokens == 16
    assert cfg.loss_fn.loss_type == "grpo" and cfg.env.type == "math"  # from grpo_math.yaml
    check_grpo_config(cfg)


@pytest.mark.parametrize("path", [MATH_CONFIG, TINY_CONFIG], ids=["math", "tiny_cpu"])
@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo", "bnpo"])
def test_loss_types_and_minibatches_pass(path, loss_type):
    # Minibatches: a train batch that divides prompts x generations is fine (several updates per step).
    cfg = config_with(f"loss_fn.loss_type={loss_type}", "policy.train_global_batch_size=8", "loss_fn.dual_clip_c=3.0",
                      "loss_fn.clip_eps_high=0.28", path=path)
    check_grpo_config(cfg)


@pytest.mark.parametrize("size", [3, 7, 128])
def test_train_batch_must_divide_samples(size):
    cfg = config_with(f"policy.train_global_batch_size={size}", "policy.train_micro_batch_size=1")
    with pytest.raises(ConfigError) as info:
        check_grpo_config(cfg)
    assert info.value.key_path == "policy.train_global_batch_size"
    assert "grpo.num_prompts_per_step * grpo.num_generations_per_prompt = 64" in str(info.value)


@pytest.mark.parametrize("value", [1.0, 0.5, -2.0])
def test_dual_clip_must_exceed_one(value):
    cfg = config_with(f"loss_fn.dual_clip_c={value}")
    with pytest.raises(ConfigError) as info:
        check_grpo_config(cfg)
    assert info.value.key_path == "loss_fn.dual_clip_c" and "> 1" in str(info.value)


def test_bad_loss_type_and_negative_clip_rejected_by_schema():
    with pytest.raises(ConfigError) as info:
        config_with("loss_fn.loss_type=ppo")
    assert info.value.key_path == "loss_fn.loss_type"
    with pytest.raises(ConfigError) as info:
        config_with("loss_fn.clip_eps_low=-0.1")
    assert info.value.key_path == "loss_fn.clip_eps_low"


def test_eval_baseline_needs_teacher_tau():
    cfg = config_with("grpo.context_distillation.eval_baseline=true")
    with pytest.raises(ConfigError) as info:
        check_grpo_config(cfg)
    assert info.value.key_path == "grpo.context_distillation.eval_baseline" and "teacher_tau" in str(info.value)
    check_grpo_config(config_with("grpo.context_distillation.eval_baseline=true", "grpo.context_distillation.teacher_tau=1.0"))


def test_live_teacher_needs_full_reward_baseline():
    cfg = config_with("grpo.context_distillation.teacher_tau=1.0", "grpo.context_distillation.teacher_source=live",
                      "grpo.context_distillation.use_full_reward_baseline=false")
    with pytest.raises(ConfigError) as info:
        check_grpo_config(cfg)
    assert info.value.key_path == "grpo.context_distillation.teacher_source"
    live = config_with("grpo.context_distillation.teacher_tau=1.0", "grpo.context_distillation.teacher_source=live")
    check_grpo_config(live)
    assert not needs_frozen_model(live)


def test_frozen_model_for_reference_or_frozen_teacher():
    assert needs_frozen_model(config_with("loss_fn.beta=0.01"))
    assert needs_frozen_model(config_with("grpo.context_distillation.teacher_tau=1.0"))
    assert not needs_frozen_model(config_with("grpo.context_distillation.student_tau=1.0"))


def test_context_file(tmp_path):
    context = tmp_path / "context.txt"
    context.write_text("Think step by step.\n")
    cfg = config_with(f"grpo.context_distillation.context_file={context}", "grpo.context_distillation.context=ignored")
    check_grpo_config(cfg)
    assert resolve_context(cfg.grpo.context_distillation) == "Think step by step.\n"
    missing = config_with(f"grpo.context_distillation.context_file={tmp_path / 'missing.txt'}")
    with pytest.raises(ConfigError) as info:
        check_grpo_config(missing)
    assert info.value.key_path == "grpo.context_distillation.context_file"


def _run_grpo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUN_GRPO), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("path", [MATH_CONFIG, TINY_CONFIG], ids=["math", "tiny_cpu"])
def test_print_config_exits_0(path):
    result = _run_grpo("--config", str(path), "--print-config", "loss_fn.loss_type=dapo")
    assert result.returncode == 0, result.stderr
    assert "loss_type: dapo" in result.stdout and "context_distillation:" in result.stdout


@pytest.mark.parametrize(
    "override, key",
    [
        ("policy.train_global_batch_size=7", "policy.train_global_batch_size"),  # check_grpo_config
        ("loss_fn.loss_type=ppo", "loss_fn.loss_type"),  # the schema
    ],
)
def test_print_config_bad_override_exits_2_with_one_error_line(override, key):
    result = _run_grpo("--config", str(MATH_CONFIG), "--print-config", override)
    assert result.returncode == 2, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and key in lines[0]
