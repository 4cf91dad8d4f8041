#!/usr/bin/env bash
# Start a small cluster on this machine, as root: NODES nodes node1..nodeN, each a network
# namespace with its own address and hostname, joined by a bridge; a Slurm controller on node1 and
# a slurmd on every node (8 CPUs and 2 fake GPUs each); one munged. The nodes share the host's
# filesystem (a shared filesystem, as on a cluster): HPCTHREADS_CLUSTER_DIR/shared for outputs.
#
# Every node also runs an sshd on port 2222 that takes the cluster's key (ssh -F DIR/ssh/config),
# for launchers that start ranks over ssh.
#
# Usage: .ci/cluster-up.sh          (idempotent: a cluster left by an earlier start is taken down)
#        .ci/cluster-exec.sh CMD... (a command on node1, as on a login node)
#        .ci/cluster-down.sh        (stops everything and removes namespaces, links and mounts)
#
# Variables: HPCTHREADS_CLUSTER_DIR (default /tmp/hpcthreads-cluster), HPCTHREADS_CLUSTER_NODES
# (default 3), HPCTHREADS_CLUSTER_INSTALL (1: apt-get install Slurm and munge when missing).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dir=${HPCTHREADS_CLUSTER_DIR:-/tmp/hpcthreads-cluster}
nodes=${HPCTHREADS_CLUSTER_NODES:-3}
subnet=10.77.0
bridge=hpct-br0
packages=(slurmctld slurmd slurm-client munge libpmix-dev iproute2 openssh-server openssh-client)

missing=0
for tool in slurmctld slurmd sbatch munged mungekey sshd ssh ip; do
    command -v "$tool" >/dev/null || missing=1
done
if [[ ${HPCTHREADS_CLUSTER_INSTALL:-1} == 1 ]] && ((missing)); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

"$here/cluster-down.sh" >/dev/null 2>&1 || true
mkdir -p "$dir"/{state,log,run,uts,dev,shared,spool,cgroup}
echo "$nodes" >"$dir/nodes"

# slurmd wants the cgroup hierarchy, which `ip netns exec` hides when it remounts /sys:
# keep a view of it here, to be bound back inside each node
mount --rbind /sys/fs/cgroup "$dir/cgroup"
mount --make-rslave "$dir/cgroup"

# The network: a bridge on the host, a veth into every node
ip link add "$bridge" type bridge
ip addr add "$subnet.254/24" dev "$bridge"
ip link set "$bridge" up
hosts="127.0.0.1 localhost"$'\n'
for ((i = 1; i <= nodes; i++)); do
    hosts+="$subnet.$i node$i"$'\n'
done
for ((i = 1; i <= nodes; i++)); do
    node=node$i
    ip netns add "$node"
    ip link add "hpct-v$i" type veth peer name eth0 netns "$node"
    ip link set "hpct-v$i" master "$bridge" up
    ip -n "$node" addr add "$subnet.$i/24" dev eth0
    ip -n "$node" link set eth0 up
    ip -n "$node" link set lo up
    # A hostname of its own: a UTS namespace kept alive by a bind mount
    touch "$dir/uts/$node"
    unshare --uts="$dir/uts/$node" hostname "$node"
    # `ip netns exec` shows these files as the node's /etc/hosts
    mkdir -p "/etc/netns/$node"
    printf '%s' "$hosts" >"/etc/netns/$node/hosts"
done

# munge: one daemon on the host; its socket is a file, which every node sees
mungekey -c -k "$dir/munge.key"
munged --force --key-file="$dir/munge.key" --socket="$dir/munge.socket" \
    --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge.seed"

# sshd on every node, on port 2222 as in the image: root logs in with the cluster's key, which is
# what `mpiexec -launcher ssh` needs (the MPIJob's launcher). Clients: ssh -F "$dir/ssh/config"
mkdir -p "$dir/ssh" /run/sshd
ssh-keygen -q -t ed25519 -N "" -C hpcthreads-cluster -f "$dir/ssh/id_ed25519"
ssh-keygen -q -t ed25519 -N "" -C hpcthreads-cluster-host -f "$dir/ssh/host_ed25519"
cp "$dir/ssh/id_ed25519.pub" "$dir/ssh/authorized_keys"
cat >"$dir/ssh/sshd_config" <<CONF
Port 2222
HostKey $dir/ssh/host_ed25519
AuthorizedKeysFile $dir/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
CONF
cat >"$dir/ssh/config" <<CONF
Host *
    Port 2222
    IdentityFile $dir/ssh/id_ed25519
    IdentitiesOnly yes
    BatchMode yes
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    LogLevel ERROR
CONF

# Fake GPUs, as for the single-node Slurm: links to harmless character devices
ln -s /dev/null "$dir/dev/gpu0"
ln -s /dev/zero "$dir/dev/gpu1"
printf 'Name=gpu File=%s/dev/gpu[0-1]\n' "$dir" >"$dir/gres.conf"

first_job_id=$((($(date +%s) % 6000000) * 10 + 1))
{
    cat <<CONF
ClusterName=hpcthreads-cluster
SlurmctldHost=node1($subnet.1)
FirstJobId=$first_job_id
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
JobRequeue=1
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1
MinJobAge=600
KillWait=5
SlurmdTimeout=30
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
CONF
    for ((i = 1; i <= nodes; i++)); do
        echo "NodeName=node$i NodeAddr=$subnet.$i CPUs=8 Gres=gpu:2 State=UNKNOWN"
    done
    echo "PartitionName=ci Nodes=node[1-$nodes] Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES"
} >"$dir/slurm.conf"

"$here/cluster-node.sh" node1 slurmctld -f "$dir/slurm.conf"
for ((i = 1; i <= nodes; i++)); do
    mkdir -p "$dir/spool/node$i"
    "$here/cluster-node.sh" "node$i" slurmd -f "$dir/slurm.conf"
    "$here/cluster-node.sh" "node$i" "$(command -v sshd)" -f "$dir/ssh/sshd_config" \
        -o "PidFile=$dir/run/sshd-node$i.pid" -E "$dir/log/sshd-node$i.log"
done

for _ in $(seq 150); do
    idle=$("$here/cluster-exec.sh" sinfo -h -o '%t %D' 2>/dev/null | awk '$1 == "idle" {print $2}' || true)
    if [[ ${idle:-0} == "$nodes" ]]; then
        echo "cluster is up: $nodes nodes idle (node1..node$nodes, $subnet.0/24), 8 CPUs and 2 fake GPUs" \
            "each; shared folder $dir/shared; run commands with .ci/cluster-exec.sh"
        exit 0
    fi
    sleep 0.2
done
echo "cluster-up: the nodes did not become idle; logs in $dir/log" >&2
"$here/cluster-exec.sh" sinfo >&2 || true
exit 1
