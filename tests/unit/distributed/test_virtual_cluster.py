"""Slot maps (which role gets which slot and how much of it) and the real placement groups."""

from __future__ import annotations

import pytest

from nemo_distill.distributed.config import ClusterConfig
from nemo_distill.config import ConfigError
from nemo_distill.distributed.virtual_cluster import CPU_BUNDLE_CPUS, GPU_BUNDLE_CPUS, RayVirtualCluster, check_node_count, plan_slots

NODE_PGS = ["pg-node0", "pg-node1"]  # plan_slots only hands these through


def test_colocated_gpu_slots_split_each_gpu_three_ways():
    plan = plan_slots(ClusterConfig(num_nodes=2, gpus_per_node=2), NODE_PGS)
    for role in ("inference", "teacher", "trainer"):
        slots = plan[role]
        assert [s.slot_id for s in slots] == [0, 1, 2, 3]
        assert [(s.node_index, s.bundle_index) for s in slots] == [(0, 0), (0, 1), (1, 0), (1, 1)]
        assert [s.placement_group for s in slots] == ["pg-node0", "pg-node0", "pg-node1", "pg-node1"]
        assert all(s.gpu_fraction == pytest.approx(1 / 3) for s in slots)
        assert all(s.num_cpus == pytest.approx(GPU_BUNDLE_CPUS / 3) for s in slots)


def test_seed_001_slots_get_whole_or_shared_gpus():
    cfg = ClusterConfig(gpus_per_node=4, colocated=False, inference_gpu_ids=[0, 1], teacher_gpu_ids=[1, 2], trainer_gpu_ids=[3])
    plan = plan_slots(cfg, NODE_PGS[:1])
    assert [(s.slot_id, s.gpu_fraction) for s in plan["inference"]] == [(0, 1.0), (1, 0.5)]
    assert [(s.slot_id, s.gpu_fraction) for s in plan["teacher"]] == [(1, 0.5), (2, 1.0)]
    assert [(s.slot_id, s.gpu_fraction, s.bundle_index) for s in plan["trainer"]] == [(3, 1.0, 3)]


def test_cpu_mode_requests_no_gpu_and_a_fraction_of_a_core():
    plan = plan_slots(ClusterConfig(cpu_slots_per_node=2), NODE_PGS[:1])
    slots = plan["trainer"]
    assert [s.gpu_fraction for s in slots] == [0.0, 0.0]
    assert [s.num_cpus for s in slots] == [pytest.approx(CPU_BUNDLE_CPUS / 3)] * 2
    # every role on a slot must fit in the bundle together
    assert sum(plan[role][0].num_cpus for role in plan) == pytest.approx(CPU_BUNDLE_CPUS)


def test_plan_needs_one_placement_group_per_node():
    with pytest.raises(ValueError, match="expected 2 placement groups"):
        plan_slots(ClusterConfig(num_nodes=2), NODE_PGS[:1])


def test_real_cluster_reserves_bundles(ray_cluster):
    import ray

    cluster = RayVirtualCluster(ClusterConfig(cpu_slots_per_node=2))
    try:
        assert cluster.num_slots("trainer") == 2 and not cluster.uses_gpus
        assert [s.slot_id for s in cluster.slots("inference")] == [0, 1]
        assert len({id(s.placement_group) for s in cluster.slots("teacher")}) == 1  # one placement group per node
        assert "trainer: slots [0, 1]" in cluster.describe()
        [pg] = cluster.placement_groups
        table = ray.util.placement_group_table(pg)
        assert table["state"] == "CREATED" and table["strategy"] == "STRICT_PACK"
        assert list(table["bundles"].values()) == [{"CPU": CPU_BUNDLE_CPUS}] * 2
        with pytest.raises(ValueError, match="unknown role"):
            cluster.slots("critic")
    finally:
        cluster.shutdown()
        cluster.shutdown()  # idempotent


def test_more_gpus_than_the_cluster_has_fail_at_once(ray_cluster):
    import ray

    have = int(ray.cluster_resources().get("GPU", 0))
    with pytest.raises(RuntimeError, match=rf"needs {have + 1} GPU .* but the Ray cluster has {have}\b.*cluster.gpus_per_node"):
        RayVirtualCluster(ClusterConfig(gpus_per_node=have + 1))


def test_too_many_cpu_slots_fail_at_once(ray_cluster):
    import ray

    slots = int(ray.cluster_resources()["CPU"] / CPU_BUNDLE_CPUS) + 1
    with pytest.raises(RuntimeError, match=r"needs .* CPU .*cluster.cpu_slots_per_node"):
        RayVirtualCluster(ClusterConfig(cpu_slots_per_node=slots))


def test_unplaceable_reservation_times_out_with_resources(ray_cluster):
    import ray

    # Sized from the cluster's total (not what is free right now: earlier tests' placement groups
    # are released asynchronously); the holder waits for them and leaves room for one slot, not two.
    slots_in_cluster = int(ray.cluster_resources()["CPU"] / CPU_BUNDLE_CPUS)
    holder = RayVirtualCluster(ClusterConfig(cpu_slots_per_node=slots_in_cluster - 1))
    try:
        with pytest.raises(RuntimeError, match="could not reserve 1 node.*within 1 s"):
            RayVirtualCluster(ClusterConfig(cpu_slots_per_node=2), placement_timeout_s=1.0)
    finally:
        holder.shutdown()


def _node(alive: bool = True, gpus: int = 0) -> dict:
    return {"Alive": alive, "Resources": {"CPU": 8.0, **({"GPU": float(gpus)} if gpus else {})}}


def test_node_count_check_counts_live_nodes_with_enough_gpus():
    check_node_count(ClusterConfig(num_nodes=2), [_node(), _node()])
    with pytest.raises(ConfigError, match=r"cluster.num_nodes.*is 2 but the Ray cluster has 1 live node\(s\); set cluster.num_nodes=1"):
        check_node_count(ClusterConfig(num_nodes=2), [_node(), _node(alive=False)])
    gpu = ClusterConfig(num_nodes=2, gpus_per_node=4)
    check_node_count(gpu, [_node(gpus=4), _node(gpus=8)])
    with pytest.raises(ConfigError, match="1 live node\\(s\\) with 4 GPU"):
        check_node_count(gpu, [_node(gpus=4), _node(gpus=2)])


def test_two_nodes_on_one_machine_fail_at_once_before_any_placement(ray_cluster):
    import ray

    before = len(ray.util.placement_group_table())
    with pytest.raises(ConfigError) as info:
        RayVirtualCluster(ClusterConfig(num_nodes=2, cpu_slots_per_node=1))
    assert info.value.key_path == "cluster.num_nodes" and "has 1 live node(s)" in str(info.value)
    assert len(ray.util.placement_group_table()) == before  # nothing reserved
