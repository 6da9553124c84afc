"""ClusterConfig placement rules, GPU-id parsing and seed 001's ``--<role>_gpu_ids`` flags."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from omegaconf import OmegaConf

from nemo_distill.config import ConfigError, apply_overrides, validate, with_schema_defaults
from nemo_distill.distributed.config import ClusterConfig, apply_gpu_id_flags, parse_gpu_ids


def test_colocated_roles_use_every_slot_in_order():
    cfg = ClusterConfig(num_nodes=2, gpus_per_node=4)
    for role in ("inference", "teacher", "trainer"):
        assert cfg.role_slot_ids(role) == list(range(8))
    assert (cfg.slots_per_node, cfg.total_slots, cfg.uses_gpus) == (4, 8, True)


def test_cpu_mode_counts_cpu_slots():
    cfg = ClusterConfig(num_nodes=1, gpus_per_node=0, cpu_slots_per_node=3)
    assert (cfg.slots_per_node, cfg.total_slots, cfg.uses_gpus) == (3, 3, False)
    assert cfg.role_slot_ids("trainer") == [0, 1, 2]


def test_seed_001_placement():
    cfg = ClusterConfig(gpus_per_node=4, colocated=False, inference_gpu_ids=[0, 1], teacher_gpu_ids=[2], trainer_gpu_ids=[3])
    assert cfg.role_slot_ids("inference") == [0, 1]
    assert cfg.role_slot_ids("teacher") == [2]
    assert cfg.role_slot_ids("trainer") == [3]


def test_ids_keep_the_given_rank_order_and_may_span_nodes():
    cfg = ClusterConfig(num_nodes=2, gpus_per_node=2, colocated=False, inference_gpu_ids=[3, 0], teacher_gpu_ids=[0], trainer_gpu_ids=[1, 2])
    assert cfg.role_slot_ids("inference") == [3, 0]
    assert cfg.role_slot_ids("trainer") == [1, 2]


def test_unset_inference_and_teacher_take_the_non_trainer_slots():
    cfg = ClusterConfig(gpus_per_node=4, colocated=False, trainer_gpu_ids=[1, 3])
    assert cfg.role_slot_ids("inference") == [0, 2]
    assert cfg.role_slot_ids("teacher") == [0, 2]


def test_unknown_role():
    with pytest.raises(ValueError, match="unknown role 'student'.*inference"):
        ClusterConfig().role_slot_ids("student")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(trainer_gpu_ids=[4]), r"cluster.trainer_gpu_ids=\[4\] has ids \[4\] out of range: the cluster has 4 slots"),
        (dict(trainer_gpu_ids=[3], inference_gpu_ids=[-1]), r"cluster.inference_gpu_ids=\[-1\] has ids \[-1\] out of range"),
        (dict(trainer_gpu_ids=[]), r"cluster.trainer_gpu_ids must list at least one slot"),
        (dict(inference_gpu_ids=[0]), r"cluster.trainer_gpu_ids must list at least one slot"),
        (dict(trainer_gpu_ids=[2, 3], teacher_gpu_ids=[1, 2]), r"overlaps cluster.teacher_gpu_ids=\[1, 2\] on slots \[2\]"),
        (dict(trainer_gpu_ids=[3], inference_gpu_ids=[0, 0]), r"cluster.inference_gpu_ids=\[0, 0\] lists a slot more than once"),
        (dict(trainer_gpu_ids=[0, 1, 2, 3]), r"cluster.inference_gpu_ids is unset and cluster.trainer_gpu_ids=\[0, 1, 2, 3\] takes all 4"),
    ],
)
def test_invalid_placements_name_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ClusterConfig(gpus_per_node=4, colocated=False, **kwargs)


def test_cpu_mode_out_of_range_hints_at_gpus_per_node():
    with pytest.raises(ValueError, match="set cluster.gpus_per_node"):
        ClusterConfig(colocated=False, trainer_gpu_ids=[3], inference_gpu_ids=[0])


def test_ids_while_colocated_are_rejected_not_ignored():
    with pytest.raises(ValueError, match=r"cluster.trainer_gpu_ids set while cluster.colocated is true"):
        ClusterConfig(gpus_per_node=4, trainer_gpu_ids=[3])


def test_placement_is_rechecked_after_mutation():
    cfg = ClusterConfig(gpus_per_node=4, colocated=False, trainer_gpu_ids=[3])
    cfg.trainer_gpu_ids = [7]
    with pytest.raises(ValueError, match="out of range"):
        cfg.role_slot_ids("trainer")


@pytest.mark.parametrize("text, expected", [("0,1", [0, 1]), ("0 1", [0, 1]), ("[2, 3]", [2, 3]), ("3", [3]), (" 4 ,5 ", [4, 5])])
def test_parse_gpu_ids(text, expected):
    assert parse_gpu_ids(text) == expected


@pytest.mark.parametrize("text", ["", "a", "0,x", "-1", "1.5"])
def test_parse_gpu_ids_rejects(text):
    with pytest.raises(ConfigError, match="cluster.trainer_gpu_ids"):
        parse_gpu_ids(text, key="cluster.trainer_gpu_ids")


def test_seed_001_flags_become_overrides():
    argv = ["--config", "x.yaml", "--inference_gpu_ids", "0,1", "--teacher_gpu_ids", "2", "--trainer_gpu_ids", "3", "policy.x=1"]
    overrides, rest = apply_gpu_id_flags(argv)
    assert overrides == [
        "cluster.inference_gpu_ids=[0,1]",
        "cluster.teacher_gpu_ids=[2]",
        "cluster.trainer_gpu_ids=[3]",
        "cluster.colocated=false",
    ]
    assert rest == ["--config", "x.yaml", "policy.x=1"]


def test_space_separated_equals_and_dashed_flags():
    argv = ["--inference_gpu_ids", "0", "1", "--teacher-gpu-ids=2,3", "--trainer_gpu_ids", "4", "5", "6", "7", "--print-config"]
    overrides, rest = apply_gpu_id_flags(argv)
    assert overrides[:3] == ["cluster.inference_gpu_ids=[0,1]", "cluster.teacher_gpu_ids=[2,3]", "cluster.trainer_gpu_ids=[4,5,6,7]"]
    assert rest == ["--print-config"]


def test_no_flags_no_overrides():
    assert apply_gpu_id_flags(["a=1", "--config", "c.yaml"]) == ([], ["a=1", "--config", "c.yaml"])


def test_flag_without_ids_names_the_key():
    with pytest.raises(ConfigError, match="cluster.trainer_gpu_ids.*needs slot ids"):
        apply_gpu_id_flags(["--trainer_gpu_ids", "policy.lr=1"])


@dataclass
class _Schema:
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


def test_flag_overrides_validate_through_the_config_system():
    overrides, _ = apply_gpu_id_flags(["--inference_gpu_ids", "0", "1", "--teacher_gpu_ids", "2", "--trainer_gpu_ids", "3"])
    base = with_schema_defaults(OmegaConf.create({"cluster": {"gpus_per_node": 4}}), _Schema)
    cfg = validate(apply_overrides(base, overrides), _Schema)
    assert cfg.cluster.colocated is False
    assert (cfg.cluster.role_slot_ids("inference"), cfg.cluster.role_slot_ids("trainer")) == ([0, 1], [3])


def test_bad_placement_surfaces_as_config_error():
    overrides, _ = apply_gpu_id_flags(["--trainer_gpu_ids", "9"])
    base = with_schema_defaults(OmegaConf.create({"cluster": {"gpus_per_node": 4}}), _Schema)
    with pytest.raises(ConfigError, match=r"cluster.trainer_gpu_ids=\[9\] has ids \[9\] out of range"):
        validate(apply_overrides(base, overrides), _Schema)
