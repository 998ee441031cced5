# make setup : create .venv, install the pinned set and this project (editable)
#              (idempotent; quick when done). ACCELERATOR=cuda12 or tpu adds
#              JAX's GPU or TPU build; PYTHON=python3.12 picks the interpreter.
# make demo  : train + evaluate FreeLM on the embedded default
# make test  : run the test suite
# make compare : parity vs lm_only vs teacher_only, same budget (runs/compare);
#                SEEDS=0,1,2 trains each with every seed (mean, sd and n in the table),
#                ARGS='--variant="NAME=BINDING[;BINDING...]"' adds a row
# make bench : step benchmark (JSON lines; gin/base.gin here, any config via gin)
PYTHON ?= python3
# Extras of pyproject.toml installed by `make setup`: the interop references
# and the test tools, plus JAX's accelerator build when ACCELERATOR is set.
ACCELERATOR ?=
comma := ,
EXTRAS := interop,dev$(if $(ACCELERATOR),$(comma)$(ACCELERATOR))
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL_DIR ?= runs/demo
# Seeds of `make compare`, e.g. 0,1,2 (empty: the config's SEED only).
SEEDS ?=
# Test files run this many at a time (pytest-xdist; a file's tests share a process).
TEST_WORKERS ?= 2
TORCH_VERSION := 2.13.0
# CPU-only torch wheels (torch is only for reading pytorch_model.bin and for the
# interop tests' references). Unreachable: pip warns and falls back to its
# other indexes; set TORCH_INDEX to a mirror, or empty for pip's defaults.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: setup demo compare test bench clean

# One stamp per ACCELERATOR, so that adding one re-runs the (idempotent) steps.
STAMP := $(VENV)/.installed$(if $(ACCELERATOR),-$(ACCELERATOR))

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info; sys.exit(0 if v >= (3, 11) else \
	  f"error: freelm_jax needs Python 3.11 or newer; $(PYTHON) is {v.major}.{v.minor}. " \
	  "Choose another interpreter: make setup PYTHON=python3.11 (or python3.12).")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and on its own, so that requirements.txt finds a CPU build
	# installed (PyPI's Linux default is a CUDA build of several GB).
	$(PY) -m pip install -q --no-deps $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -r requirements.txt
	# This project, editable (every command works from any directory), with
	# its extras; requirements.txt keeps every version at its pin. setuptools
	# warns on every editable install of a layout like this one (folders of
	# the checkout could shadow packages); PYTHONWARNINGS keeps that off.
	PYTHONWARNINGS=ignore $(PY) -m pip install -q -e ".[$(EXTRAS)]" -c requirements.txt
	touch $@

demo: setup
	$(PY) -m freelm_jax.train --gin_file=gin/base.gin --model_dir=$(MODEL_DIR)

compare: setup
	$(PY) -m freelm_jax.compare --gin_file=gin/base.gin --output_dir=runs/compare \
	  $(if $(SEEDS),--seeds=$(SEEDS)) $(ARGS)

bench: setup
	$(PY) -m freelm_jax.bench --gin_file=gin/base.gin

test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15 tests

clean:
	rm -rf $(VENV) runs
