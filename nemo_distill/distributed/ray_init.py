"""Attach to a Ray cluster (e.g. the one ``ray_bare.sub`` started) or start a local one.

Which cluster, in order:

1. ``cluster.ray_address``: ``"local"`` always starts a private local cluster; ``"auto"`` attaches
   to a Ray cluster already running on this machine (``ray start --head``) and starts a local one
   when there is none; ``"host:port"`` is attached to.
2. ``RAY_ADDRESS`` from the environment (``ray_bare.sub`` exports it).
3. Otherwise a new private local cluster with ``cluster.num_cpus`` CPUs, no dashboard, and no GPUs
   when the config is in CPU mode (``cluster.gpus_per_node == 0``) or no GPU is visible. A run never
   joins an unrelated cluster that happens to run on the same machine unless asked to.

Every worker process gets the environment of :func:`worker_env_vars` through the job's
``runtime_env``: the repo on ``PYTHONPATH`` (workers import ``nemo_distill`` even when it is not
installed), the driver's offline/cache settings, and ``cluster.env_vars``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from nemo_distill.distributed.config import ClusterConfig

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_CLUSTER = "local"
AUTO_DETECT = "auto"
# Copied from the driver's environment into every worker when set there: offline mode and
# caches must match the driver's, or workers would try the network / re-convert models.
FORWARDED_ENV_VARS = (
    "HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE",
    "NEMO_DISTILL_CACHE", "NEMO_DISTILL_SKIP_VOCAB_CHECK", "WANDB_API_KEY", "WANDB_MODE", "NCCL_DEBUG",
    "TORCH_NCCL_ASYNC_ERROR_HANDLING", "OMP_NUM_THREADS", "TOKENIZERS_PARALLELISM",
    "NEMO_DISTILL_TEST_KILL_WORKER_AT_CALL",  # a test hook (worker_group.TEST_KILL_ENV)
)


def worker_env_vars(cluster_cfg: ClusterConfig, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every worker gets: forwarded driver vars, repo on ``PYTHONPATH``, ``cluster.env_vars``.

    ``HF_HUB_OFFLINE=1`` and ``TOKENIZERS_PARALLELISM=false`` are defaults (nothing is downloaded
    at run time; tokenizer threads would oversubscribe the workers' CPUs); the user's
    ``cluster.env_vars`` win over everything.
    """
    environ = os.environ if environ is None else environ
    env = {name: environ[name] for name in FORWARDED_ENV_VARS if name in environ}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    python_path = [str(REPO_ROOT)] + [part for part in environ.get("PYTHONPATH", "").split(os.pathsep) if part]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(python_path))
    env.update({str(name): str(value) for name, value in cluster_cfg.env_vars.items()})
    return env


def ray_address_to_use(cluster_cfg: ClusterConfig, environ: Mapping[str, str] | None = None) -> str:
    """``"local"`` (start a cluster), ``"auto"`` (attach to a running one if any) or an address to attach to."""
    environ = os.environ if environ is None else environ
    if cluster_cfg.ray_address:
        return cluster_cfg.ray_address
    return environ.get("RAY_ADDRESS") or LOCAL_CLUSTER


def _local_num_gpus(cluster_cfg: ClusterConfig) -> int | None:
    """GPUs a local cluster advertises: 0 in CPU mode, None (= all visible) on GPU."""
    if not cluster_cfg.uses_gpus:
        return 0
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(
            f"cluster.gpus_per_node={cluster_cfg.gpus_per_node} but no CUDA GPU is visible on this machine; "
            "set cluster.gpus_per_node=0 to run on CPU"
        )
    return None


def init_ray(cluster_cfg: ClusterConfig | None = None) -> None:
    """Attach to or start Ray once per process; later calls are no-ops (see the module docstring)."""
    import ray

    if ray.is_initialized():
        return
    cluster_cfg = cluster_cfg or ClusterConfig()
    runtime_env = {"env_vars": worker_env_vars(cluster_cfg)}
    address = ray_address_to_use(cluster_cfg)
    if address != LOCAL_CLUSTER:
        try:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=True, configure_logging=False)
            log.info("attached to the Ray cluster at %s: %s", address, ray.cluster_resources())
            return
        except ConnectionError:
            if address != AUTO_DETECT:  # an address the user named must exist
                raise
            log.info("no running Ray cluster found; starting a local one")
    ray.init(
        address=LOCAL_CLUSTER,
        num_cpus=cluster_cfg.num_cpus,
        num_gpus=_local_num_gpus(cluster_cfg),
        include_dashboard=False,
        runtime_env=runtime_env,
        log_to_driver=True,
        configure_logging=False,
    )
    log.info("started a local Ray cluster: %s", ray.cluster_resources())
