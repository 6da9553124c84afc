"""One private local Ray cluster for the distributed tests (2 CPUs, like CI; all CPUs and GPUs on a GPU machine)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    """Start (or reuse) the session's Ray cluster. ``ray_address="local"`` never attaches to a
    cluster someone else runs on this machine. Idempotent, so other packages' copies of this
    fixture share the same cluster (the lead hoists it into tests/conftest.py)."""
    import ray
    import torch

    from nemo_distill.distributed.config import ClusterConfig
    from nemo_distill.distributed.ray_init import init_ray

    # CI (no GPU): a 2-CPU cluster like the CI machine. GPU machines: every CPU and GPU, so the
    # `gpu`-marked tests can reserve GPU slots next to the CPU-mode ones.
    num_gpus = torch.cuda.device_count()
    init_ray(ClusterConfig(ray_address="local", num_cpus=None if num_gpus else 2, gpus_per_node=num_gpus))
    yield
    ray.shutdown()
