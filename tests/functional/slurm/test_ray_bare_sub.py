"""ray_bare.sub on a real Slurm cluster (marker ``slurm``; the cluster comes from conftest.py).

Each test submits the launcher with sbatch, waits for the job, and checks what a user would: the job's
state and exit code, the log files, the driver's output, and that no process of the job outlives it.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time
from pathlib import Path

import psutil
import pytest

from slurm_harness import CLUSTER_NAME, TERMINAL_JOB_STATES, SlurmCluster, SlurmJob, free_port, port_is_free, tail

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[3]
LAUNCHER = REPO / "ray_bare.sub"
VENV = Path(sys.prefix)  # the virtual environment running these tests; the job activates it too

# The driver of the main test: a 2-step CPU distillation of tiny models through the launcher's Ray
# cluster, as a user would submit it (paths are relative to the repo root, the submit directory).
DISTILLATION_COMMAND = (
    "python examples/run_distillation.py --config configs/distillation_tiny_cpu.yaml "
    "distillation.max_num_steps=2 policy.model_name={student} teacher.model_name={teacher} "
    "logger.log_dir={log_dir} logger.exp_numbering=false checkpointing.enabled=false"
)
FAILING_COMMAND = "python -c \"import sys; print('boom'); sys.exit(3)\""

# A Ray driver that runs one task pinned to each live node and reports where they ran.
NODE_PROBE_DRIVER = """
import json, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init(address="auto")  # ray_bare.sub exports RAY_ADDRESS
live = [node["NodeID"] for node in ray.nodes() if node["Alive"]]

@ray.remote(num_cpus=1)
def node_id():
    return ray.get_runtime_context().get_node_id()

ran_on = ray.get([
    node_id.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote() for node in live
])
print("PROBE " + json.dumps({"live_nodes": sorted(live), "ran_on": sorted(ran_on),
                              "cpus": ray.cluster_resources().get("CPU", 0)}))
