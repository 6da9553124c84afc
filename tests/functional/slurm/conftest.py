"""The ``slurm_cluster`` fixture: one private Slurm cluster per test module (see slurm_harness.py).

Set ``NEMO_DISTILL_SLURM_TEST_NODES=1`` to force a single-node cluster (the multi-node test then
takes its fallback path: a second raylet joining on this host).
"""

from __future__ import annotations

import os
import shutil

import pytest
from slurm_harness import SlurmCluster, start_cluster, stop_cluster


def _skip_reason() -> str | None:
    """Why the Slurm tests cannot run here, or None (they must run on CI: root, apt available)."""
    if os.geteuid() != 0:
        return "needs root: the test Slurm daemons run as SlurmUser=root"
    have_slurm = all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "munged", "sbatch"))
    if not have_slurm and shutil.which("apt-get") is None:
        return "Slurm is not installed and apt-get is unavailable to install it"
    return None


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory) -> SlurmCluster:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    num_nodes = int(os.environ.get("NEMO_DISTILL_SLURM_TEST_NODES", "2"))
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("slurm"), num_nodes)
    except RuntimeError as err:
        pytest.fail(str(err))
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
