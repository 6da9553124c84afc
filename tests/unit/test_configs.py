"""Every YAML under configs/ validates against the schema of the program that runs it, and every
recipe has its test-suite script and a runnable header. Distillation configs: tests/unit/algorithms/test_distillation.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from nemo_distill.config import load_config, validate

REPO = Path(__file__).resolve().parents[2]


def _schema_and_check(path: Path):
    """(schema, cross-section check) of the program a config belongs to, chosen by its loop section."""
    from nemo_distill.algorithms.distillation_config import DistillationMasterConfig, check_distillation_config
    from nemo_distill.algorithms.grpo_config import GRPOMasterConfig, check_grpo_config
    from nemo_distill.algorithms.noisy_student_pipeline import NoisyStudentMasterConfig, check_noisy_student_config
    from nemo_distill.algorithms.sft import SFTMasterConfig, check_sft_config

    sections = set(load_config(path))
    for section, schema, check in (("noisy_student", NoisyStudentMasterConfig, check_noisy_student_config),
                                   ("grpo", GRPOMasterConfig, check_grpo_config), ("sft", SFTMasterConfig, check_sft_config),
                                   ("distillation", DistillationMasterConfig, check_distillation_config)):
        if section in sections:
            return schema, check
    return None, None


LOOP_SECTIONS = ("grpo", "sft", "distillation")
# Training-loop configs (the noisy-student pipeline's own config is tested with its module).
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if LOOP_SECTIONS and any(
    line.startswith(f"{section}:") for line in p.read_text().splitlines() for section in LOOP_SECTIONS) or "defaults:" in p.read_text()
    and "noisy_student" not in p.name)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_config_validates_against_its_program(config):
    schema, check = _schema_and_check(config)
    assert schema is not None, f"{config.name} has none of the loop sections {LOOP_SECTIONS}"
    cfg = validate(load_config(config), schema)
    check(cfg)
    if "recipes" in config.parts:
        suite = REPO / "tests" / "test_suites" / "llm" / f"{config.stem}.sh"
        assert suite.is_file(), f"recipe {config.name} has no suite script {suite}"
        assert config.read_text().startswith("#") and "sbatch" in config.read_text()
