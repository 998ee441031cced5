# make setup : create .venv and install everything (idempotent; quick when done)
# make demo  : train + evaluate FreeLM on the embedded WordNet default (CPU)
# make test  : run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL_DIR ?= runs/demo
T5_VERSION := 0.9.4

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# t5 without its dependencies: they would replace seqio/tensorflow-datasets
	# with seqio-nightly/tfds-nightly (same modules, different code).
	$(PY) -m pip install -q --no-deps t5==$(T5_VERSION)
	touch $@

demo: setup
	$(PY) -m freelm_jax.train --gin_file=gin/base.gin --model_dir=$(MODEL_DIR)

test: setup
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) runs
