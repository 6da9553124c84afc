#!/usr/bin/env bash
# Stop the daemons start_slurm.sh started, by the pids it recorded in WORKDIR/pids (never by name):
#   bash tests/functional/slurm/stop_slurm.sh WORKDIR
# SIGTERM first, slurmd before slurmctld before munged; SIGKILL for whatever is left after 10 s.
set -uo pipefail

WORKDIR=${1:?usage: stop_slurm.sh WORKDIR}
PIDS_FILE="$WORKDIR/pids"
[[ -f $PIDS_FILE ]] || exit 0

# Reverse start order: slurmd, then slurmctld, then munged (the others need munge to say goodbye).
mapfile -t entries < <(tac "$PIDS_FILE")
pids=()
for entry in "${entries[@]}"; do
    read -r name pid <<<"$entry"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
        echo "stop_slurm.sh: sent SIGTERM to $name (pid $pid)"
    fi
done

for _ in $(seq 100); do
    alive=()
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null && alive+=("$pid")
    done
    [[ ${#alive[@]} -eq 0 ]] && break
    sleep 0.1
done
for pid in "${alive[@]}"; do
    echo "stop_slurm.sh: pid $pid still alive after 10 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
done
: >"$PIDS_FILE"
