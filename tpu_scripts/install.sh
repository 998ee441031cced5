#!/usr/bin/env bash
# Copies this checkout to every worker and installs it there: Python 3.11 and
# the project with its `tpu` extra (JAX's TPU build), every version at its pin
# in requirements.txt. Neither torch nor transformers (the `interop` extra) is
# installed: training needs neither.
#   tpu_scripts/install.sh --name=freelm [--dry_run]
source "$(dirname "$0")/common.sh"
parse_flags "$@"
REPO=$(cd "$(dirname "$0")/.." && pwd)
ARCHIVE=/tmp/freelm_jax.tar.gz
run tar -czf "$ARCHIVE" -C "$REPO" --exclude=.venv --exclude=.git --exclude=runs .
for node in $(nodes); do
  gcloud_tpu tpu-vm scp "$ARCHIVE" "$node:/tmp/freelm_jax.tar.gz" --worker="$WORKER"
done
# The TPU VM images run Ubuntu 22.04, whose python3 is 3.10; the pins need 3.11.
on_workers "sudo apt-get update -qq && sudo apt-get install -y -qq python3.11 python3.11-venv \
&& mkdir -p $REMOTE_DIR && tar -xzf /tmp/freelm_jax.tar.gz -C $REMOTE_DIR \
&& cd $REMOTE_DIR && python3.11 -m venv .venv && .venv/bin/pip install -q --upgrade pip \
&& .venv/bin/pip install -q -e '.[tpu]' -c requirements.txt && touch .venv/.installed"
