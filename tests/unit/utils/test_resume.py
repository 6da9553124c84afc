"""Resume checks: the saved config against the new one (issue 11, item 3)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from nemo_distill.config import ConfigError
from nemo_distill.utils.checkpoint import CheckpointingConfig
from nemo_distill.utils.resume import (
    ABSENT,
    ALLOWED_RESUME_CHANGES,
    ConfigDifference,
    check_resume,
    config_differences,
    is_allowed_resume_change,
)

CHECKPOINT = Path("results/checkpoints/step_5")
SAVED = {
    "policy": {"optimizer": {"lr": 1e-5, "betas": [0.9, 0.999]}, "train_micro_batch_size": 2, "precision": "auto"},
    "distillation": {"max_num_steps": 5, "val_period": 0, "topk_logits_k": 64},
    "logger": {"log_dir": "logs", "wandb_enabled": False},
    "checkpointing": {"enabled": True, "save_period": 5, "resume": "auto"},
    "cluster": {"ray_address": None, "num_nodes": 1},
}


def _yaml(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False)


def _changed(**paths) -> dict:
    config = yaml.safe_load(_yaml(SAVED))
    for path, value in paths.items():
        *parents, leaf = path.split("__")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return config


def test_config_differences_walks_nested_dicts_and_reports_leaves():
    new = _changed(policy__optimizer__lr=2e-5, distillation__max_num_steps=100, logger__extra=1)
    del new["cluster"]["num_nodes"]
    assert config_differences(SAVED, new) == [
        ConfigDifference("cluster.num_nodes", 1, ABSENT),
        ConfigDifference("distillation.max_num_steps", 5, 100),
        ConfigDifference("logger.extra", ABSENT, 1),
        ConfigDifference("policy.optimizer.lr", 1e-5, 2e-5),
    ]
    assert config_differences(SAVED, yaml.safe_load(_yaml(SAVED))) == []


def test_config_differences_leaf_rules():
    # Lists are leaves; int vs float is no difference; bool vs int is; a dict replaced by a scalar is one leaf.
    assert config_differences({"a": [1, 2]}, {"a": [1, 3]}) == [ConfigDifference("a", [1, 2], [1, 3])]
    assert config_differences({"a": 2}, {"a": 2.0}) == []
    assert config_differences({"a": True}, {"a": 1}) == [ConfigDifference("a", True, 1)]
    assert config_differences({"a": {"b": 1}}, {"a": None}) == [ConfigDifference("a", {"b": 1}, None)]
    assert config_differences({"a": {"b": 1}}, {}) == [ConfigDifference("a", {"b": 1}, ABSENT)]
    assert str(ConfigDifference("policy.optimizer.lr", 1e-5, 2e-5)) == "policy.optimizer.lr: 1e-05 -> 2e-05"
    assert str(ConfigDifference("x", ABSENT, 3)) == "x: <absent> -> 3"


@pytest.mark.parametrize(
    "key_path, allowed",
    [
        ("distillation.max_num_steps", True),
        ("grpo.max_num_epochs", True),
        ("logger.wandb.name", True),
        ("logger.log_dir", True),
        ("distillation.val_period", True),
        ("sft.max_val_samples", True),
        ("distillation.context_distillation.print_first_sample", True),
        ("checkpointing.save_period", True),
        ("checkpointing.resume", True),
        ("cluster.ray_address", True),
        ("policy.train_micro_batch_size", True),
        ("teacher.logprob_chunk_size", True),
        ("policy.train_head_chunk_rows", True),
        ("policy.optimizer.lr", False),
        ("policy.scheduler.total_steps", False),
        ("policy.train_global_batch_size", False),
        ("policy.generation.temperature", False),
        ("policy.generation.max_batch_size", False),
        ("loss_fn.kl_type", False),
        ("data.train.path", False),
        ("distillation.seed", False),
        ("checkpointing.enabled", False),
        ("cluster.num_nodes", False),
        ("my_logger.x", False),  # "logger.*" is anchored at the root
    ],
)
def test_allowed_resume_changes(key_path, allowed):
    assert is_allowed_resume_change(key_path) is allowed


def test_every_allowed_pattern_is_a_dotted_key_pattern():
    for pattern in ALLOWED_RESUME_CHANGES:
        assert pattern == pattern.strip() and "." in pattern and " " not in pattern


def test_auto_resumes_when_only_allowed_keys_changed(caplog):
    new = _changed(distillation__max_num_steps=100, logger__wandb_enabled=True, checkpointing__save_period=10)
    with caplog.at_level(logging.INFO, logger="nemo_distill.utils.resume"):
        differences = check_resume(_yaml(SAVED), _yaml(new), mode="auto", checkpoint=CHECKPOINT)
    assert [d.key_path for d in differences] == ["checkpointing.save_period", "distillation.max_num_steps", "logger.wandb_enabled"]
    assert all(d.allowed for d in differences)
    assert "distillation.max_num_steps: 5 -> 100" in caplog.text
    assert check_resume(_yaml(SAVED), _yaml(SAVED), mode="auto", checkpoint=CHECKPOINT) == []


def test_auto_refuses_a_changed_learning_rate_listing_the_diff_and_the_choices():
    # The seed's sequence: a 5-step smoke run, then the full run with other settings, same checkpoint_dir.
    new = _changed(policy__optimizer__lr=2e-5, distillation__topk_logits_k=32, distillation__max_num_steps=100)
    with pytest.raises(ConfigError) as raised:
        check_resume(_yaml(SAVED), _yaml(new), mode="auto", checkpoint=CHECKPOINT)
    err = raised.value
    assert err.key_path == "checkpointing.resume"
    message = str(err)
    assert str(CHECKPOINT) in message
    assert "  policy.optimizer.lr: 1e-05 -> 2e-05" in message and "  distillation.topk_logits_k: 64 -> 32" in message
    assert "allowed changes, applied on resume: distillation.max_num_steps: 5 -> 100" in message
    for choice in ("checkpointing.resume=force", "checkpointing.resume=never", "checkpointing.checkpoint_dir"):
        assert choice in message


def test_force_warns_and_returns_every_difference(caplog):
    new = _changed(policy__optimizer__lr=2e-5, distillation__max_num_steps=100)
    with caplog.at_level(logging.WARNING, logger="nemo_distill.utils.resume"):
        differences = check_resume(_yaml(SAVED), _yaml(new), mode="force", checkpoint=CHECKPOINT)
    assert [(d.key_path, d.allowed) for d in differences] == [("distillation.max_num_steps", True), ("policy.optimizer.lr", False)]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "policy.optimizer.lr: 1e-05 -> 2e-05" in warnings[0].getMessage()
    assert "distillation.max_num_steps" not in warnings[0].getMessage()


@pytest.mark.parametrize("mode", ["never", "sometimes"])
def test_check_resume_rejects_modes_the_caller_handles(mode):
    with pytest.raises(ValueError, match="'auto' or 'force'"):
        check_resume(_yaml(SAVED), _yaml(SAVED), mode=mode, checkpoint=CHECKPOINT)


def test_unreadable_saved_config_names_the_checkpoint():
    with pytest.raises(ConfigError, match="step_5.*not valid YAML"):
        check_resume("a: [1,", _yaml(SAVED), mode="auto", checkpoint=CHECKPOINT)
    with pytest.raises(ConfigError, match="not a mapping"):
        check_resume("- 1\n- 2\n", _yaml(SAVED), mode="auto", checkpoint=CHECKPOINT)


def test_checkpointing_config_has_the_resume_mode():
    assert CheckpointingConfig().resume == "auto"
    assert CheckpointingConfig(resume="force").resume == "force"


def test_real_config_yaml_round_trip_compares_equal():
    """The YAML the CLI writes (OmegaConf.to_yaml of the typed config) parses back to no difference,
    and an override of one key shows up as exactly that key."""
    from omegaconf import OmegaConf

    from nemo_distill.algorithms.distillation_config import DistillationMasterConfig
    from nemo_distill.config.schema import to_dictconfig

    base, changed = DistillationMasterConfig(), DistillationMasterConfig()
    changed.policy.optimizer.lr = changed.policy.optimizer.lr * 2
    saved_yaml, new_yaml = OmegaConf.to_yaml(to_dictconfig(base)), OmegaConf.to_yaml(to_dictconfig(changed))
    assert check_resume(saved_yaml, saved_yaml, mode="auto", checkpoint=CHECKPOINT) == []
    with pytest.raises(ConfigError, match=r"policy\.optimizer\.lr: "):
        check_resume(saved_yaml, new_yaml, mode="auto", checkpoint=CHECKPOINT)


def test_a_key_added_after_the_checkpoint_counts_at_its_default():
    """A checkpoint written before a setting existed lacks it: at its schema default the resume goes on,
    any other value is a change like any other."""
    from omegaconf import OmegaConf

    from nemo_distill.algorithms.distillation_config import DistillationMasterConfig
    from nemo_distill.config.schema import to_dictconfig
    from nemo_distill.utils.resume import schema_defaults

    current = yaml.safe_load(OmegaConf.to_yaml(to_dictconfig(DistillationMasterConfig())))
    old_run = yaml.safe_load(OmegaConf.to_yaml(to_dictconfig(DistillationMasterConfig())))
    del old_run["policy"]["generation"]["cpu_bfloat16"]  # written before the key existed
    defaults = schema_defaults(DistillationMasterConfig)
    assert defaults == current
    assert check_resume(yaml.safe_dump(old_run), yaml.safe_dump(current), mode="auto", checkpoint=CHECKPOINT,
                        defaults=defaults) == []
    with pytest.raises(ConfigError, match=r"policy\.generation\.cpu_bfloat16: <absent> -> False"):
        check_resume(yaml.safe_dump(old_run), yaml.safe_dump(current), mode="auto", checkpoint=CHECKPOINT)  # no defaults
    current["policy"]["generation"]["cpu_bfloat16"] = True
    with pytest.raises(ConfigError, match=r"policy\.generation\.cpu_bfloat16: False -> True"):
        check_resume(yaml.safe_dump(old_run), yaml.safe_dump(current), mode="auto", checkpoint=CHECKPOINT, defaults=defaults)
