# shellcheck shell=bash
# Shared by the sbatch scripts in this directory (sourced, not run): the hpcthreads command line,
# and one srun step that checkpoints and requeues itself before the time limit.
#
# Variables (environment; sbatch passes the submitting shell's environment to the job):
#   HPCTHREADS_PYTHON       Python that has hpcthreads installed (default: python3)
#   HPCTHREADS_SRUN_MPI     srun --mpi plugin (default: pmi2). pmi2 for MPICH (PyPI or Debian),
#                           pmix for Open MPI; `srun --mpi=list` shows what your Slurm offers
#   HPCTHREADS_SRUN_ARGS    extra srun options, split on spaces (e.g. "-O" to oversubscribe)
#   HPCTHREADS_TARGET       job file or job type: collatz, verify, thread (default: collatz)
#   HPCTHREADS_START        first start value for a job type (2**64 and 1e9 are accepted)
#   HPCTHREADS_COUNT        how many start values (threads, for `thread`)
#   HPCTHREADS_ARGS         more `hpcthreads run` options, split on spaces (e.g. "--batch-size 1e6")
#   HPCTHREADS_OUTPUT       results file (default: hpcthreads-<job id>.h5 in the submit directory)
#   HPCTHREADS_RESUME       1 (default): always pass --resume, so a requeued job continues its file
#   HPCTHREADS_MAX_REQUEUES most times a job requeues itself (default: 20)

HPCTHREADS_PYTHON=${HPCTHREADS_PYTHON:-python3}
HPCTHREADS_SRUN_MPI=${HPCTHREADS_SRUN_MPI:-pmi2}
HPCTHREADS_TARGET=${HPCTHREADS_TARGET:-collatz}
HPCTHREADS_RESUME=${HPCTHREADS_RESUME:-1}
HPCTHREADS_MAX_REQUEUES=${HPCTHREADS_MAX_REQUEUES:-20}
# Exit status of a run that checkpointed on a signal and wants to be resumed
hpcthreads_exit_checkpointed=75

# The `hpcthreads run` command line for OUTPUT [START COUNT], in the array hpcthreads_run
hpcthreads_command() {
    local output=$1 start=${2:-${HPCTHREADS_START:-}} count=${3:-${HPCTHREADS_COUNT:-}}
    local -a extra=()
    read -r -a extra <<<"${HPCTHREADS_ARGS:-}"
    hpcthreads_run=("$HPCTHREADS_PYTHON" -m hpcthreads run "$HPCTHREADS_TARGET" -o "$output")
    [[ -n $start ]] && hpcthreads_run+=(--start "$start")
    [[ -n $count ]] && hpcthreads_run+=(--count "$count")
    [[ $HPCTHREADS_RESUME == 1 ]] && hpcthreads_run+=(--resume)
    hpcthreads_run+=("${extra[@]}")
}

# The `hpcthreads run --campaign DIR` command line, in the array hpcthreads_run
hpcthreads_campaign_command() {
    local -a extra=()
    read -r -a extra <<<"${HPCTHREADS_ARGS:-}"
    hpcthreads_run=("$HPCTHREADS_PYTHON" -m hpcthreads run --campaign "$1" "${extra[@]}")
}

# Run one srun step (the arguments: srun options, then the command). SIGUSR1 sent to this
# batch shell (#SBATCH --signal=B:USR1@SECONDS) is forwarded to the step; a step that then
# exits with status 75 has saved its finished chunks, and the job requeues itself.
hpcthreads_step() {
    local -a srun_extra=()
    read -r -a srun_extra <<<"${HPCTHREADS_SRUN_ARGS:-}"
    hpcthreads_signalled=0
    srun --mpi="$HPCTHREADS_SRUN_MPI" "${srun_extra[@]}" "$@" &
    hpcthreads_step_pid=$!
    trap hpcthreads_forward USR1
    local rc=0
    while :; do
        rc=0
        wait "$hpcthreads_step_pid" || rc=$?
        # A trapped signal interrupts `wait` with a status above 128: the step still runs
        if ((rc > 128)) && kill -0 "$hpcthreads_step_pid" 2>/dev/null; then
            continue
        fi
        break
    done
    trap - USR1
    if ((rc == hpcthreads_exit_checkpointed)) && ((hpcthreads_signalled)); then
        hpcthreads_requeue
    fi
    return "$rc"
}

hpcthreads_forward() {
    hpcthreads_signalled=1
    echo "hpcthreads: $(date +%T) SIGUSR1 (time limit near): asking the run to checkpoint" >&2
    kill -USR1 "$hpcthreads_step_pid" 2>/dev/null || true
}

hpcthreads_requeue() {
    local restarts=${SLURM_RESTART_COUNT:-0}
    if ((restarts >= HPCTHREADS_MAX_REQUEUES)); then
        echo "hpcthreads: checkpointed, but already requeued $restarts times; not again" >&2
        return 0
    fi
    echo "hpcthreads: $(date +%T) checkpointed; requeueing job $SLURM_JOB_ID (restart $((restarts + 1)))" >&2
    scontrol requeue "$SLURM_JOB_ID"
    # The job is pending again; this instance ends here with the status of a requeued job
    exit 0
}

# One line in the job log: which job, which restart, what command
hpcthreads_log_start() {
    echo "hpcthreads: $(date +%T) job ${SLURM_JOB_ID:-?} on ${SLURM_JOB_NODELIST:-?}," \
        "restart ${SLURM_RESTART_COUNT:-0}: ${hpcthreads_run[*]}" >&2
}
