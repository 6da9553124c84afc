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
installed), the driver's offline/cache settings, and ``cluster.env_vars``. CPU tensors travel
between the driver and the workers as raw bytes (:mod:`.tensor_serialization`), registered here for
the driver and in ``WorkerHost`` for every actor.

Cleanup when the driver dies (a local cluster must not outlive the run that started it):

* SIGTERM (``kill``, ``scancel``, ``ray_bare.sub``'s cleanup) becomes ``SystemExit(143)``, so the
  runtime's ``finally`` blocks stop the workers and Ray's ``atexit`` hook shuts the local cluster
  down;
* SIGKILL runs nothing in the driver, and Ray's dashboard and runtime-env agents would survive it.
  A small watchdog process (:data:`_WATCHDOG`) holds a pipe from the driver and tracks the
  driver's descendants; when the pipe closes (the driver exited, however) it ends the ones still
  running, by pid and start time (a reused pid is never touched).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
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
    "NEMO_DISTILL_RAY_TENSORS",  # tensor_serialization.SERIALIZER_ENV
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

    from nemo_distill.distributed.tensor_serialization import register_tensor_serializer  # imports torch

    if ray.is_initialized():
        return
    cluster_cfg = cluster_cfg or ClusterConfig()
    runtime_env = {"env_vars": worker_env_vars(cluster_cfg)}
    address = ray_address_to_use(cluster_cfg)
    if address != LOCAL_CLUSTER:
        try:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=True, configure_logging=False)
            register_tensor_serializer()
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
        # Ray starts workers at nice 15; they do all the compute, so any other busy process on the
        # machine starved them (demo steps of 30 s became 60-100 s on a shared 2-core box).
        _system_config={"worker_niceness": 0},
    )
    register_tensor_serializer()
    log.info("started a local Ray cluster: %s", ray.cluster_resources())
    exit_on_sigterm()
    start_cleanup_watchdog()


def exit_on_sigterm() -> bool:
    """SIGTERM raises ``SystemExit(143)`` in the main thread, so ``finally`` blocks and ``atexit`` run.

    Ray's driver handler (``sys.exit(15)``, installed by ``ray.init``) is replaced so the exit code
    says "terminated" the usual way (128 + 15); any other Python handler is left alone (returns
    False), as is everything off the main thread. A second SIGTERM during the cleanup ends the
    process at once.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    current = signal.getsignal(signal.SIGTERM)
    ours_or_rays = getattr(current, "__name__", "") in ("_nemo_distill_sigterm", "sigterm_handler") and \
        getattr(current, "__module__", "").startswith(("ray.", __name__))
    if callable(current) and not ours_or_rays:
        return False  # a Python handler someone installed on purpose

    def _nemo_distill_sigterm(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        log.warning("SIGTERM: stopping the workers and the local Ray cluster")
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _nemo_distill_sigterm)
    return True


# Runs in its own session (a killpg of the driver's group leaves it alive to clean up). argv: the
# driver's pid. Every 2 s it records the driver's descendants as (pid, start time); at EOF on stdin
# it SIGTERMs those still running, then SIGKILLs what is left after 5 s.
_WATCHDOG = r"""
import os, select, signal, sys, time

driver = int(sys.argv[1])

def table():
    procs = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                procs[int(name)] = (int(fields[1]), int(fields[19]))  # (ppid, start time)
            except (OSError, IndexError, ValueError):
                pass
    return procs

def descendants():
    procs, found, frontier = table(), {}, [driver]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, start) in procs.items():
            if ppid == parent and pid not in found and pid != os.getpid():
                found[pid] = start
                frontier.append(pid)
    return found

def alive(targets):
    procs = table()
    return [pid for pid, start in targets.items() if pid in procs and procs[pid][1] == start]

targets = {}
while True:
    targets.update(descendants())
    if select.select([sys.stdin], [], [], 2.0)[0] and not sys.stdin.buffer.read1(4096):
        break
for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
    for pid in alive(targets):
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    deadline = time.monotonic() + wait
    while alive(targets) and time.monotonic() < deadline:
        time.sleep(0.1)
"""


def start_cleanup_watchdog() -> subprocess.Popen | None:
    """Start the watchdog of the module docstring (Linux only); it exits after the driver does."""
    if not Path("/proc/self/stat").is_file():
        return None
    watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid())], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    # Keep the write end open for the life of the driver: the OS closes it when the driver exits.
    global _WATCHDOG_PROCESS
    _WATCHDOG_PROCESS = watchdog
    return watchdog


_WATCHDOG_PROCESS: subprocess.Popen | None = None
