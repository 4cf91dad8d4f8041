#!/usr/bin/env bash
# Stop the single-node Slurm started by .ci/slurm-up.sh, by the pids in its pid files.
#
# Variables: HPCTHREADS_SLURM_DIR (default /tmp/hpcthreads-slurm), as for slurm-up.sh.
set -uo pipefail

dir=${HPCTHREADS_SLURM_DIR:-/tmp/hpcthreads-slurm}

# Jobs still running (a test that failed half way) end first, so no step outlives Slurm
if [[ -s $dir/slurm.conf ]] && command -v scancel >/dev/null; then
    SLURM_CONF=$dir/slurm.conf scancel --full --user="$(id -un)" 2>/dev/null || true
    sleep 1
fi

for daemon in slurmd slurmctld munged; do
    pidfile="$dir/run/$daemon.pid"
    [[ -s $pidfile ]] || continue
    pid=$(<"$pidfile")
    if kill "$pid" 2>/dev/null; then
        # Give it a few seconds to leave, then insist
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
done
echo "slurm is down ($dir)"
