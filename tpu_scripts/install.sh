#!/usr/bin/env bash
# Copies this checkout to every worker and installs it: Python 3.11, requirements.txt,
# jax[tpu] at the pinned jax version, t5 --no-deps (as `make setup` does).
#   tpu_scripts/install.sh --name=freelm [--dry_run]
source "$(dirname "$0")/common.sh"
parse_flags "$@"
REPO=$(cd "$(dirname "$0")/.." && pwd)
ARCHIVE=/tmp/freelm_jax.tar.gz
JAX_VERSION=$(sed -n 's/^jax==//p' "$REPO/requirements.txt")
T5_VERSION=$(sed -n 's/^T5_VERSION := //p' "$REPO/Makefile")
run tar -czf "$ARCHIVE" -C "$REPO" --exclude=.venv --exclude=.git --exclude=runs .
for node in $(nodes); do
  gcloud_tpu tpu-vm scp "$ARCHIVE" "$node:/tmp/freelm_jax.tar.gz" --worker="$WORKER"
done
# The TPU VM images run Ubuntu 22.04, whose python3 is 3.10; the pins need 3.11.
on_workers "sudo apt-get update -qq && sudo apt-get install -y -qq python3.11 python3.11-venv \
&& mkdir -p $REMOTE_DIR && tar -xzf /tmp/freelm_jax.tar.gz -C $REMOTE_DIR \
&& cd $REMOTE_DIR && python3.11 -m venv .venv && .venv/bin/pip install -q -r requirements.txt \
&& .venv/bin/pip install -q 'jax[tpu]==$JAX_VERSION' \
-f https://storage.googleapis.com/jax-releases/libtpu_releases.html \
&& .venv/bin/pip install -q --no-deps t5==$T5_VERSION && touch .venv/.installed"
