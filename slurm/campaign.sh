#!/usr/bin/env bash
# Submit a job-array campaign over one large range, then the job that merges its parts.
# Run on a login node from the checkout's root:
#
#   HPCTHREADS_START=2**40 HPCTHREADS_COUNT=1e12 HPCTHREADS_TASKS=100 slurm/campaign.sh
#
# Variables (and those of slurm/lib.sh, passed on to the jobs):
#   HPCTHREADS_COUNT          size of the whole range (required); HPCTHREADS_START (default 1)
#   HPCTHREADS_TASKS          array tasks, one part each (default 16)
#   HPCTHREADS_CAMPAIGN_DIR   directory of the parts (default: campaign-<date>-<time>)
#   HPCTHREADS_OUTPUT         merged results file (default: <campaign dir>/merged.h5)
#   HPCTHREADS_SBATCH_ARGS    extra sbatch options for the array tasks, split on spaces
#   HPCTHREADS_ARRAY_LIMIT    most array tasks running at once (sbatch --array=...%LIMIT; default: no limit)
#                             (e.g. "--ntasks-per-node=64 --time=2:00:00")
#   HPCTHREADS_WAIT           1: wait until the merge job ends, and exit with its status
#   HPCTHREADS_HOME           the checkout holding slurm/lib.sh (default: the one of this script)
# Prints the array job id and the merge job id.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
: "${HPCTHREADS_COUNT:?set HPCTHREADS_COUNT to the size of the whole range}"
tasks=${HPCTHREADS_TASKS:-16}
HPCTHREADS_CAMPAIGN_DIR=${HPCTHREADS_CAMPAIGN_DIR:-$PWD/campaign-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$HPCTHREADS_CAMPAIGN_DIR"
export HPCTHREADS_CAMPAIGN_DIR HPCTHREADS_TASKS=$tasks HPCTHREADS_COUNT
export HPCTHREADS_HOME=${HPCTHREADS_HOME:-$(dirname "$here")}

read -r -a extra <<<"${HPCTHREADS_SBATCH_ARGS:-}"
log="$HPCTHREADS_CAMPAIGN_DIR/%x-%A_%a.out"
range="0-$((tasks - 1))${HPCTHREADS_ARRAY_LIMIT:+%$HPCTHREADS_ARRAY_LIMIT}"
array=$(sbatch --parsable --array="$range" --output="$log" "${extra[@]}" "$here/array.sbatch")
array=${array%%;*}
echo "array job $array: $tasks tasks, parts in $HPCTHREADS_CAMPAIGN_DIR"

wait_flag=()
[[ ${HPCTHREADS_WAIT:-0} == 1 ]] && wait_flag=(--wait)
merge=$(sbatch --parsable "${wait_flag[@]}" --dependency="afterok:$array" --kill-on-invalid-dep=yes \
    --output="$HPCTHREADS_CAMPAIGN_DIR/%x-%j.out" "$here/merge.sbatch")
echo "merge job ${merge%%;*}: writes ${HPCTHREADS_OUTPUT:-$HPCTHREADS_CAMPAIGN_DIR/merged.h5}"
