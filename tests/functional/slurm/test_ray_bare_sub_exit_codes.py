"""ray_bare.sub's exit code and cleanup without Slurm or Ray: ``srun``, ``scontrol`` and ``ray`` are
shell stand-ins on PATH (a fake head listens on the port; ``ray status`` reports one node), so the
script's own logic runs for real in a few seconds. The job's exit code is the driver's, including a
driver killed by a signal or a driver that died because a worker did, and on every exit (driver
done, driver failed, SIGTERM from scancel) the Ray step is stopped.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
LAUNCHER = REPO / "ray_bare.sub"

FAKE_SRUN = """#!/bin/bash
# srun [--options...] COMMAND ARGS...: run COMMAND here
while [[ $1 == -* ]]; do shift; done
exec "$@"
"""
FAKE_SCONTROL = """#!/bin/bash
[[ $1 == show && $2 == hostnames ]] && echo fake-node
"""
# `ray start --block --head`: listen on the port and record the pid; `ray status`: one node, 2 CPUs.
FAKE_RAY = f"""#!/bin/bash
if [[ $1 == start ]]; then
    port=$(printf '%s\\n' "$@" | sed -n 's/^--port=//p')
    echo $$ > "$FAKE_RAY_PID_FILE"
    exec {sys.executable} -c "import socket, time; s = socket.socket(); s.bind(('127.0.0.1', $port)); s.listen(); time.sleep(600)"
fi
if [[ $1 == status ]]; then
    printf 'Node status\\nActive:\\n 1 node_fake\\nPending:\\nResources\\n 0.0/2.0 CPU\\n 0.0/0.0 GPU\\n'
fi
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def fake_slurm(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL), ("ray", FAKE_RAY)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {
        **os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "fake-node",
        "SLURMD_NODENAME": "fake-node", "SLURM_SUBMIT_DIR": str(tmp_path), "BASE_LOG_DIR": str(tmp_path / "logs"),
        "VENV": str(tmp_path / "no-venv"), "GPUS_PER_NODE": "0", "CPUS_PER_WORKER": "2", "HEAD_IP": "127.0.0.1",
        "RAY_PORT": str(_free_port()), "RAY_STATUS_PERIOD": "600", "FAKE_RAY_PID_FILE": str(tmp_path / "ray.pid"),
        "RAY_TMPDIR": str(tmp_path / "raytmp"),
    }
    return env, tmp_path


def _ray_is_stopped(tmp_path: Path) -> bool:
    pid = int((tmp_path / "ray.pid").read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").is_file() and open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.parametrize(
    "command, code",
    [("true", 0), ("exit 3", 3), ("kill -9 $$", 137),
     # what run_distillation.py does when a worker dies: a traceback naming the role, exit 1
     ("echo 'WorkerDiedError: trainer worker rank 0 died' >&2; exit 1", 1)],
    ids=["success", "failure", "driver-killed", "worker-died"],
)
def test_the_job_exits_with_the_driver_code_and_stops_ray(fake_slurm, command, code):
    env, tmp_path = fake_slurm
    result = subprocess.run(["bash", str(LAUNCHER)], env={**env, "COMMAND": command}, capture_output=True, text=True, timeout=60)
    assert result.returncode == code, result.stdout + result.stderr
    assert f"driver exited with code {code}" in result.stdout
    assert "Ray stopped on 1 node(s)" in result.stdout and f"finished with exit code {code}" in result.stdout
    assert _ray_is_stopped(tmp_path)


def test_sigterm_stops_the_driver_and_ray_and_exits_143(fake_slurm):
    env, tmp_path = fake_slurm
    marker = tmp_path / "driver-started"
    command = f"echo $$ > {marker}.pid; touch {marker}; sleep 600"
    job = subprocess.Popen(["bash", str(LAUNCHER)], env={**env, "COMMAND": command}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    deadline = time.time() + 30
    while not marker.is_file():
        assert job.poll() is None and time.time() < deadline, job.stdout.read() if job.poll() is not None else "no driver"
        time.sleep(0.1)
    job.send_signal(signal.SIGTERM)  # what scancel sends to the batch script
    output, _ = job.communicate(timeout=60)
    assert job.returncode == 143, output
    assert "ended by SIGTERM" in output and "Ray stopped on 1 node(s)" in output
    assert _ray_is_stopped(tmp_path)
    driver = int(Path(f"{marker}.pid").read_text())
    with pytest.raises(ProcessLookupError):  # the driver's process group was stopped too
        os.kill(driver, 0)
