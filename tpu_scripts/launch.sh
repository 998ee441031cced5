#!/usr/bin/env bash
# Starts the same train command on every worker, in the background (log: ~/train.log).
# TPU VM workers find each other (jax.distributed.initialize() auto-detects them).
#   tpu_scripts/launch.sh --name=freelm [--dry_run] -- --gin_file=gin/paper.gin \
#       --gin.INIT_FROM="'/models/gpt2-medium'" --model_dir=gs://BUCKET/runs/paper
source "$(dirname "$0")/common.sh"
parse_flags "$@"
((${#ARGS[@]})) || die "give the train flags after --, e.g. -- --gin_file=gin/base.gin --model_dir=gs://BUCKET/run"
TRAIN=$(printf '%q ' .venv/bin/python -m freelm_jax.train "${ARGS[@]}")
TRAIN=${TRAIN% }
on_workers "cd $REMOTE_DIR && (nohup $TRAIN > ~/train.log 2>&1 & echo \$! > ~/train.pid)"
