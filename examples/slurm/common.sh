# Sourced by the sbatch scripts of this directory (submit them from the repository root).
#
# run_requeueable CMD...   runs CMD in the background and waits for it, so that signals reach it:
#   * SIGUSR1 (sent by Slurm 120 s before the time limit: #SBATCH --signal=B:USR1@120) is turned into
#     SIGTERM for CMD -- llm-unlearn train then finishes its current step, keeps its last complete
#     chunk and exits with code 3 -- and the job is requeued; its next start runs the same command,
#     which resumes (train: after the last complete chunk; evaluate: finished stages are reused).
#   * SIGTERM / SIGINT (scancel, preemption) are forwarded to CMD, without a requeue of our own
#     (with #SBATCH --requeue Slurm requeues preempted jobs itself).
# Why USR1 and not TERM for the time limit: scancel also sends TERM, and a cancelled job must stay
# cancelled; a distinct signal tells the two apart.

set -uo pipefail

log() { echo "[$(date '+%F %T')] $*"; }

run_requeueable() {
    _requeue=0
    trap '_requeue=1; log "time limit near: asking the run to stop after its current step"; kill -TERM "$_child" 2>/dev/null' USR1
    trap 'log "SIGTERM: forwarding it to the run"; kill -TERM "$_child" 2>/dev/null' TERM INT
    log "running: $*"
    "$@" &
    _child=$!
    # a trapped signal interrupts `wait`: wait again until the run has really ended
    while kill -0 "$_child" 2>/dev/null; do wait "$_child"; done
    _rc=0
    wait "$_child" || _rc=$?
    trap - USR1 TERM INT
    if [ "$_requeue" = 1 ] && [ -n "${SLURM_JOB_ID:-}" ] && [ "${AUTO_REQUEUE:-1}" = 1 ]; then
        log "exit code $_rc; requeueing job $SLURM_JOB_ID: its next start resumes"
        scontrol requeue "$SLURM_JOB_ID"
        exit 0
    fi
    log "exit code $_rc"
    return "$_rc"
}

# activate the environment and keep the compute node offline (models and data are local paths)
setup_env() {
    cd "${SLURM_SUBMIT_DIR:-.}" || exit 1
    if [ -f "${VENV:-.venv}/bin/activate" ]; then  # or an environment already active (module, conda)
        # shellcheck disable=SC1091
        source "${VENV:-.venv}/bin/activate"
    fi
    export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
    GPUS="${GPUS:-${SLURM_GPUS_ON_NODE:-1}}"
    log "job ${SLURM_JOB_ID:-local} (restart ${SLURM_RESTART_COUNT:-0}) on $(hostname), $GPUS GPU(s)"
}
