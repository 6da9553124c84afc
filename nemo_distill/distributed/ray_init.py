"""Attach to a Ray cluster (e.g. the one ``ray_bare.sub`` started) or start a local one."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from nemo_distill.distributed.config import ClusterConfig

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
# Forwarded to every worker when set in the driver's environment.
FORWARDED_ENV_VARS = (
    "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "NEMO_DISTILL_CACHE",
    "NEMO_DISTILL_SKIP_VOCAB_CHECK", "WANDB_API_KEY", "WANDB_MODE", "NCCL_DEBUG", "TORCH_NCCL_ASYNC_ERROR_HANDLING",
    "OMP_NUM_THREADS", "TOKENIZERS_PARALLELISM",
)


def worker_env_vars(cluster_cfg: ClusterConfig) -> dict[str, str]:
    """Environment every worker process gets: the repo on PYTHONPATH, offline HF, the user's vars."""
    env = {name: os.environ[name] for name in FORWARDED_ENV_VARS if name in os.environ}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    python_path = [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(python_path))
    env.update({str(k): str(v) for k, v in cluster_cfg.env_vars.items()})
    return env


def init_ray(cluster_cfg: ClusterConfig | None = None) -> None:
    """Attach or start Ray once per process (a second call is a no-op).

    Order: ``cluster.ray_address``, then ``RAY_ADDRESS`` (set by ``ray_bare.sub``), else a new local
    cluster (CPU-only when the config has no GPUs or none are visible).
    """
    import ray

    if ray.is_initialized():
        return
    cluster_cfg = cluster_cfg or ClusterConfig()
    runtime_env = {"env_vars": worker_env_vars(cluster_cfg)}
    address = cluster_cfg.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        log.info("attaching to Ray cluster at %s", address)
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
        return
    num_gpus = None
    if cluster_cfg.gpus_per_node == 0:
        num_gpus = 0
    else:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(f"cluster.gpus_per_node={cluster_cfg.gpus_per_node} but no CUDA GPU is visible; "
                               "set cluster.gpus_per_node=0 to run on CPU")
    ray.init(num_cpus=cluster_cfg.num_cpus, num_gpus=num_gpus, include_dashboard=False, runtime_env=runtime_env,
             log_to_driver=True, configure_logging=False)
