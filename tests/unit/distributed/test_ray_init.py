"""init_ray: which cluster it picks, the environment workers get, idempotency."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

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


DRIVER = r"""
import os, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from nemo_distill.distributed.config import ClusterConfig
from nemo_distill.distributed.ray_init import init_ray
init_ray(ClusterConfig(ray_address="local", gpus_per_node=0, num_cpus=1))
import ray

@ray.remote(num_cpus=0)
class Actor:
    def pid(self):
        return os.getpid()

actor = Actor.remote()
ray.get(actor.pid.remote())
try:
    time.sleep(3)  # the watchdog has seen every process by now (it looks every 2 s)
    print("ready", flush=True)
    time.sleep(300)
finally:
    Path(sys.argv[1]).write_text("the driver's finally ran")
"""


def _process_table() -> dict[int, tuple[int, int]]:
    """``{pid: (ppid, start time)}`` from /proc."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = open(f"/proc/{name}/stat").read().rsplit(")", 1)[1].split()
                table[int(name)] = (int(fields[1]), int(fields[19]))
            except (OSError, IndexError, ValueError):
                pass
    return table


def _descendants(root: int) -> dict[int, int]:
    table, found, frontier = _process_table(), {}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, start) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = start
                frontier.append(pid)
    return found


def _still_running(processes: dict[int, int]) -> list[int]:
    table = _process_table()
    return [pid for pid, start in processes.items() if pid in table and table[pid][1] == start]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="the cleanup watchdog reads /proc (Linux)")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_driver_leaves_no_ray_process_behind(sig, tmp_path):
    """kill / kill -9 of the driver alone (not its process group): the local cluster it started
    (GCS, raylet, dashboard and runtime-env agents, workers) is gone within 20 s; on SIGTERM the
    driver's ``finally`` runs and it exits 143."""
    marker = tmp_path / "finally"
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(marker), str(REPO_ROOT)], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    started: dict[int, int] = {}
    try:
        assert driver.stdout.readline().strip() == "ready"
        started = _descendants(driver.pid)
        assert len(started) >= 4, started  # gcs, raylet, agents, the watchdog, a worker
        driver.send_signal(sig)
        assert driver.wait(timeout=60) == (143 if sig == signal.SIGTERM else -signal.SIGKILL)
        deadline = time.time() + 20
        while _still_running(started) and time.time() < deadline:
            time.sleep(0.5)
        left = {pid: open(f"/proc/{pid}/cmdline").read().replace("\0", " ")[:80] for pid in _still_running(started)}
        assert left == {}, f"still running 20 s after the driver died: {left}"
        assert marker.is_file() == (sig == signal.SIGTERM)
    finally:
        if driver.poll() is None:
            driver.kill()
        for pid in _still_running(started):  # only processes this test started
            os.kill(pid, signal.SIGKILL)


def test_exit_on_sigterm_raises_system_exit_143_and_leaves_a_users_handler_alone():
    from nemo_distill.distributed.ray_init import exit_on_sigterm

    original = signal.getsignal(signal.SIGTERM)
    try:
        def users_handler(signum, frame):
            pass

        signal.signal(signal.SIGTERM, users_handler)
        assert exit_on_sigterm() is False and signal.getsignal(signal.SIGTERM) is users_handler

        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        assert exit_on_sigterm() is True
        with pytest.raises(SystemExit) as exit_info:
            signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        assert exit_info.value.code == 143
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # a second SIGTERM ends the process at once
    finally:
        signal.signal(signal.SIGTERM, original)
