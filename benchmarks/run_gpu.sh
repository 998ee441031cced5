#!/usr/bin/env bash
# The GPU step benchmark: our step benchmark (the 0.3B config, then
# single-change variants) and, optionally, the peer baselines, back to back on
# one card. Writes raw JSON lines to OUTPUT_DIR/<date>-<card>.jsonl (ours carry
# `config` and `device`; the peers' lines get "source": "peer") and logs to
# OUTPUT_DIR/<date>-<card>.log. Variants start only while the time budget lasts.
#
#   bash benchmarks/run_gpu.sh [OUTPUT_DIR]             # on a GPU host (see BENCHMARKS.md)
#   BENCH_DRY=1 bash benchmarks/run_gpu.sh [OUTPUT_DIR] # CPU: the demo config cut to one layer, no peers
#
# OUTPUT_DIR: the first argument, else $OUT, else benchmarks/results.
# Environment: PYTHON (default python3); PEERS (path to your own peer script,
# run with --batch 16 --seq 1024 --steps N, see BENCHMARKS.md; unset or
# missing: the peers are skipped); WHEELS (optional directory of .whl files,
# e.g. gin-config, installed into a temporary site directory first);
# BENCH_BUDGET_S (default 400: the whole script ends within about that many
# seconds; a variant gets what is left, at most 150 s, and none starts under
# 60 s); BENCH_STEPS (default 10).
set -u
OUT=${1:-${OUT:-}}  # a relative OUTPUT_DIR is relative to the caller's directory
if [[ -n $OUT ]]; then mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 1; fi
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results}
BUDGET=${BENCH_BUDGET_S:-400}
STEPS=${BENCH_STEPS:-10}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

if [[ -n "${WHEELS:-}" && -z "${BENCH_DRY:-}" ]]; then
  compgen -G "$WHEELS/*.whl" >/dev/null || { echo "error: WHEELS=$WHEELS holds no .whl file" >&2; exit 1; }
  SITE=$(mktemp -d)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl || { echo "error: installing $WHEELS/*.whl failed" >&2; exit 1; }
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi

if [[ -n "${BENCH_DRY:-}" ]]; then
  CARD=cpu
  export JAX_PLATFORMS=cpu
  BASE=(--gin_file=gin/base.gin --gin.network.ModelConfig.num_layers=1
        --gin.network.ModelConfig.vocab_pad_multiple=128
        --gin.models.LanguageObjective.logits_chunk=16
        --gin.TEACHER_SEQ_LEN=32 --teacher_pack_len=64 --teacher_min_len=8
        --steps=1 --warmup_steps=1)
  VARIANTS=("no_logits_chunk --gin.models.LanguageObjective.logits_chunk=0")
else
  CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr -c 'A-Za-z0-9\n' '-')
  CARD=${CARD:-unknown-gpu}
  BASE=(--gin_file=gin/bench/freelm_0.3b_h100.gin --teacher_pack_len=1024
        --steps="$STEPS" --warmup_steps=2)
  # name, then our bench flags (LM step only); each is its own process.
  VARIANTS=(
    "lm_causal_only --nolm_segment_ids"
    "unrolled_layers --gin.network.ModelConfig.scan_layers=False"
    "no_logits_chunk --gin.models.LanguageObjective.logits_chunk=0"
    "latency_hiding XLA_FLAGS=--xla_gpu_enable_latency_hiding_scheduler=true"
    "no_triton_gemm XLA_FLAGS=--xla_gpu_enable_triton_gemm=false"
    "xla_attention --gin.network.ModelConfig.attention_impl='xla'"
    "remat_full --gin.network.ModelConfig.remat_policy='full'"
  )
fi
STAMP=$(date -u +%Y-%m-%d)
RESULTS="$OUT/$STAMP-$CARD.jsonl"
LOG="$OUT/$STAMP-$CARD.log"
: >"$RESULTS"
START=$SECONDS

# run_ours SECONDS LABEL [XLA_FLAGS=...] [flags...]: appends our JSON lines.
run_ours() {
  local limit=$1 label=$2; shift 2
  local env=() rc=0 lines
  if [[ ${1:-} == XLA_FLAGS=* ]]; then env=("$1"); shift; fi
  echo "== ours: $label (t=$((SECONDS - START))s)" | tee -a "$LOG"
  lines=$(env "${env[@]}" timeout "$limit" "$PY" -m freelm_jax.bench "${BASE[@]}" \
          --label="$label" "$@" 2>>"$LOG") || rc=$?
  grep '^{' <<<"$lines" >>"$RESULTS"
  if (( rc )); then
    echo "{\"label\": \"$label\", \"error\": \"exit $rc (see $(basename "$LOG"))\"}" >>"$RESULTS"
  fi
  return $rc
}

run_peers() {
  local script=${PEERS:-}
  if [[ -z $script ]]; then
    echo "== peers skipped: PEERS is not set" | tee -a "$LOG"
    return
  elif [[ ! -f $script ]]; then
    echo "== peers skipped: PEERS=$script is not a file" | tee -a "$LOG"
    return
  fi
  echo "== peers: $script (t=$((SECONDS - START))s)" | tee -a "$LOG"
  timeout 200 "$PY" "$script" --batch 16 --seq 1024 --steps "$STEPS" 2>>"$LOG" \
    | tee -a "$LOG" | grep '^{' | "$PY" -c '
import json, sys
for line in sys.stdin:
    print(json.dumps(dict(json.loads(line), source="peer")), flush=True)' >>"$RESULTS"
}

# If cuDNN attention fails here, the three main rows come from XLA attention.
run_ours 180 main || [[ -n "${BENCH_DRY:-}" ]] ||
  run_ours 150 main_xla_attention --gin.network.ModelConfig.attention_impl="'xla'"
if [[ -z "${BENCH_DRY:-}" ]]; then run_peers; fi
for variant in "${VARIANTS[@]}"; do
  left=$((BUDGET - (SECONDS - START)))
  if (( left < 60 )); then
    echo "== ${BUDGET}s budget spent: skipping $variant" | tee -a "$LOG"
    continue
  fi
  read -r -a words <<<"$variant"
  run_ours $((left < 150 ? left : 150)) "${words[@]}" --objectives=lm
done
echo "== done in $((SECONDS - START))s: $RESULTS" | tee -a "$LOG"
