"""RayWorkerGroup: the torch.distributed environment, dispatch, and failures that name role and rank."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from nemo_distill.distributed.config import ClusterConfig
from nemo_distill.distributed.virtual_cluster import RayVirtualCluster
from nemo_distill.distributed.worker_group import RayWorkerGroup, WorkerCallError, WorkerDiedError, _local_ranks, wait_all

ENV_NAMES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "NEMO_DISTILL_ROLE", "EXTRA_FLAG")


class CollectiveWorker:
    """A trivial worker: joins a gloo process group in its constructor, like PolicyWorker does."""

    def __init__(self, fail_on_rank: int | None = None):
        import torch.distributed as dist

        if fail_on_rank is not None and int(os.environ["RANK"]) == fail_on_rank:
            raise ValueError(f"constructor refuses rank {fail_on_rank}")
        dist.init_process_group("gloo")

    def env(self) -> dict[str, str | None]:
        return {name: os.environ.get(name) for name in ENV_NAMES}

    def all_reduce_sum(self, value: float) -> float:
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([float(value)], dtype=torch.float64)
        dist.all_reduce(tensor)
        return tensor.item()

    def describe(self, shard: list[int], *, scale: int = 1) -> tuple[int, list[int]]:
        return int(os.environ["RANK"]), [scale * item for item in shard]

    def pid(self) -> int:
        return os.getpid()

    def sends_tensors_as_bytes(self) -> bool:
        from nemo_distill.distributed.tensor_serialization import uses_byte_serializer

        return uses_byte_serializer()

    def add_in_place(self, tensor, value: float):
        return tensor.add_(value)  # a received tensor must be this process's own, writable memory

    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def gpu_uuid(self) -> str:
        import torch

        return str(torch.cuda.get_device_properties(0).uuid)

    def fail_on(self, rank: int) -> str:
        if int(os.environ["RANK"]) == rank:
            raise KeyError("missing-key")
        return "ok"

    def raise_os_error(self, kind: str) -> None:
        errors = {
            "FileNotFoundError": FileNotFoundError(2, "No such file or directory", "/ckpt/step_3/policy_info.json"),
            "PermissionError": PermissionError(13, "Permission denied", "/ckpt"),
            "TimeoutError": TimeoutError("rendezvous timed out"),
            "ConnectionError": ConnectionError("peer reset"),
        }
        raise errors[kind]


@pytest.fixture(scope="module")
def cluster(ray_cluster):
    import ray.cloudpickle

    # Ray workers cannot import this test module (tests are not a package on their PYTHONPATH):
    # ship its classes by value instead of by reference.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cluster = RayVirtualCluster(ClusterConfig(cpu_slots_per_node=2))
    yield cluster
    cluster.shutdown()


@pytest.fixture(scope="module")
def group(cluster):
    group = RayWorkerGroup(cluster, "trainer", CollectiveWorker, actor_kwargs={}, env_vars={"EXTRA_FLAG": "yes"})
    yield group
    group.shutdown()


def test_each_worker_gets_the_distributed_environment(group):
    envs = group.call_all("env")
    assert group.world_size == 2
    assert [env["RANK"] for env in envs] == ["0", "1"]
    assert {env["WORLD_SIZE"] for env in envs} == {"2"}
    assert [env["LOCAL_RANK"] for env in envs] == ["0", "1"]  # CPU mode, one node
    assert len({(env["MASTER_ADDR"], env["MASTER_PORT"]) for env in envs}) == 1
    assert int(envs[0]["MASTER_PORT"]) > 0
    assert {env["NEMO_DISTILL_ROLE"] for env in envs} == {"trainer"}
    assert {env["EXTRA_FLAG"] for env in envs} == {"yes"}
    assert len(set(group.pids)) == 2 and os.getpid() not in group.pids


def test_gloo_all_reduce_across_workers(group):
    assert group.call_all("all_reduce_sum", 1.5) == [3.0, 3.0]
    assert group.call_sharded("all_reduce_sum", [2.0, 5.0]) == [7.0, 7.0]


def test_sharded_calls_route_shards_and_kwargs(group):
    assert group.call_sharded("describe", [[1, 2], [3]], shard_of_rank=lambda rank: rank, scale=10) == [(0, [10, 20]), (1, [30])]
    # tensor-parallel peers: both ranks get the same shard
    assert group.call_sharded("describe", [[7]], shard_of_rank=lambda rank: 0) == [(0, [7]), (1, [7])]
    assert group.call_sharded("describe", [[1], [2]], shard_of_rank=lambda rank: 1 - rank) == [(0, [2]), (1, [1])]


def test_sharded_call_checks_the_rank_to_shard_map(group):
    with pytest.raises(ValueError, match=r"maps \(rank, shard\) \[\(1, 1\)\] outside the 1 shards"):
        group.call_sharded("describe", [[1]])


def test_tensors_cross_as_raw_bytes_both_ways_and_arrive_writable(group):
    import ray
    import torch

    from nemo_distill.distributed.tensor_serialization import uses_byte_serializer

    assert uses_byte_serializer()  # the driver: registered by init_ray
    assert group.call_all("sends_tensors_as_bytes") == [True, True]  # every actor: registered by WorkerHost
    sent = torch.arange(6, dtype=torch.bfloat16).reshape(2, 3).t()  # bf16 has no numpy dtype; a transposed view
    back = group.call_rank(0, "add_in_place", sent, 1.0)
    assert back.dtype == torch.bfloat16 and torch.equal(back, sent + 1) and torch.equal(sent, torch.arange(6.0).reshape(2, 3).t())
    ref = ray.put(torch.zeros(4))
    ray.get(ref).add_(1)  # the driver writes into what it fetched: a copy, never the object store's buffer
    assert torch.equal(ray.get(ref), torch.zeros(4))


def test_call_rank(group):
    assert group.call_rank(1, "describe", [4], scale=2) == (1, [8])
    with pytest.raises(ValueError, match="rank 2 is out of range for the trainer group of 2"):
        group.call_rank(2, "pid")


def test_method_error_names_role_rank_and_keeps_the_type(group):
    with pytest.raises(WorkerCallError) as info:
        group.call_all("fail_on", 1)
    error = info.value
    assert (error.role, error.rank, error.method) == ("trainer", 1, "fail_on")
    assert isinstance(error, KeyError) and isinstance(error.cause, KeyError)
    assert "trainer worker rank 1 failed in fail_on(): KeyError: 'missing-key'" in str(error)
    assert "remote traceback" in str(error) and 'in fail_on\n    raise KeyError("missing-key")' in str(error)
    assert group.call_all("fail_on", 5) == ["ok", "ok"]  # the group stays usable


@pytest.mark.parametrize("kind", ["FileNotFoundError", "PermissionError", "TimeoutError", "ConnectionError"])
def test_os_errors_reach_the_driver_with_their_type_message_role_and_rank(group, kind):
    # Regression: OSError subclasses have another C layout; the wrapper used to crash with
    # "TypeError: RuntimeError.__new__(...) is not safe" and hide the worker's message.
    with pytest.raises(WorkerCallError) as info:
        group.call_rank(1, "raise_os_error", kind)
    error = info.value
    assert type(error.cause).__name__ == kind and isinstance(error, type(error.cause))
    assert f"trainer worker rank 1 failed in raise_os_error(): {kind}" in str(error)
    if kind == "FileNotFoundError":
        assert error.filename == "/ckpt/step_3/policy_info.json" and error.errno == 2
        assert "No such file or directory: '/ckpt/step_3/policy_info.json'" in str(error)


def test_wait_all_collects_several_groups_and_fails_on_the_first_error(group, cluster):
    sleeper = RayWorkerGroup(cluster, "teacher", CollectiveWorker, actor_kwargs={})
    try:
        scaled, sums = wait_all(group.submit_rank(1, "describe", [3], scale=2), sleeper.submit_all("all_reduce_sum", 2))
        assert scaled == [(1, [6])] and sums == [4.0, 4.0]
        started = time.monotonic()
        with pytest.raises(KeyError, match="trainer worker rank 1 failed in fail_on"):
            # the two ends of a transfer: one side fails while the other would block for a minute
            wait_all(sleeper.submit_all("sleep", 60), group.submit_all("fail_on", 1))
        assert time.monotonic() - started < 30
    finally:
        sleeper.shutdown()


def test_unknown_method_is_a_call_error(group):
    with pytest.raises(AttributeError, match="rank 0 failed in no_such_method"):
        group.call_rank(0, "no_such_method")


def test_constructor_error_names_rank_instead_of_hanging(cluster):
    started = time.monotonic()
    with pytest.raises(ValueError, match=r"teacher worker rank 1 failed in CollectiveWorker.__init__\(\): .*refuses rank 1") as info:
        RayWorkerGroup(cluster, "teacher", CollectiveWorker, actor_kwargs={"fail_on_rank": 1})
    assert isinstance(info.value, WorkerCallError) and info.value.rank == 1
    # rank 0 was blocked in init_process_group waiting for rank 1: the group must not wait for it
    assert time.monotonic() - started < 60


def test_killed_worker_raises_worker_died_error_within_30s(cluster):
    group = RayWorkerGroup(cluster, "inference", CollectiveWorker, actor_kwargs={})
    try:
        victim = group.call_rank(1, "pid")
        killer = threading.Timer(1.0, os.kill, (victim, signal.SIGKILL))
        killer.start()
        started = time.monotonic()
        with pytest.raises(WorkerDiedError) as info:
            group.call_all("sleep", 120)  # rank 0 keeps sleeping: the call must not wait for it
        assert time.monotonic() - started < 30
        assert (info.value.role, info.value.rank) == ("inference", 1)
        assert "inference worker rank 1 died" in str(info.value)
        with pytest.raises(WorkerDiedError, match="unusable"):  # fail fast afterwards, never queue behind rank 0
            group.call_all("pid")
    finally:
        group.shutdown()
    with pytest.raises(RuntimeError, match="has been shut down"):
        group.call_all("pid")


def test_local_ranks_count_per_node():
    assert _local_ranks(["a", "a", "b", "a", "b"]) == [0, 1, 0, 2, 1]


class GpuWorker:
    """Reports what the worker sees of its GPU and joins an NCCL group on ``cuda:LOCAL_RANK``."""

    def __init__(self):
        import torch
        import torch.distributed as dist

        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group("nccl")

    def view(self) -> dict:
        import torch

        return {
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "device_count": torch.cuda.device_count(),
            "local_rank": os.environ["LOCAL_RANK"],
            "uuid": str(torch.cuda.get_device_properties(0).uuid),
        }

    def all_reduce_sum(self, value: float) -> float:
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([value], device="cuda")
        dist.all_reduce(tensor)
        return tensor.item()


def _require_gpus(count: int) -> None:
    import torch

    if torch.cuda.device_count() < count:
        pytest.skip(f"needs {count} CUDA GPUs")


@pytest.mark.gpu
def test_gpu_slots_isolate_one_gpu_per_worker_and_nccl_works(ray_cluster):
    import ray.cloudpickle

    _require_gpus(2)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cluster = RayVirtualCluster(ClusterConfig(gpus_per_node=2))
    try:
        group = RayWorkerGroup(cluster, "trainer", GpuWorker, actor_kwargs={})
        try:
            views = group.call_all("view")
            assert [v["device_count"] for v in views] == [1, 1]  # Ray exposes exactly the slot's GPU
            assert [v["local_rank"] for v in views] == ["0", "0"]  # ... so it is cuda:0 in every worker
            assert len({v["uuid"] for v in views}) == 2
            assert group.call_all("all_reduce_sum", 2.0) == [4.0, 4.0]
        finally:
            group.shutdown()
    finally:
        cluster.shutdown()


@pytest.mark.gpu
def test_seed_001_style_placement_puts_the_trainer_on_its_own_gpu(ray_cluster):
    import ray.cloudpickle

    _require_gpus(2)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cfg = ClusterConfig(gpus_per_node=2, colocated=False, inference_gpu_ids=[0], teacher_gpu_ids=[0], trainer_gpu_ids=[1])
    cluster = RayVirtualCluster(cfg)
    groups = []
    try:
        for role in ("inference", "teacher", "trainer"):  # inference and teacher share slot 0 (0.5 GPU each)
            groups.append(RayWorkerGroup(cluster, role, CollectiveWorker, actor_kwargs={}))
        uuids = [group.call_rank(0, "gpu_uuid") for group in groups]
        assert uuids[0] == uuids[1] != uuids[2]
    finally:
        for group in groups:
            group.shutdown()
        cluster.shutdown()


def test_test_kill_hook_targets_one_role_rank_and_method_call():
    from nemo_distill.distributed.worker_group import parse_test_kill

    assert parse_test_kill("", "trainer", 0) is None
    assert parse_test_kill("trainer:0:train:2", "trainer", 0) == ("train", 2)
    assert parse_test_kill("trainer:0:train:2", "trainer", 1) is None
    assert parse_test_kill("trainer:0:train:2", "teacher", 0) is None
    for bad in ("trainer:0:train", "trainer:x:train:2", "trainer:0:train:two"):
        with pytest.raises(ValueError, match="NEMO_DISTILL_TEST_KILL_WORKER_AT_CALL.*role:rank:method:n"):
            parse_test_kill(bad, "trainer", 0)


def test_test_kill_hook_sigkills_the_worker_at_the_nth_call():
    import subprocess

    child = (
        "from nemo_distill.distributed.worker_group import WorkerHost\n"
        "class W:\n"
        "    def m(self, x):\n"
        "        return x\n"
        "host = WorkerHost({'NEMO_DISTILL_ROLE': 'inference', 'NEMO_DISTILL_TEST_KILL_WORKER_AT_CALL': 'inference:1:m:3'})\n"
        "host.construct({'RANK': '1'}, W, {})\n"
        "for i in range(5):\n"
        "    print(host.call('m', ((i,), {})) if i % 2 else host.call_with_first('m', i, ((), {})), flush=True)\n"
    )
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert result.returncode == -signal.SIGKILL and result.stdout.split() == ["0", "1"], result.stderr
