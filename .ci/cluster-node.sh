#!/usr/bin/env bash
# Run a command on a node of the test cluster (.ci/cluster-up.sh): in its network and hostname
# namespaces, with the node's /etc/hosts and the cgroup hierarchy that slurmd expects.
#
# Usage: .ci/cluster-node.sh NODE CMD [ARGS...]
set -euo pipefail

dir=${HPCTHREADS_CLUSTER_DIR:-/tmp/hpcthreads-cluster}
node=$1
shift
if [[ ! -e $dir/uts/$node ]]; then
    echo "cluster-node: no node $node (is the cluster up? .ci/cluster-up.sh)" >&2
    exit 2
fi
# `ip netns exec` gives the command a mount namespace of its own with /sys remounted for the node:
# bind the host's cgroup view back before the command starts
# shellcheck disable=SC2016 # expanded by the inner shell
exec nsenter --uts="$dir/uts/$node" -- ip netns exec "$node" \
    bash -c 'mount --rbind "$0/cgroup" /sys/fs/cgroup 2>/dev/null || true; exec "$@"' "$dir" "$@"