"""


def _ray_env() -> dict[str, str]:
    """Launcher knobs for a job on this shared machine: free ports for every fixed Ray port."""
    ray_port = free_port()
    head_args = f"--ray-client-server-port={free_port()} --dashboard-agent-listen-port={free_port()} --dashboard-port={free_port()}"
    return {
        "VENV": str(VENV),
        "RAY_PORT": str(ray_port),
        "RAY_HEAD_ARGS": head_args,
        # Several raylets may share this host (two slurmd): each needs its own agent port.
        "RAY_WORKER_ARGS": f"--dashboard-agent-listen-port={free_port()}",
        "CPUS_PER_WORKER": "2",
        "GPUS_PER_NODE": "0",
        "RAY_WAIT_TIMEOUT": "120",
    }


def _read(path: Path) -> str:
    assert path.is_file(), f"missing {path}"
    return path.read_text(errors="replace")


def _explain(job: SlurmJob, log_dir: Path) -> str:
    """The job output and the Ray logs, for assertion messages."""
    parts = [f"job {job.job_id}: {job.state}, exit code {job.exit_code}"]
    for path in (job.stdout_path, *(log_dir / name for name in ("ray-driver.log", "ray-head.log", "ray-worker-1.log"))):
        parts.append(f"--- {path}\n{tail(path)}")
    return "\n".join(parts)


def _ray_session_dir(node_log: Path) -> Path:
    """The Ray session directory a `ray start` log names (where its nodes' logs went)."""
    match = re.search(r"(\S+)/logs/ray_process_exit\.log", _read(node_log))
    assert match, f"no Ray session directory in {node_log}"
    return Path(match.group(1))


def _job_processes(job_id: int) -> list[psutil.Process]:
    """Live processes started by the job: Slurm puts SLURM_JOB_ID (and our cluster's name) in their environment."""
    found = []
    for proc in psutil.process_iter(["pid", "name"]):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            environ = proc.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if environ.get("SLURM_JOB_ID") == str(job_id) and environ.get("SLURM_CLUSTER_NAME") == CLUSTER_NAME:
            found.append(proc)
    return found


def _assert_ray_gone(job_id: int, ray_port: int) -> None:
    """No process of the job is left (Ray's included), the GCS port is closed, the address file is gone."""
    deadline = time.monotonic() + 30  # Slurm reaps step processes asynchronously
    while (left := _job_processes(job_id)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"processes of job {job_id} still running: {[(p.pid, p.name()) for p in left]}"
    assert port_is_free(ray_port), f"something still listens on the GCS port {ray_port}"
    address_file = Path("/tmp/ray/ray_current_cluster")
    if address_file.is_file():
        assert not address_file.read_text().strip().endswith(f":{ray_port}"), "stale ray_current_cluster left behind"


@pytest.mark.timeout(600)  # may include installing Slurm and building the tiny models
def test_distillation_runs_on_the_slurm_ray_cluster(slurm_cluster: SlurmCluster, tiny_model_dir, tiny_teacher_dir, tmp_path):
    ray_env = _ray_env()
    run_dir = tmp_path / "run"
    command = DISTILLATION_COMMAND.format(student=tiny_model_dir, teacher=tiny_teacher_dir, log_dir=run_dir)
    job_id = slurm_cluster.sbatch(
        ["-N1", f"--output={tmp_path}/%x-%j.out", "--export=ALL", str(LAUNCHER)], cwd=REPO,
        extra_env={**ray_env, "COMMAND": command, "BASE_LOG_DIR": str(tmp_path)},
    )
    log_dir = tmp_path / f"{job_id}-logs"
    job = slurm_cluster.wait(job_id, timeout_s=420, on_timeout_show=(log_dir / "ray-driver.log",))

    assert (job.state, job.exit_code) == ("COMPLETED", 0), _explain(job, log_dir)
    assert job.stdout_path == tmp_path / f"nemo-distill-bare-{job_id}.out"  # job name from the #SBATCH header
    launcher_output = _read(job.stdout_path)
    assert "Ray cluster ready: 1/1 nodes, 2/2 CPUs, 0/0 GPUs" in launcher_output
    assert "finished with exit code 0" in launcher_output
    assert sorted(path.name for path in log_dir.iterdir()) == ["ray-driver.log", "ray-head.log", "ray-status.log"]
    assert "Active:" in _read(log_dir / "ray-status.log")

    steps = [json.loads(line)["step"] for line in _read(run_dir / "metrics.jsonl").splitlines() if line.strip()]
    assert steps == [1, 2], _explain(job, log_dir)
    # The driver attached to the launcher's cluster (RAY_ADDRESS) rather than starting its own.
    session_logs = _ray_session_dir(log_dir / "ray-head.log") / "logs"
    assert list(session_logs.glob("python-core-driver-*")), f"no driver connected to the cluster in {session_logs}"
    _assert_ray_gone(job_id, int(ray_env["RAY_PORT"]))


def test_failing_command_fails_the_job_with_its_exit_code(slurm_cluster: SlurmCluster, tmp_path):
    ray_env = _ray_env()
    # Submitted from a scratch directory with the user's own syntax and no --output / BASE_LOG_DIR,
    # so the header's output name and the default log directory (the submit directory) are used.
    job_id = slurm_cluster.sbatch(
        ["-N1", f"--export=ALL,COMMAND={FAILING_COMMAND}", str(LAUNCHER)], cwd=tmp_path, extra_env=ray_env,
    )
    log_dir = tmp_path / f"{job_id}-logs"
    job = slurm_cluster.wait(job_id, timeout_s=180)

    assert (job.state, job.exit_code) == ("FAILED", 3), _explain(job, log_dir)
    assert job.stdout_path == tmp_path / f"nemo-distill-bare-{job_id}.out"
    assert "boom" in _read(log_dir / "ray-driver.log")
    launcher_output = _read(job.stdout_path)
    assert "driver exited with code 3" in launcher_output
    assert "Ray stopped on 1 node(s)" in launcher_output
    _assert_ray_gone(job_id, int(ray_env["RAY_PORT"]))


@pytest.mark.timeout(300)
def test_multi_node_cluster_runs_tasks_on_every_node(slurm_cluster: SlurmCluster, tmp_path):
    ray_env = _ray_env()
    probe = tmp_path / "node_probe.py"
    probe.write_text(NODE_PROBE_DRIVER)
    if slurm_cluster.num_nodes >= 2:
        # Two slurmd on this host: a real `sbatch -N2`, head on n1 and a worker on n2.
        sbatch_args = ["-N2"]
        command = f'python {probe} && echo "FROM_SETUP=$FROM_SETUP"'
    else:
        # Slurm refused two slurmd per host: a second raylet joins from the driver instead, on
        # another node address and ports, and is stopped again before the driver exits.
        sbatch_args = ["-N1"]
        command = (
            f'ray start --block --address="$RAY_ADDRESS" --node-ip-address=127.0.0.1 --num-cpus=2 '
            f'--dashboard-agent-listen-port={free_port()} > {tmp_path}/second-raylet.log 2>&1 & second=$!; '
            'for i in $(seq 60); do [ "$(ray status --address "$RAY_ADDRESS" | grep -c " node_")" -ge 2 ] && break; sleep 2; done; '
            f'python {probe}; rc=$?; kill -TERM $second; wait $second; echo "FROM_SETUP=$FROM_SETUP"; exit $rc'
        )
    setup = f"export FROM_SETUP=yes; touch {tmp_path}/setup-ran-on-$SLURMD_NODENAME"
    job_id = slurm_cluster.sbatch(
        [*sbatch_args, f"--output={tmp_path}/%x-%j.out", "--export=ALL", str(LAUNCHER)], cwd=REPO,
        extra_env={**ray_env, "COMMAND": command, "SETUP_COMMAND": setup, "BASE_LOG_DIR": str(tmp_path)},
    )
    log_dir = tmp_path / f"{job_id}-logs"
    job = slurm_cluster.wait(job_id, timeout_s=240, on_timeout_show=(log_dir / "ray-worker-1.log",))

    assert (job.state, job.exit_code) == ("COMPLETED", 0), _explain(job, log_dir)
    driver_output = _read(log_dir / "ray-driver.log")
    probe_line = next((line for line in driver_output.splitlines() if line.startswith("PROBE ")), None)
    assert probe_line, _explain(job, log_dir)
    report = json.loads(probe_line.removeprefix("PROBE "))
    assert len(report["live_nodes"]) == 2
    assert report["ran_on"] == report["live_nodes"]  # one task ran on each node
    assert report["cpus"] == 4
    assert "FROM_SETUP=yes" in driver_output  # SETUP_COMMAND's exports reach the driver
    if slurm_cluster.num_nodes >= 2:
        assert "Ray cluster ready: 2/2 nodes, 4/4 CPUs, 0/0 GPUs" in _read(job.stdout_path)
        assert (log_dir / "ray-worker-1.log").is_file()
        assert sorted(path.name for path in tmp_path.glob("setup-ran-on-*")) == ["setup-ran-on-n1", "setup-ran-on-n2"]
        assert "Ray stopped on 2 node(s)" in _read(job.stdout_path)
    _assert_ray_gone(job_id, int(ray_env["RAY_PORT"]))


def test_scancel_stops_driver_and_ray_and_names_the_signal(slurm_cluster: SlurmCluster, tmp_path):
    ray_env = _ray_env()
    job_id = slurm_cluster.sbatch(
        ["-N1", f"--output={tmp_path}/%x-%j.out", "--export=ALL,COMMAND=sleep 300", str(LAUNCHER)], cwd=REPO,
        extra_env={**ray_env, "BASE_LOG_DIR": str(tmp_path)},
    )
    output = tmp_path / f"nemo-distill-bare-{job_id}.out"
    deadline = time.monotonic() + 120
    while "driver on" not in (output.read_text() if output.is_file() else ""):
        ended = slurm_cluster.job_fields(job_id)["JobState"] in TERMINAL_JOB_STATES
        if ended or time.monotonic() > deadline:
            slurm_cluster.scancel(job_id)
            pytest.fail(f"the driver of job {job_id} never started:\n{tail(output)}")
        time.sleep(0.5)
    assert _job_processes(job_id), "the job's processes should be visible while it runs"

    slurm_cluster.scancel(job_id)
    job = slurm_cluster.wait(job_id, timeout_s=90)

    assert job.state == "CANCELLED"
    launcher_output = _read(output)
    assert "received SIGTERM" in launcher_output
    assert "Ray stopped on 1 node(s)" in launcher_output
    assert "ended by SIGTERM" in launcher_output
    _assert_ray_gone(job_id, int(ray_env["RAY_PORT"]))


START_UP_FAILURES = {  # case -> the launcher's error message
    "busy_port": "is already in use (another Ray head?); choose another RAY_PORT",
    "head_cannot_start": "the Ray head exited during start-up; see",
    "resources_never_join": "Ray has 1/1 nodes, 1/2 CPUs, 0/0 GPUs after 15s (RAY_WAIT_TIMEOUT)",
}


@pytest.mark.parametrize("case", sorted(START_UP_FAILURES))
def test_start_up_failures_fail_the_job_with_a_clear_error(slurm_cluster: SlurmCluster, tmp_path, case):
    ray_env = _ray_env()
    if case == "head_cannot_start":
        ray_env["RAY_HEAD_ARGS"] += " --no-such-ray-flag"
    elif case == "resources_never_join":
        # The head advertises 1 CPU (click keeps the last --num-cpus) while the launcher expects 2.
        ray_env.update(RAY_HEAD_ARGS=ray_env["RAY_HEAD_ARGS"] + " --num-cpus=1", RAY_WAIT_TIMEOUT="15")
    with socket.socket() as squatter:
        if case == "busy_port":
            squatter.bind(("", int(ray_env["RAY_PORT"])))
            squatter.listen()
        job_id = slurm_cluster.sbatch(
            ["-N1", f"--output={tmp_path}/%x-%j.out", "--export=ALL,COMMAND=echo driver-ran", str(LAUNCHER)], cwd=REPO,
            extra_env={**ray_env, "BASE_LOG_DIR": str(tmp_path)},
        )
        job = slurm_cluster.wait(job_id, timeout_s=120)

    log_dir = tmp_path / f"{job_id}-logs"
    assert (job.state, job.exit_code) == ("FAILED", 1), _explain(job, log_dir)
    launcher_output = _read(job.stdout_path)
    assert START_UP_FAILURES[case] in launcher_output
    assert not (log_dir / "ray-driver.log").exists()  # the driver never ran
    _assert_ray_gone(job_id, int(ray_env["RAY_PORT"]))
