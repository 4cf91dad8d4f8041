#!/usr/bin/env bash
# Add capacity to a running campaign: submit N more array tasks that join it, and make the
# campaign's merge job (if slurm/campaign.sh submitted one that still waits) wait for them too.
#
#   slurm/campaign-add.sh CAMPAIGN_DIR N [sbatch options...]
#
# Variables: those of slurm/array.sbatch and slurm/lib.sh (HPCTHREADS_ARGS, HPCTHREADS_PYTHON, ...), and
#   HPCTHREADS_HOME   the checkout holding slurm/lib.sh (default: the one of this script)
# Prints the new array job id.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
if (($# < 2)); then
    echo "usage: $0 CAMPAIGN_DIR N [sbatch options...]" >&2
    exit 2
fi
dir=$(realpath -m "$1")
tasks=$2
shift 2
if [[ ! -f $dir/campaign.json ]]; then
    echo "hpcthreads: $dir is not a campaign (no campaign.json)" >&2
    exit 2
fi
export HPCTHREADS_CAMPAIGN_DIR=$dir HPCTHREADS_HOME=${HPCTHREADS_HOME:-$(dirname "$here")}
array=$(sbatch --parsable --array="0-$((tasks - 1))" --output="$dir/%x-%A_%a.out" "$@" "$here/array.sbatch")
array=${array%%;*}
echo "array job $array: $tasks more tasks on campaign $dir"
if [[ -s $dir/slurm-merge-job ]]; then
    merge=$(<"$dir/slurm-merge-job")
    merge=${merge%%;*}
    current=$(squeue -h -j "$merge" -o %E 2>/dev/null || true)
    if [[ -n $current && $current != "(null)" ]]; then
        # squeue shows a dependency as afterany:ID_*(unfulfilled); scontrol wants afterany:ID
        current=${current//(unfulfilled)/}
        current=${current//_\*/}
        scontrol update JobId="$merge" Dependency="$current,afterany:$array"
        echo "merge job $merge now also waits for array job $array"
    fi
fi
