"""check_distillation_config: settings that would be accepted and ignored are rejected (issue 11, item 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nemo_distill.algorithms.distillation_config import DistillationMasterConfig, check_distillation_config
from nemo_distill.config import ConfigError, apply_overrides, load_config, validate, with_schema_defaults
from nemo_distill.models.policy.config import TeacherConfig

REPO = Path(__file__).resolve().parents[3]
BASE_CONFIG = REPO / "configs" / "distillation_math.yaml"
# Distillation configs only (GRPO / SFT configs have their own schema).
ALL_CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if "distillation" in p.name)
CONTEXT = "distillation.context_distillation.enabled=true"


def config_with(*overrides: str) -> DistillationMasterConfig:
    cfg = with_schema_defaults(load_config(BASE_CONFIG), DistillationMasterConfig)
    return validate(apply_overrides(cfg, list(overrides)), DistillationMasterConfig)


@pytest.mark.parametrize("mode", [(), (CONTEXT,)], ids=["on_policy", "context"])
@pytest.mark.parametrize("turns", [2, 5])
def test_max_rollout_turns_other_than_one_is_rejected_in_every_mode(mode, turns):
    cfg = config_with(*mode, f"distillation.max_rollout_turns={turns}")
    with pytest.raises(ConfigError) as raised:
        check_distillation_config(cfg)
    assert raised.value.key_path == "distillation.max_rollout_turns"
    assert f"must be 1, got {turns}" in str(raised.value) and "multi-turn rollouts are not implemented" in str(raised.value)


def test_teacher_length_different_from_the_policy_is_rejected_outside_context_mode():
    cfg = config_with("policy.max_total_sequence_length=512", "teacher.max_total_sequence_length=300")
    with pytest.raises(ConfigError) as raised:
        check_distillation_config(cfg)
    assert raised.value.key_path == "teacher.max_total_sequence_length"
    message = str(raised.value)
    assert "is 300 but policy.max_total_sequence_length is 512" in message and "scores the student's own sequences" in message


def test_teacher_length_equal_or_default_is_accepted_outside_context_mode():
    check_distillation_config(config_with("policy.max_total_sequence_length=512", "teacher.max_total_sequence_length=512"))
    default = TeacherConfig().max_total_sequence_length
    check_distillation_config(config_with("policy.max_total_sequence_length=512", f"teacher.max_total_sequence_length={default}"))


def test_teacher_length_may_differ_in_context_mode():
    # The context teacher reads prefix + response, which may be longer than the student's prompt + response.
    check_distillation_config(config_with(CONTEXT, "policy.max_total_sequence_length=512", "teacher.max_total_sequence_length=900"))


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_passes_the_checks(path):
    cfg = validate(with_schema_defaults(load_config(path), DistillationMasterConfig), DistillationMasterConfig)
    check_distillation_config(cfg)
