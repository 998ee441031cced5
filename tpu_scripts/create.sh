#!/usr/bin/env bash
# Creates the TPU VM (one slice) or a multi-slice queued resource.
#   tpu_scripts/create.sh --name=freelm --zone=us-central2-b --accelerator_type=v4-8 [--dry_run]
#   tpu_scripts/create.sh --accelerator_type=v5e-16 --zone=us-west4-a           # 4 hosts
#   tpu_scripts/create.sh --accelerator_type=v4-32 --num_slices=2              # DCN data axis
source "$(dirname "$0")/common.sh"
parse_flags "$@"
if ((NUM_SLICES == 1)); then
  gcloud_tpu tpu-vm create "$NAME" --accelerator-type="$ACCELERATOR" --version="$VERSION"
else
  gcloud_tpu queued-resources create "$NAME" --node-prefix="$NAME" \
    --node-count="$NUM_SLICES" --accelerator-type="$ACCELERATOR" --runtime-version="$VERSION"
fi
