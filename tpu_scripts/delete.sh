#!/usr/bin/env bash
# Deletes the TPU VM (or the multi-slice queued resource and its nodes).
#   tpu_scripts/delete.sh --name=freelm [--dry_run]
source "$(dirname "$0")/common.sh"
parse_flags "$@"
if ((NUM_SLICES == 1)); then
  gcloud_tpu tpu-vm delete "$NAME" --quiet
else
  gcloud_tpu queued-resources delete "$NAME" --force --quiet
fi
