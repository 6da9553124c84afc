"""policy / teacher config sections: defaults, and cross-field checks that name the key and the fix."""

from __future__ import annotations

import pytest

from nemo_distill.config.errors import ConfigError
from nemo_distill.config.schema import build_dataclass
from nemo_distill.models.policy.config import DTensorConfig, OptimizerConfig, PolicyConfig, SchedulerConfig, TeacherConfig


def test_defaults():
    cfg = PolicyConfig()
    assert cfg.model_name == "smollm2-135m-instruct" and cfg.precision == "auto"
    assert (cfg.train_global_batch_size, cfg.train_micro_batch_size, cfg.logprob_batch_size, cfg.logprob_chunk_size) == (8, 2, 4, 512)
    assert cfg.dtensor_cfg == DTensorConfig(enabled=True, tensor_parallel_size=1, context_parallel_size=1)
    assert cfg.lora.enabled is False and cfg.lora.target_modules == "all-linear" and (cfg.lora.rank, cfg.lora.alpha) == (16, 32)
    assert cfg.optimizer.betas == [0.9, 0.999] and cfg.scheduler.type == "constant"
    assert not hasattr(TeacherConfig(), "optimizer")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: PolicyConfig(train_global_batch_size=2, train_micro_batch_size=4), "train_micro_batch_size"),
        (lambda: PolicyConfig(max_grad_norm=0.0), "max_grad_norm"),
        (lambda: OptimizerConfig(betas=[0.9]), "optimizer.betas"),
        (lambda: OptimizerConfig(betas=[0.9, 1.0]), "optimizer.betas"),
        (lambda: SchedulerConfig(type="cosine", warmup_steps=10, total_steps=5), "scheduler.total_steps"),
        (lambda: DTensorConfig(cpu_offload=True, tensor_parallel_size=2), "cpu_offload"),
    ],
)
def test_cross_field_checks(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_schema_bounds_and_unknown_keys_name_the_key_path():
    with pytest.raises(ConfigError, match="dtensor_cfg.tensor_parallel_size"):
        build_dataclass(PolicyConfig, {"dtensor_cfg": {"tensor_parallel_size": 0}}, "policy")
    with pytest.raises(ConfigError, match="lora.rnak"):
        build_dataclass(PolicyConfig, {"lora": {"rnak": 4}}, "policy")
    cfg = build_dataclass(PolicyConfig, {"lora": {"enabled": True, "target_modules": ["q_proj", "v_proj"]}}, "policy")
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
