#!/usr/bin/env bash
# Follows the train log of worker 0 (or --worker=W; --worker=all: every worker).
#   tpu_scripts/logs.sh --name=freelm [--worker=0] [--dry_run]
source "$(dirname "$0")/common.sh"
WORKER=0
parse_flags "$@"
on_workers "tail -n 200 -F ~/train.log"
