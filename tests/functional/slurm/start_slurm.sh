#!/usr/bin/env bash
# Start a private, throw-away Slurm cluster on this machine (root only): one munged, one slurmctld
# and NUM_NODES slurmd daemons, all with their config, state, sockets and logs under WORKDIR.
#
#   bash tests/functional/slurm/start_slurm.sh WORKDIR [NUM_NODES]
#   export SLURM_CONF=WORKDIR/slurm.conf      # so that sbatch / sinfo / squeue find it
#   sbatch -N1 --export=ALL,COMMAND='...' ray_bare.sub
#   bash tests/functional/slurm/stop_slurm.sh WORKDIR
#
# NUM_NODES > 1 declares nodes n1..nN that all live on this host (distinct slurmd ports, each
# slurmd started with -N nI). That only works when Slurm was built with --enable-multiple-slurmd;
# when it was not, this script exits with status 3 (EXIT_NO_MULTIPLE_SLURMD) after stopping what it
# started, so callers can fall back to a single node.
#
# Installs the Debian packages slurmctld, slurmd, slurm-client and munge when a daemon is missing.
# Every daemon runs in the foreground of a background job, so its pid is exactly the one recorded
# in WORKDIR/pids: stop_slurm.sh kills those pids and nothing else (never by process name, so a
# system Slurm or a second test cluster on the same machine are left alone).
#
# Environment: SLURMCTLD_PORT (default 16817), SLURMD_PORT (default 16818; node i gets +i-1),
# SLURM_START_TIMEOUT (seconds to wait for idle nodes, default 60).
set -euo pipefail

EXIT_NO_MULTIPLE_SLURMD=3
WORKDIR=${1:?usage: start_slurm.sh WORKDIR [NUM_NODES]}
NUM_NODES=${2:-1}
SLURMCTLD_PORT=${SLURMCTLD_PORT:-16817}
SLURMD_PORT=${SLURMD_PORT:-16818}
START_TIMEOUT=${SLURM_START_TIMEOUT:-60}
HERE=$(cd "$(dirname "$0")" && pwd)

if [[ $(id -u) -ne 0 ]]; then
    echo "start_slurm.sh: must run as root (SlurmUser=root, daemons run as root)" >&2
    exit 2
fi

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null; then
        return
    fi
    echo "start_slurm.sh: installing slurmctld slurmd slurm-client munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # The packages' own services are not wanted (we run private daemons that we can stop by pid):
    # a policy-rc.d answering 101 keeps the postinst scripts from starting them.
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
    fi
    local status=0
    apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge || status=$?
    [[ $own_policy -eq 1 ]] && rm -f "$policy"
    return "$status"
}

install_packages
mkdir -p "$WORKDIR"
WORKDIR=$(cd "$WORKDIR" && pwd)
rm -rf "$WORKDIR/state" "$WORKDIR/spool"  # a fresh cluster: no jobs or nodes from an earlier start
mkdir -p "$WORKDIR"/{state,log,munge,spool}
chmod 700 "$WORKDIR/munge"
: >"$WORKDIR/pids"
HOST=$(hostname)

# A private munge key and socket: the system munged (if any) is not touched.
MUNGE_KEY="$WORKDIR/munge/munge.key"
MUNGE_SOCKET="$WORKDIR/munge/munge.socket"
if [[ ! -s $MUNGE_KEY ]]; then
    head -c 1024 /dev/urandom >"$MUNGE_KEY"
    chmod 400 "$MUNGE_KEY"
fi

# The node's real hardware, as slurmd itself reports it ("NodeName=... CPUs=2 ... RealMemory=N").
HARDWARE=$(slurmd -C | head -n1 | sed -e 's/^NodeName=[^ ]* //')

