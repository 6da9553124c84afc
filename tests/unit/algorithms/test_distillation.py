"""Distillation config checks, recipes, the trainer-facing loss and the context teacher glue.

Context-distillation tests carry ``context_distillation`` in their names: the runbook runs
``pytest ... -k context_distillation``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nemo_distill.algorithms.distillation_config import DistillationMasterConfig, check_distillation_config
from nemo_distill.algorithms.distillation_loss import (
    TEACHER_ROW_MASK,
    TEACHER_TOPK_INDICES,
    TEACHER_TOPK_LOGITS,
    TopkDistillationLoss,
    prediction_row_mask,
)
from nemo_distill.algorithms.loss_functions import topk_kl_loss
from nemo_distill.config import ConfigError, apply_overrides, load_config, validate, with_schema_defaults
from nemo_distill.data.batch import TokenBatch
from nemo_distill.models.policy.interfaces import StepCounts

REPO = Path(__file__).resolve().parents[3]
BASE_CONFIG = REPO / "configs" / "distillation_math.yaml"
# Distillation configs: the others (grpo*, sft*, noisy_student*, context-distill-sokoban*) are checked in
# tests/unit/test_configs.py against their own schemas.
RECIPES = sorted(p for p in (REPO / "configs").rglob("*.yaml") if "distillation" in p.name and "sokoban" not in p.name)


def config_with(*overrides: str) -> DistillationMasterConfig:
    cfg = with_schema_defaults(load_config(BASE_CONFIG), DistillationMasterConfig)
    return validate(apply_overrides(cfg, list(overrides)), DistillationMasterConfig)


def test_base_config_has_the_runbook_keys():
    cfg = config_with()
    assert cfg.distillation.topk_logits_k == 64
    assert cfg.policy.dtensor_cfg.tensor_parallel_size == 1 and cfg.policy.dtensor_cfg.context_parallel_size == 1
    assert cfg.policy.generation.vllm_cfg.max_model_len == cfg.policy.max_total_sequence_length
    assert cfg.teacher.max_total_sequence_length == cfg.policy.max_total_sequence_length
    assert cfg.data.default.prompt_file == "examples/prompts/cot.txt"
    assert cfg.data.default.system_prompt_file is None
    assert cfg.logger.wandb_enabled is False
    assert (cfg.cluster.num_nodes, cfg.cluster.gpus_per_node) == (1, 0)
    assert cfg.policy.train_global_batch_size == 8  # ${mul:num_prompts_per_step, num_generations_per_prompt}


def test_bad_type_names_the_key():
    with pytest.raises(ConfigError) as info:
        config_with("distillation.topk_logits_k=abc")
    assert info.value.key_path == "distillation.topk_logits_k" and "'abc'" in str(info.value)


def test_unknown_key_suggests():
    with pytest.raises(ConfigError, match="did you mean 'topk_logits_k'"):
        config_with("+distillation.topk_logit_k=3")


@pytest.mark.parametrize("k, message", [(0, ">= 1"), (10**6, "vocabulary has only")])
def test_topk_k_out_of_range(k, message):
    cfg = config_with(f"distillation.topk_logits_k={k}")
    with pytest.raises(ConfigError, match=message):
        check_distillation_config(cfg, student_vocab_size=1000)


def test_train_batch_must_match_rollouts():
    cfg = config_with("policy.train_global_batch_size=3")
    with pytest.raises(ConfigError, match="policy.train_global_batch_size"):
        check_distillation_config(cfg)


def test_context_distillation_requires_single_turn():
    cfg = config_with("distillation.context_distillation.enabled=true", "distillation.max_rollout_turns=2")
    with pytest.raises(ConfigError, match="max_rollout_turns.*must be 1"):
        check_distillation_config(cfg)


def test_context_distillation_requires_same_model():
    cfg = config_with("distillation.context_distillation.enabled=true", "teacher.model_name=other")
    with pytest.raises(ConfigError, match="teacher.model_name.*must equal policy.model_name"):
        check_distillation_config(cfg)


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("mode", "self_live", "self_frozen"),
        ("alignment", "char_offset", "response_token_index"),
        ("problem_source", "full_prompt", "original_user_problem"),
        ("trace_extractor.missing_trace_policy", "skip", "drop"),
    ],
)
def test_context_distillation_rejects_unsupported_values(key, value, allowed):
    with pytest.raises(ConfigError) as info:
        config_with(f"distillation.context_distillation.{key}={value}")
    assert info.value.key_path == f"distillation.context_distillation.{key}" and allowed in str(info.value)


@pytest.mark.parametrize("template", ["{problem} {answer}", "{} and {trace}", "{problem!r} {trace} {0}"])
def test_context_distillation_rejects_template_fields(template):
    cfg = config_with("distillation.context_distillation.enabled=true", f"distillation.context_distillation.teacher_prefix_template='{template}'")
    with pytest.raises(ConfigError, match="teacher_prefix_template"):
        check_distillation_config(cfg)


def test_context_distillation_teacher_length_bound():
    cfg = config_with(
        "distillation.context_distillation.enabled=true", "distillation.context_distillation.max_teacher_sequence_length=100000"
    )
    with pytest.raises(ConfigError, match="max_teacher_sequence_length"):
        check_distillation_config(cfg)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_config_loads_and_validates(recipe):
    cfg = validate(load_config(recipe), DistillationMasterConfig)
    if "recipes" in recipe.parts:
        suite = REPO / "tests" / "test_suites" / "llm" / f"{recipe.stem}.sh"
        assert suite.is_file(), f"recipe {recipe.name} has no suite script {suite}"
        check_distillation_config(cfg)
        assert recipe.read_text().startswith("#") and "sbatch" in recipe.read_text()


def test_recipes_found():
    assert len([r for r in RECIPES if "recipes" in r.parts]) >= 8


def test_print_config_cli():
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "run_distillation.py"), "--config", str(BASE_CONFIG), "--print-config", "distillation.topk_logits_k=7"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "topk_logits_k: 7" in result.stdout and "context_distillation:" in result.stdout


def test_cli_bad_override_exits_2_naming_key():
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "run_distillation.py"), "--config", str(BASE_CONFIG), "distillation.topk_logits_k=abc"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "distillation.topk_logits_k" in result.stderr


def _batch_with_teacher(seed: int = 0):
    torch.manual_seed(seed)
    batch_size, seq_len, vocab, k = 2, 6, 11, 4
    batch = TokenBatch(
        input_ids=torch.randint(0, vocab, (batch_size, seq_len)),
        attention_mask=torch.ones(batch_size, seq_len, dtype=torch.long),
        loss_mask=torch.tensor([[0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1]], dtype=torch.float),
        sample_mask=torch.tensor([1.0, 1.0]),
        extras={
            TEACHER_TOPK_LOGITS: torch.randn(batch_size, seq_len, k),
            TEACHER_TOPK_INDICES: torch.stack([torch.randperm(vocab)[:k] for _ in range(batch_size * seq_len)]).view(batch_size, seq_len, k),
        },
    )
    return batch, torch.randn(batch_size, seq_len, vocab)


def test_prediction_rows_shift_targets_by_one():
    batch, _ = _batch_with_teacher()
    rows = prediction_row_mask(batch)
    assert rows.tolist() == [[0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 0]]
    batch.sample_mask[1] = 0
    assert prediction_row_mask(batch)[1].sum() == 0


def test_context_distillation_row_mask_limits_rows():
    batch, _ = _batch_with_teacher()
    batch.extras[TEACHER_ROW_MASK] = torch.tensor([[0, 1, 0, 1, 0, 0], [1] * 6], dtype=torch.float)
    assert prediction_row_mask(batch).tolist() == [[0, 1, 0, 1, 0, 0], [0, 0, 1, 1, 1, 0]]


@pytest.mark.parametrize("kl_type", ["forward", "reverse", "mixed"])
def test_distillation_loss_normalises_by_global_tokens(kl_type):
    batch, logits = _batch_with_teacher()
    loss_fn = TopkDistillationLoss(kl_type=kl_type, mixed_kl_weight=0.3)
    rows = prediction_row_mask(batch)
    reference = topk_kl_loss(
        logits, batch.extras[TEACHER_TOPK_LOGITS], batch.extras[TEACHER_TOPK_INDICES], rows, kl_type=kl_type, mixed_kl_weight=0.3
    )
    local, _ = loss_fn(logits, batch, counts=StepCounts(tokens=float(rows.sum()), sequences=2.0, micro_batches=1))
    torch.testing.assert_close(local, reference)
    doubled, _ = loss_fn(logits, batch, counts=StepCounts(tokens=2 * float(rows.sum()), sequences=2.0, micro_batches=1))
    torch.testing.assert_close(doubled, reference / 2)


def test_seed_001_flags_place_roles_and_check_inference_dp():
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "run_distillation.py"), "--config", str(BASE_CONFIG), "--print-config",
         "cluster.gpus_per_node=4", "--inference_gpu_ids", "0,1", "--teacher_gpu_ids", "2", "--trainer_gpu_ids", "3",
         "--inference.parallel.dp", "2"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "inference_dp: 2" in result.stdout and "colocated: false" in result.stdout
    ok = config_with("cluster.gpus_per_node=4", "cluster.colocated=false", "cluster.inference_gpu_ids=[0,1]",
                     "cluster.teacher_gpu_ids=[2]", "cluster.trainer_gpu_ids=[3]", "cluster.inference_dp=2")
    check_distillation_config(ok)
    bad = config_with("cluster.gpus_per_node=4", "cluster.colocated=false", "cluster.inference_gpu_ids=[0,1]",
                      "cluster.teacher_gpu_ids=[2]", "cluster.trainer_gpu_ids=[3]", "cluster.inference_dp=3")
    with pytest.raises(ConfigError, match="cluster.inference_dp"):
        check_distillation_config(bad)


def test_teacher_is_asked_for_the_target_rows_only():
    """The loop's teacher call passes ``targets_only=True`` (the prompt's rows skip the output layer)."""
    from types import SimpleNamespace

    from nemo_distill.algorithms.distillation import teacher_topk_for_rollouts
    from nemo_distill.models.policy.interfaces import TopkLogits

    cfg = validate(with_schema_defaults(load_config(BASE_CONFIG), DistillationMasterConfig), DistillationMasterConfig)
    assert not cfg.distillation.context_distillation.enabled
    calls = []

    def get_topk_logits(batch, k, temperature=1.0, **kwargs):
        calls.append(kwargs)
        return TopkLogits(values=torch.zeros(batch.size, batch.seq_len, k), indices=torch.zeros(batch.size, batch.seq_len, k, dtype=torch.int32))

    batch = TokenBatch(input_ids=torch.zeros(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 5), loss_mask=torch.ones(2, 5),
                       sample_mask=torch.ones(2))
    rt = SimpleNamespace(cfg=cfg, frozen=SimpleNamespace(get_topk_logits=get_topk_logits))
    extras, _ = teacher_topk_for_rollouts(rt, SimpleNamespace(token_batch=batch), step=1)
    assert calls == [{"targets_only": True}]
    assert extras[TEACHER_TOPK_LOGITS].shape == (2, 5, cfg.distillation.topk_logits_k)
