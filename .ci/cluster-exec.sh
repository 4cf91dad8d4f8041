#!/usr/bin/env bash
# Run a command on node1 of the test cluster as a user on a login node would: the Slurm clients
# configured, MPI told to talk over TCP between nodes, the exit status passed through.
#
# Usage: .ci/cluster-exec.sh CMD [ARGS...]      for example: .ci/cluster-exec.sh srun -N 3 hostname
#
# UCX_TLS=tcp,self: MPICH's UCX netmod would otherwise talk between the namespaces through shared
# memory (they are one machine), and nothing would cross the network. UCX_NET_DEVICES=eth0: with
# every interface (loopback too) in its address, a rank's UCX address is long enough that Slurm
# 22.05's pmi2 plugin sometimes splits MPICH's PMI put requests ("value not properly terminated in
# client request") and MPI_Init fails. A site's MPI on a real fabric needs none of this.
set -euo pipefail

dir=${HPCTHREADS_CLUSTER_DIR:-/tmp/hpcthreads-cluster}
export SLURM_CONF=$dir/slurm.conf
export UCX_TLS=${UCX_TLS:-tcp,self}
export UCX_NET_DEVICES=${UCX_NET_DEVICES:-eth0}
exec "$(dirname "$0")/cluster-node.sh" node1 "$@"
