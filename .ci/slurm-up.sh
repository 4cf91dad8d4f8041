#!/usr/bin/env bash
# Start a real single-node Slurm (munged, slurmctld, slurmd) for the tests, as root.
#
# Usage: .ci/slurm-up.sh
#
# Variables (all optional):
#   HPCTHREADS_SLURM_DIR   where configuration, state, logs and pid files go
#                          (default /tmp/hpcthreads-slurm; wiped first)
#   HPCTHREADS_SLURM_GPUS  fake GPUs to declare on the node (default 2; 0 for none). They are
#                          links to /dev/null-like devices (at most 4), enough to exercise GPU binding in sbatch
#                          scripts on a machine without GPUs.
#   HPCTHREADS_SLURM_CPUS  CPUs to declare on the node (default: the larger of nproc and 8). More than
#                          the machine has lets small multi-rank tests run side by side without -O.
#   HPCTHREADS_SLURM_INSTALL  1 (default): apt-get install Slurm and munge when missing
#
# Afterwards, point the clients at the configuration:
#   export SLURM_CONF="$HPCTHREADS_SLURM_DIR/slurm.conf"
# (tests find it there by themselves). Stop everything with .ci/slurm-down.sh.
set -euo pipefail

dir=${HPCTHREADS_SLURM_DIR:-/tmp/hpcthreads-slurm}
gpus=${HPCTHREADS_SLURM_GPUS:-2}
install=${HPCTHREADS_SLURM_INSTALL:-1}
packages=(slurmctld slurmd slurm-client munge libpmix-dev)

# Install Debian's Slurm and munge when a piece is missing (apt starts no services)
if [[ $install == 1 ]] && ! command -v slurmctld slurmd sbatch munged mungekey >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

# A clean directory: stop whatever a previous run left there first
if [[ -d $dir ]]; then
    "$(dirname "$0")/slurm-down.sh" || true
    rm -rf "$dir"
fi
mkdir -p "$dir"/{state,spool,log,run,dev}
host=$(hostname -s)
cpus=${HPCTHREADS_SLURM_CPUS:-$(($(nproc) > 8 ? $(nproc) : 8))}

# munge: its own key and socket; --force because /tmp is world-writable
mungekey -c -k "$dir/munge.key"
munged --force --key-file="$dir/munge.key" --socket="$dir/munge.socket" \
    --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge.seed"

# Fake GPU device files: Slurm binds them like real ones and sets CUDA_VISIBLE_DEVICES
gres_node=""
gres_conf=""
if ((gpus > 0)); then
    # Slurm wants character devices: links to harmless ones stand in for /dev/nvidiaN
    targets=(/dev/null /dev/zero /dev/full /dev/urandom)
    if ((gpus > ${#targets[@]})); then
        echo "slurm-up: at most ${#targets[@]} fake GPUs" >&2
        exit 2
    fi
    for ((i = 0; i < gpus; i++)); do
        ln -s "${targets[i]}" "$dir/dev/gpu$i"
    done
    gres_node="Gres=gpu:$gpus"
    gres_conf="Name=gpu File=$dir/dev/gpu[0-$((gpus - 1))]"
fi
printf '%s\n' "$gres_conf" >"$dir/gres.conf"

# Job ids differ from one start of this Slurm to the next: MPICH names its shared-memory
# segments after the job step, and a segment left by a killed job of an earlier start with
# the same id would be attached to by the new job, which then fails or hangs in MPI_Init
first_job_id=$((($(date +%s) % 6000000) * 10 + 1))
cat >"$dir/slurm.conf" <<CONF
ClusterName=hpcthreads-ci
SlurmctldHost=$host(127.0.0.1)
FirstJobId=$first_job_id
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job waits this long (default 120 s) before it may start again
AuthInfo=socket=$dir/munge.socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
MpiDefault=none
ReturnToService=2
# Trust the CPU count above rather than the hardware
SlurmdParameters=config_overrides
JobRequeue=1
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1
MinJobAge=600
KillWait=5
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus $gres_node State=UNKNOWN
PartitionName=ci Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF

export SLURM_CONF="$dir/slurm.conf"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"

# Wait until the node takes jobs
for _ in $(seq 100); do
    state=$(sinfo -h -n "$host" -o '%t' 2>/dev/null || true)
    if [[ $state == idle ]]; then
        echo "slurm is up: node $host idle, $cpus CPUs, $gpus fake GPUs; SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.2
done
echo "slurm-up: node $host did not become idle (state: ${state:-none}); logs in $dir/log" >&2
exit 1
