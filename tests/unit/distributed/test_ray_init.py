"""init_ray: which cluster it picks, the environment workers get, idempotency."""

from __future__ import annotations

import os

import pytest

from nemo_distill.distributed.config import ClusterConfig
from nemo_distill.distributed.ray_init import REPO_ROOT, init_ray, ray_address_to_use, worker_env_vars


@pytest.mark.parametrize(
    "configured, environ, expected",
    [
        ("local", {"RAY_ADDRESS": "10.0.0.1:6379"}, "local"),  # tests: never attach to someone else's cluster
        ("10.0.0.2:6379", {"RAY_ADDRESS": "10.0.0.1:6379"}, "10.0.0.2:6379"),  # the config wins
        (None, {"RAY_ADDRESS": "10.0.0.1:6379"}, "10.0.0.1:6379"),  # ray_bare.sub exports RAY_ADDRESS
        (None, {}, "local"),  # never join an unrelated cluster on the same machine by accident
        (None, {"RAY_ADDRESS": ""}, "local"),
        ("auto", {}, "auto"),  # asked for: a running cluster if there is one, else a local one
    ],
)
def test_ray_address_resolution(configured, environ, expected):
    assert ray_address_to_use(ClusterConfig(ray_address=configured), environ) == expected


def test_worker_env_forwards_offline_settings_and_repo_path():
    environ = {"HF_HUB_OFFLINE": "1", "NEMO_DISTILL_CACHE": "/cache", "PYTHONPATH": "/extra", "UNRELATED": "x"}
    env = worker_env_vars(ClusterConfig(env_vars={"MY_FLAG": "on", "HF_HUB_OFFLINE": "0"}), environ)
    assert env["NEMO_DISTILL_CACHE"] == "/cache"
    assert env["PYTHONPATH"].split(os.pathsep) == [str(REPO_ROOT), "/extra"]
    assert env["MY_FLAG"] == "on"
    assert env["HF_HUB_OFFLINE"] == "0"  # cluster.env_vars win over forwarded values
    assert env["TOKENIZERS_PARALLELISM"] == "false"
    assert "UNRELATED" not in env


def test_worker_env_defaults_to_offline():
    env = worker_env_vars(ClusterConfig(), {})
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["PYTHONPATH"] == str(REPO_ROOT)


def test_init_ray_is_idempotent(ray_cluster):
    import ray
    import torch

    resources = ray.cluster_resources()
    init_ray(ClusterConfig(ray_address="local", num_cpus=1))  # already initialised: no-op
    assert ray.is_initialized()
    assert ray.cluster_resources()["CPU"] == resources["CPU"]
    if not torch.cuda.is_available():
        assert resources["CPU"] == 2 and resources.get("GPU", 0) == 0  # the CI-sized cluster, CPU mode


def test_workers_get_the_runtime_env(ray_cluster):
    import ray

    @ray.remote(num_cpus=0.01)
    def read_env() -> dict[str, str | None]:
        return {name: os.environ.get(name) for name in ("PYTHONPATH", "HF_HUB_OFFLINE")}

    env = ray.get(read_env.remote())
    assert str(REPO_ROOT) in env["PYTHONPATH"].split(os.pathsep)
    assert env["HF_HUB_OFFLINE"] == "1"
