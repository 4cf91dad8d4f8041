#!/usr/bin/env bash
# Create a campaign and submit the array tasks that work on it, then the job that merges it.
# Run on a login node from the checkout's root:
#
#   HPCTHREADS_TARGET=jobs.yaml HPCTHREADS_TASKS=100 slurm/campaign.sh
#   HPCTHREADS_TARGET=verify HPCTHREADS_START=2**68 HPCTHREADS_COUNT=1e13 slurm/campaign.sh
#
# The tasks join one campaign (hpcthreads run --campaign): each claims a unit, runs it, and
# claims the next until none is left. Add capacity at any time with slurm/campaign-add.sh DIR N;
# take it away with scancel. A requeued or preempted task rejoins; a unit whose task was lost
# is resumed by another task once its lease expires.
#
# Variables (and those of slurm/lib.sh, passed on to the tasks):
#   HPCTHREADS_TARGET         job file, or job type with HPCTHREADS_START/COUNT (default: collatz)
#   HPCTHREADS_START          first start value for a job type (default 1)
#   HPCTHREADS_COUNT          how many start values (threads, for `thread`), for a job type
#   HPCTHREADS_UNITS          units per job (default 64)
#   HPCTHREADS_TASKS          array tasks submitted now (default 16)
#   HPCTHREADS_CAMPAIGN_DIR   the campaign directory, on a shared filesystem (default:
#                             campaign-<date>-<time>); an existing campaign is joined, not remade
#   HPCTHREADS_OUTPUT         merged results file, outside the campaign directory
#                             (default: <campaign dir>.h5, beside it)
#   HPCTHREADS_SBATCH_ARGS    extra sbatch options for the array tasks, split on spaces
#                             (e.g. "--ntasks-per-node=64 --time=2:00:00")
#   HPCTHREADS_ARRAY_LIMIT    most array tasks running at once (sbatch --array=...%LIMIT; default: no limit)
#   HPCTHREADS_WAIT           1: wait until the merge job ends, and exit with its status
#   HPCTHREADS_HOME           the checkout holding slurm/lib.sh (default: the one of this script)
# Prints the array job id and the merge job id (also kept in <campaign dir>/slurm-merge-job).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tasks=${HPCTHREADS_TASKS:-16}
HPCTHREADS_CAMPAIGN_DIR=${HPCTHREADS_CAMPAIGN_DIR:-$PWD/campaign-$(date +%Y%m%d-%H%M%S)}
HPCTHREADS_CAMPAIGN_DIR=$(realpath -m "$HPCTHREADS_CAMPAIGN_DIR")
export HPCTHREADS_CAMPAIGN_DIR
export HPCTHREADS_HOME=${HPCTHREADS_HOME:-$(dirname "$here")}
# shellcheck source=slurm/lib.sh
source "$HPCTHREADS_HOME/slurm/lib.sh"

if [[ ! -f $HPCTHREADS_CAMPAIGN_DIR/campaign.json ]]; then
    create=("$HPCTHREADS_PYTHON" -m hpcthreads campaign create "$HPCTHREADS_CAMPAIGN_DIR" "$HPCTHREADS_TARGET"
        --units "${HPCTHREADS_UNITS:-64}")
    [[ -n ${HPCTHREADS_START:-} ]] && create+=(--start "$HPCTHREADS_START")
    [[ -n ${HPCTHREADS_COUNT:-} ]] && create+=(--count "$HPCTHREADS_COUNT")
    "${create[@]}"
fi

read -r -a extra <<<"${HPCTHREADS_SBATCH_ARGS:-}"
log="$HPCTHREADS_CAMPAIGN_DIR/%x-%A_%a.out"
range="0-$((tasks - 1))${HPCTHREADS_ARRAY_LIMIT:+%$HPCTHREADS_ARRAY_LIMIT}"
array=$(sbatch --parsable --array="$range" --output="$log" "${extra[@]}" "$here/array.sbatch")
array=${array%%;*}
echo "array job $array: $tasks tasks on campaign $HPCTHREADS_CAMPAIGN_DIR"

wait_flag=()
[[ ${HPCTHREADS_WAIT:-0} == 1 ]] && wait_flag=(--wait)
# afterany: a task may fail or be cancelled while the others finish its units
merge=$(sbatch --parsable "${wait_flag[@]}" --dependency="afterany:$array" \
    --output="$HPCTHREADS_CAMPAIGN_DIR/%x-%j.out" "$here/merge.sbatch" | tee "$HPCTHREADS_CAMPAIGN_DIR/slurm-merge-job")
echo "merge job ${merge%%;*}: writes ${HPCTHREADS_OUTPUT:-${HPCTHREADS_CAMPAIGN_DIR%/}.h5}"
