#!/usr/bin/env bash
# Take the test cluster of .ci/cluster-up.sh down: every daemon, namespace, link, mount and file it
# made, leaving the machine as it was. Safe to run when nothing is up.
set -uo pipefail

dir=${HPCTHREADS_CLUSTER_DIR:-/tmp/hpcthreads-cluster}
bridge=hpct-br0

stop() {
    local pidfile=$1 pid
    [[ -f $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null
}

# Jobs still running (a test that failed half way) end first, so no step outlives Slurm
if [[ -s $dir/slurm.conf ]] && command -v scancel >/dev/null; then
    SLURM_CONF=$dir/slurm.conf timeout 10 scancel --full --user="$(id -un)" 2>/dev/null && sleep 1
fi
if [[ -d $dir/run ]]; then
    for pidfile in "$dir"/run/slurmd-*.pid "$dir/run/slurmctld.pid" "$dir"/run/sshd-*.pid "$dir/run/munged.pid"; do
        stop "$pidfile"
    done
fi
# Whatever ran in the nodes (job steps, ranks) goes with them
for ns in $(ip netns list 2>/dev/null | awk '/^node[0-9]+/ {print $1}'); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
        kill -9 "$pid" 2>/dev/null
    done
    ip netns del "$ns" 2>/dev/null
    rm -rf "/etc/netns/$ns"
done
for link in $(ip -o link show 2>/dev/null | awk -F': ' '/hpct-v[0-9]+/ {sub(/@.*/, "", $2); print $2}'); do
    ip link del "$link" 2>/dev/null
done
ip link del "$bridge" 2>/dev/null
if [[ -d $dir ]]; then
    for uts in "$dir"/uts/*; do
        [[ -e $uts ]] && umount "$uts" 2>/dev/null
    done
    umount -R "$dir/cgroup" 2>/dev/null
    # Never into a mount that stayed (the cgroup view above all)
    if mountpoint -q "$dir/cgroup" 2>/dev/null; then
        echo "cluster-down: $dir/cgroup is still mounted; $dir left in place" >&2
    else
        rm -rf --one-file-system "$dir"
    fi
fi
exit 0
