"""A private Slurm cluster on this machine for the ``slurm`` tests: start, submit, poll, stop.

``start_slurm.sh`` installs Slurm when it is missing (apt-get), then starts munged, slurmctld and
``num_nodes`` slurmd daemons; with two nodes they are ``n1`` and ``n2`` on this one host, which
needs a Slurm built with multiple-slurmd support (Debian 12's is). Where Slurm refuses, it exits 3
and :func:`start_cluster` falls back to one node; ``SlurmCluster.num_nodes`` says which it got.
``stop_slurm.sh`` stops the daemons by the pids recorded at start.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
START_SCRIPT = HERE / "start_slurm.sh"
STOP_SCRIPT = HERE / "stop_slurm.sh"
CLUSTER_NAME = "nemo-distill-test"  # ClusterName in start_slurm.sh's slurm.conf
EXIT_NO_MULTIPLE_SLURMD = 3  # start_slurm.sh's status when Slurm refuses several slurmd per host
TERMINAL_JOB_STATES = frozenset({
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
    "TIMEOUT",
})


def _ephemeral_floor() -> int:
    """The first port the kernel hands to outgoing connections (they may take any port above it)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Test ports come from below the kernel's ephemeral range and above Ray's worker ports (10002-19999):
# an OS-picked "free" port is an ephemeral one, which any outgoing connection (Ray makes many) can
# take before the server binds it; that failed a CI run ("Failed to start the grpc server").
PORT_RANGE = (20000, min(32000, _ephemeral_floor() - 1))


def free_port() -> int:
    """A TCP port nothing listens on right now, outside the ephemeral range (see ``PORT_RANGE``)."""
    return _free_port_range(1)


def port_is_free(port: int) -> bool:
    """True when nothing listens on ``port`` on any address (TIME_WAIT leftovers do not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError:
            return False
        return True


def _free_port_range(count: int) -> int:
    """The first of ``count`` consecutive free ports (node i's slurmd gets base + i - 1)."""
    low, high = PORT_RANGE
    for _ in range(100):
        base = random.randint(low, high - count)
        if all(port_is_free(port) for port in range(base, base + count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports found between {low} and {high}")


@dataclass(frozen=True)
class SlurmJob:
    """What ``scontrol show job`` says about a finished job."""

    job_id: int
    state: str  # JobState, e.g. COMPLETED, FAILED, CANCELLED
    exit_code: int  # first half of ExitCode=<code>:<signal>
    stdout_path: Path  # StdOut: the batch script's output file


@dataclass(frozen=True)
class SlurmCluster:
    """A running test cluster; ``env`` is what sbatch/squeue/scontrol need (SLURM_CONF, no outer SLURM_*)."""

    workdir: Path
    num_nodes: int
    env: dict[str, str]

    def sbatch(self, args: list[str], *, cwd: Path, extra_env: dict[str, str] | None = None) -> int:
        """Submit with ``sbatch --parsable ARGS`` from ``cwd``; returns the job id."""
        result = subprocess.run(
            ["sbatch", "--parsable", *args], cwd=cwd, env={**self.env, **(extra_env or {})},
            capture_output=True, text=True, timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"sbatch {args} failed ({result.returncode}): {result.stderr}")
        return int(result.stdout.strip().split(";")[0])

    def job_fields(self, job_id: int) -> dict[str, str]:
        """``scontrol show job -o`` as a dict (MinJobAge keeps finished jobs there for a day)."""
        result = subprocess.run(
            ["scontrol", "show", "job", "-o", str(job_id)], env=self.env, capture_output=True, text=True, timeout=30,
        )
        if result.returncode != 0:
            raise RuntimeError(f"scontrol show job {job_id} failed: {result.stderr}")
        fields: dict[str, str] = {}
        for token in result.stdout.split():
            key, _, value = token.partition("=")
            fields.setdefault(key, value)
        return fields

    def wait(self, job_id: int, *, timeout_s: float, on_timeout_show: tuple[Path, ...] = ()) -> SlurmJob:
        """Poll until the job reaches a terminal state; on timeout cancel it and fail showing its logs."""
        deadline = time.monotonic() + timeout_s
        while True:
            fields = self.job_fields(job_id)
            if fields["JobState"] in TERMINAL_JOB_STATES:
                return SlurmJob(
                    job_id=job_id, state=fields["JobState"], exit_code=int(fields["ExitCode"].split(":")[0]),
                    stdout_path=Path(fields["StdOut"]),
                )
            if time.monotonic() > deadline:
                self.scancel(job_id)
                shown = "\n".join(f"--- {path}\n{tail(path)}" for path in (Path(fields["StdOut"]), *on_timeout_show))
                pytest.fail(f"job {job_id} still {fields['JobState']} after {timeout_s:.0f}s; cancelled it\n{shown}")
            time.sleep(1)

    def scancel(self, job_id: int) -> None:
        subprocess.run(["scancel", str(job_id)], env=self.env, check=True, timeout=30)


def tail(path: Path, chars: int = 3000) -> str:
    """The end of a log file, or ``(missing)``."""
    return path.read_text(errors="replace")[-chars:] if path.is_file() else "(missing)"


def _run_start_script(workdir: Path, num_nodes: int, env: dict[str, str]) -> subprocess.CompletedProcess:
    ports = {"SLURMCTLD_PORT": str(free_port()), "SLURMD_PORT": str(_free_port_range(num_nodes))}
    return subprocess.run(
        ["bash", str(START_SCRIPT), str(workdir), str(num_nodes)], env={**env, **ports},
        capture_output=True, text=True, timeout=900,  # the first start may apt-get install Slurm
    )


def start_cluster(workdir: Path, num_nodes: int) -> SlurmCluster:
    """Start the daemons (falling back to one node if Slurm refuses ``num_nodes`` on one host)."""
    # When these tests themselves run inside a Slurm job (the runbook's smoke test), the outer
    # job's SLURM_* variables must not leak into the nested cluster's sbatch.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    started = _run_start_script(workdir, num_nodes, env)
    if started.returncode == EXIT_NO_MULTIPLE_SLURMD:
        num_nodes = 1
        started = _run_start_script(workdir, num_nodes, env)
    if started.returncode != 0:
        raise RuntimeError(f"start_slurm.sh failed ({started.returncode}):\n{started.stdout[-3000:]}\n{started.stderr[-3000:]}")
    return SlurmCluster(workdir=workdir, num_nodes=num_nodes, env={**env, "SLURM_CONF": str(workdir / "slurm.conf")})


def stop_cluster(cluster: SlurmCluster) -> None:
    subprocess.run(["bash", str(STOP_SCRIPT), str(cluster.workdir)], timeout=60, check=False)
