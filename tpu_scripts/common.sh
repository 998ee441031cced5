# Shared by the tpu_scripts: flags, defaults and `run` (which --dry_run prints).
#
# Flags (every script): --name=NAME --zone=ZONE --project=PROJECT
#   --accelerator_type=TYPE (v4-8, v4-32, v5e-8 = v5litepod-8, v5e-16, ...)
#   --num_slices=N (N > 1: a multi-slice queued resource; nodes NAME-0 .. NAME-(N-1))
#   --version=RUNTIME (default: the TPU VM image for TYPE's generation)
#   --dry_run (print the gcloud commands instead of running them)
# Environment defaults: TPU_NAME, TPU_ZONE, TPU_PROJECT, TPU_TYPE.
set -euo pipefail

NAME=${TPU_NAME:-freelm}
ZONE=${TPU_ZONE:-us-central2-b}
PROJECT=${TPU_PROJECT:-}
ACCELERATOR=${TPU_TYPE:-v4-8}
NUM_SLICES=1
VERSION=
DRY_RUN=0
WORKER=all
REMOTE_DIR='~/freelm_jax'
ARGS=()  # what follows `--`: the train command's flags (launch.sh)

die() { echo "error: $*" >&2; exit 2; }

parse_flags() {
  while (($#)); do
    case $1 in
      --name=*) NAME=${1#*=} ;;
      --zone=*) ZONE=${1#*=} ;;
      --project=*) PROJECT=${1#*=} ;;
      --accelerator_type=*) ACCELERATOR=${1#*=} ;;
      --num_slices=*) NUM_SLICES=${1#*=} ;;
      --version=*) VERSION=${1#*=} ;;
      --worker=*) WORKER=${1#*=} ;;
      --dry_run) DRY_RUN=1 ;;
      --) shift; ARGS=("$@"); break ;;
      *) die "unknown flag $1 (see the header of tpu_scripts/common.sh)" ;;
    esac
    shift
  done
  [[ $NUM_SLICES =~ ^[1-9][0-9]*$ ]] || die "--num_slices=$NUM_SLICES is not a positive integer"
  ACCELERATOR=${ACCELERATOR/#v5e-/v5litepod-}  # gcloud's name for v5e
  [[ -n $VERSION ]] || VERSION=$(default_version "$ACCELERATOR")
}

default_version() {
  case $1 in
    v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) die "--accelerator_type=$1: give --version for it (no default runtime known)" ;;
  esac
}

# Prints (with --dry_run) or runs a command; printed commands are shell-quoted.
run() {
  if ((DRY_RUN)); then
    local arg words=()
    for arg in "$@"; do
      if [[ $arg =~ ^[A-Za-z0-9_./=:,@%+-]+$ ]]; then words+=("$arg"); else words+=("${arg@Q}"); fi
    done
    echo "${words[*]}"
  else
    "$@"
  fi
}

gcloud_tpu() {
  local project=()
  [[ -n $PROJECT ]] && project=(--project="$PROJECT")
  run gcloud compute tpus "$@" --zone="$ZONE" "${project[@]}"
}

# The TPU VM nodes: NAME, or NAME-0 .. NAME-(N-1) for a multi-slice run.
nodes() {
  if ((NUM_SLICES == 1)); then
    echo "$NAME"
  else
    for ((i = 0; i < NUM_SLICES; i++)); do echo "$NAME-$i"; done
  fi
}

# Runs a shell command on every worker (or --worker=W) of every node.
on_workers() {
  local node
  for node in $(nodes); do
    gcloud_tpu tpu-vm ssh "$node" --worker="$WORKER" --command="$1"
  done
}