node_names=()
{
    echo "# Written by tests/functional/slurm/start_slurm.sh: a throw-away test cluster."
    echo "ClusterName=nemo-distill-test"
    echo "SlurmctldHost=$HOST"
    echo "SlurmctldPort=$SLURMCTLD_PORT"
    echo "SlurmUser=root"
    echo "SlurmdUser=root"
    echo "AuthType=auth/munge"
    echo "CredType=cred/munge"
    echo "AuthInfo=socket=$MUNGE_SOCKET"
    echo "ProctrackType=proctrack/linuxproc"
    echo "TaskPlugin=task/none"
    echo "SelectType=select/cons_tres"
    echo "SelectTypeParameters=CR_Core"
    echo "MpiDefault=none"
    echo "SchedulerType=sched/backfill"
    echo "ReturnToService=2"
    echo "AccountingStorageType=accounting_storage/none"
    echo "JobCompType=jobcomp/none"
    echo "JobAcctGatherType=jobacct_gather/none"
    # No accounting database: finished jobs are only known to slurmctld, so keep them for a day
    # (scontrol show job <id> then still reports JobState and ExitCode).
    echo "MinJobAge=86400"
    # Time between SIGTERM and SIGKILL on scancel / time limit: the launcher's cleanup runs in it.
    echo "KillWait=30"
    echo "StateSaveLocation=$WORKDIR/state"
    echo "SlurmdSpoolDir=$WORKDIR/spool/%n"
    echo "SlurmctldPidFile=$WORKDIR/slurmctld.pid"
    echo "SlurmdPidFile=$WORKDIR/slurmd-%n.pid"
    echo "SlurmctldLogFile=$WORKDIR/log/slurmctld.log"
    echo "SlurmdLogFile=$WORKDIR/log/slurmd-%n.log"
    if [[ $NUM_NODES -eq 1 ]]; then
        node_names=("$HOST")
        echo "NodeName=$HOST $HARDWARE Port=$SLURMD_PORT State=UNKNOWN"
    else
        for ((i = 1; i <= NUM_NODES; i++)); do
            node_names+=("n$i")
            echo "NodeName=n$i NodeHostname=$HOST NodeAddr=127.0.0.1 $HARDWARE Port=$((SLURMD_PORT + i - 1)) State=UNKNOWN"
        done
    fi
    echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
} >"$WORKDIR/slurm.conf"
export SLURM_CONF="$WORKDIR/slurm.conf"

start_daemon() {  # start_daemon NAME CMD...: run CMD in the foreground of a detached job, record its pid
    local name=$1
    shift
    setsid "$@" >>"$WORKDIR/log/$name.console" 2>&1 </dev/null &
    echo "$name $!" >>"$WORKDIR/pids"
}

stop_and_fail() {  # stop_and_fail STATUS MESSAGE: undo what was started, report, exit
    echo "start_slurm.sh: $2" >&2
    bash "$HERE/stop_slurm.sh" "$WORKDIR" >&2 || true
    exit "$1"
}

start_daemon munged munged --foreground --force --key-file="$MUNGE_KEY" --socket="$MUNGE_SOCKET" \
    --pid-file="$WORKDIR/munge/munged.pid" --log-file="$WORKDIR/log/munged.log" \
    --seed-file="$WORKDIR/munge/munged.seed"
for _ in $(seq 50); do
    [[ -S $MUNGE_SOCKET ]] && break
    sleep 0.1
done
[[ -S $MUNGE_SOCKET ]] || stop_and_fail 1 "munged did not start; see $WORKDIR/log/munged.log"

start_daemon slurmctld slurmctld -D -f "$SLURM_CONF"
for node in "${node_names[@]}"; do
    mkdir -p "$WORKDIR/spool/$node"
    start_daemon "slurmd-$node" slurmd -D -f "$SLURM_CONF" -N "$node"
done

refuses_multiple_slurmd() {  # without --enable-multiple-slurmd Slurm rejects nodes sharing a NodeHostname
    [[ $NUM_NODES -gt 1 ]] && grep -qiE "duplicate|multiple.slurmd" "$WORKDIR"/log/*.log "$WORKDIR"/log/*.console 2>/dev/null
}

deadline=$((SECONDS + START_TIMEOUT))
while true; do
    idle=$(sinfo -h -N -o '%N %t' 2>/dev/null | awk '$2 == "idle"' | sort -u | wc -l)
    [[ $idle -ge $NUM_NODES ]] && break
    if refuses_multiple_slurmd; then
        stop_and_fail "$EXIT_NO_MULTIPLE_SLURMD" "Slurm refuses $NUM_NODES slurmd on one host (not built with --enable-multiple-slurmd)"
    fi
    while read -r name pid; do
        kill -0 "$pid" 2>/dev/null && continue
        tail -n 20 "$WORKDIR/log/$name.console" >&2 || true
        stop_and_fail 1 "$name (pid $pid) exited during start-up; logs in $WORKDIR/log"
    done <"$WORKDIR/pids"
    if ((SECONDS > deadline)); then
        sinfo -N >&2 || true
        tail -n 20 "$WORKDIR"/log/*.log "$WORKDIR"/log/*.console >&2 || true
        stop_and_fail 1 "$idle of $NUM_NODES node(s) idle after ${START_TIMEOUT}s; logs in $WORKDIR/log"
    fi
    sleep 0.5
done
echo "start_slurm.sh: $NUM_NODES node(s) idle; export SLURM_CONF=$SLURM_CONF"
