"""eval_baseline's teacher prompts that cannot fit are a config error before any worker starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from nemo_distill.algorithms import grpo, runtime
from nemo_distill.algorithms.grpo_config import GRPOMasterConfig
from nemo_distill.config import ConfigError
from nemo_distill.config.cli import parse_command_line

REPO = Path(__file__).resolve().parents[3]
CONFIG = str(REPO / "configs" / "context_distill_sokoban_tiny_cpu.yaml")


def _config(tiny_model_dir: str, tmp_path: Path, *overrides: str):
    args = ["--config", CONFIG, f"policy.model_name={tiny_model_dir}", f"logger.log_dir={tmp_path / 'logs'}",
            "grpo.context_distillation.teacher_tau=0.1", "grpo.context_distillation.student_tau=0.1",
            "grpo.context_distillation.eval_baseline=true", *overrides]
    return parse_command_line(args, GRPOMasterConfig, default_config=CONFIG, description="test")


def _no_workers(*_, **__):
    raise AssertionError("Ray was started: the check must run before any worker")


def test_teacher_prompts_longer_than_the_limit_stop_setup_before_ray(tiny_model_dir, tmp_path, monkeypatch):
    # The board prompt (~250 tokens) fits 300; context + board does not.
    long_context = "Push every box onto a goal and never push a box into a corner. " * 12
    parsed = _config(tiny_model_dir, tmp_path, "data.max_input_seq_length=300",
                     f"grpo.context_distillation.context={long_context!r}")
    monkeypatch.setattr(runtime, "init_ray", _no_workers)
    with pytest.raises(ConfigError, match="data.max_input_seq_length") as err:
        grpo.setup(parsed.config, parsed.config_yaml)
    assert "eval_baseline" in str(err.value) and "300 tokens" in str(err.value)


def test_fitting_teacher_prompts_pass_the_check(tiny_model_dir, tmp_path, monkeypatch):
    parsed = _config(tiny_model_dir, tmp_path)  # the recipe's one-line context fits its 384 tokens
    monkeypatch.setattr(runtime, "init_ray", _no_workers)
    with pytest.raises(AssertionError, match="Ray was started"):  # got past the check, to the workers
        grpo.setup(parsed.config, parsed.config_yaml)
