# make setup : create .venv and install everything (idempotent; quick when done)
# make demo  : train + evaluate FreeLM on the embedded default (CPU)
# make test  : run the test suite
# make compare : parity vs lm_only vs teacher_only, same budget (runs/compare)
# make bench : step benchmark (JSON lines; gin/base.gin here, any config via gin)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL_DIR ?= runs/demo
# Test files run this many at a time (pytest-xdist; a file's tests share a process).
TEST_WORKERS ?= 2
T5_VERSION := 0.9.4
TORCH_VERSION := 2.13.0
# CPU-only torch wheels (torch is only for reading pytorch_model.bin and for the
# interop tests' references). Unreachable: pip warns and falls back to its
# other indexes; set TORCH_INDEX to a mirror, or empty for pip's defaults.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: setup demo compare test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and on its own, so that requirements.txt finds a CPU build
	# installed (PyPI's Linux default is a CUDA build of several GB).
	$(PY) -m pip install -q --no-deps $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -r requirements.txt
	# t5 without its dependencies: they would replace seqio/tensorflow-datasets
	# with seqio-nightly/tfds-nightly (same modules, different code).
	$(PY) -m pip install -q --no-deps t5==$(T5_VERSION)
	touch $@

demo: setup
	$(PY) -m freelm_jax.train --gin_file=gin/base.gin --model_dir=$(MODEL_DIR)

compare: setup
	$(PY) -m freelm_jax.compare --gin_file=gin/base.gin --output_dir=runs/compare $(ARGS)

bench: setup
	$(PY) -m freelm_jax.bench --gin_file=gin/base.gin

test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15 tests

clean:
	rm -rf $(VENV) runs
