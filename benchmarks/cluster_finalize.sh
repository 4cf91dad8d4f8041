#!/usr/bin/env bash
# Do ranks leave MPI_Finalize on the test cluster? ITERATIONS times in a row (default 20): a
# 3-node run of slurm/cpu.sbatch and a campaign of 2 tasks, each task on the 3 nodes
# (slurm/campaign.sh, waited for until its merge job ends); then the lines of the finalize
# guard (hpcthreads/runtime/finalize.py: "finalize guard fired") are counted in every job log.
# Exits 1 when a job failed or a rank reached the guard.
#
#   .ci/cluster-up.sh && benchmarks/cluster_finalize.sh [ITERATIONS]
#
# Variables: HPCTHREADS_CLUSTER_DIR (the cluster of .ci/cluster-up.sh, default
# /tmp/hpcthreads-cluster), HPCTHREADS_PYTHON (default: .venv-mpio/bin/python, Debian's MPICH),
# HPCTHREADS_FINALIZE_GRACE (the guard's seconds, default 60 as in any run), KEEP=1 (keep the
# work folder under the cluster's shared folder). Takes about 40 s an iteration on two cores.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
iterations=${1:-20}
dir=${HPCTHREADS_CLUSTER_DIR:-/tmp/hpcthreads-cluster}
work=$dir/shared/finalize-loop-$$
guard="finalize guard fired"

# As tests/slurmkit.py points jobs at the test cluster: its Slurm, MPI over TCP between the nodes
export SLURM_CONF=$dir/slurm.conf UCX_TLS=${UCX_TLS:-tcp,self} UCX_NET_DEVICES=${UCX_NET_DEVICES:-eth0}
export HPCTHREADS_PYTHON=${HPCTHREADS_PYTHON:-$repo/.venv-mpio/bin/python} HPCTHREADS_HOME=$repo
if [[ ! -s $SLURM_CONF ]] || ! sinfo -h >/dev/null 2>&1; then
    echo "cluster_finalize: the test cluster is not up ($dir); start it with .ci/cluster-up.sh" >&2
    exit 2
fi
mkdir -p "$work"
[[ ${KEEP:-0} == 1 ]] || trap 'rm -rf "$work"' EXIT

# count_guard FILES...: the guard's lines in the files
count_guard() {
    cat "$@" 2>/dev/null | grep -cF "$guard" || true
}

verdict() {
    if (($1 == 0)); then echo completed; else echo FAILED; fi
}

# finish JOB: wait until the job ends (polled every second: `sbatch --wait` polls ever more slowly);
# status 0 when it completed
finish() {
    local state
    while :; do
        state=$(scontrol show job -o "$1" 2>/dev/null | grep -oE 'JobState=[A-Z_]+' | cut -d= -f2)
        case $state in
            PENDING | RUNNING | CONFIGURING | COMPLETING | REQUEUED | "") sleep 1 ;;
            COMPLETED) return 0 ;;
            *) return 1 ;;
        esac
    done
}

total_guard=0 total_failed=0 logs=0
t_start=$SECONDS
for ((i = 1; i <= iterations; i++)); do
    here=$work/$i
    mkdir -p "$here"
    t0=$SECONDS
    cpu_rc=0
    job=$(HPCTHREADS_OUTPUT=$here/cpu.h5 HPCTHREADS_COUNT=200000 sbatch --parsable -N 3 --ntasks-per-node=2 \
        --output="$here/cpu.log" "$repo/slurm/cpu.sbatch")
    finish "${job%%;*}" || cpu_rc=1
    t1=$SECONDS
    campaign_rc=0
    HPCTHREADS_TARGET=collatz HPCTHREADS_COUNT=300000 HPCTHREADS_UNITS=4 HPCTHREADS_TASKS=2 \
        HPCTHREADS_CAMPAIGN_DIR=$here/campaign HPCTHREADS_OUTPUT=$here/campaign.h5 \
        HPCTHREADS_SBATCH_ARGS="-N 3 --ntasks-per-node=1" "$repo/slurm/campaign.sh" >"$here/campaign.txt"
    # The merge job runs after both tasks (afterany): its end is the campaign's
    finish "$(cut -d';' -f1 "$here/campaign/slurm-merge-job")" || campaign_rc=1
    t2=$SECONDS
    job_logs=("$here/cpu.log" "$here"/campaign/*.out)
    found=$(count_guard "${job_logs[@]}")
    if ((cpu_rc != 0)) || ! grep -q "^wrote " "$here/cpu.log"; then
        total_failed=$((total_failed + 1))
    fi
    if ((campaign_rc != 0)) || [[ ! -f $here/campaign.h5 ]]; then
        total_failed=$((total_failed + 1))
    fi
    total_guard=$((total_guard + found))
    logs=$((logs + ${#job_logs[@]}))
    printf 'iteration %d/%d: cpu.sbatch -N 3 %s (%d s), campaign of 2 tasks %s (%d s), %d job logs, guard lines %d\n' \
        "$i" "$iterations" "$(verdict "$cpu_rc")" $((t1 - t0)) "$(verdict "$campaign_rc")" $((t2 - t1)) "${#job_logs[@]}" "$found"
done
echo "cluster_finalize: $iterations iterations in $((SECONDS - t_start)) s: $total_failed failed job(s)," \
    "$total_guard guard line(s) in $logs job logs"
((total_failed == 0 && total_guard == 0))
