"""Fixtures of the policy tests. ``tiny_model_dir`` (a random Qwen3 with an untied lm_head) comes from
tests/conftest.py; ``ray_cluster`` is the same idempotent fixture as tests/unit/distributed/conftest.py
(until the lead hoists it into tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    """Start (or reuse) the session's local Ray cluster: 2 CPUs like CI; every CPU and GPU on a GPU machine."""
    import ray
    import torch

    from nemo_distill.distributed.config import ClusterConfig
    from nemo_distill.distributed.ray_init import init_ray

    num_gpus = torch.cuda.device_count()
    init_ray(ClusterConfig(ray_address="local", num_cpus=None if num_gpus else 2, gpus_per_node=num_gpus))
    yield
    ray.shutdown()
