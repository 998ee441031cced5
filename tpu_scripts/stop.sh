#!/usr/bin/env bash
# Stops the training process that launch.sh started on every worker.
#   tpu_scripts/stop.sh --name=freelm [--dry_run]
source "$(dirname "$0")/common.sh"
parse_flags "$@"
on_workers 'if [ -f ~/train.pid ]; then kill "$(cat ~/train.pid)" 2>/dev/null; rm -f ~/train.pid; fi; true'
