# Everything runs from .venv, created and filled on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch/torchvision releases that run here; override for another machine or CUDA build.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
ARGS ?=

.PHONY: install train test test-all lint clean mutants

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e ".[dev,slurm,sweep,rl,text,models]"
	# W&B's sweep engine (checks sweeps/*.yaml in the tests) and qpth (a learn2learn dependency)
	# declare numpy<2 but run on numpy 2: installed without their pins so numpy stays current.
	$(BIN)/pip install -q jsonref jsonschema pydantic scikit-learn scipy cvxpy
	$(BIN)/pip install -q --no-deps "sweeps>=0.2" qpth
	# learn2learn 0.2.0 ships C files that predate Python 3.11: install its runtime
	# dependencies, regenerate its C files from the .pyx sources with Cython, then build it.
	$(BIN)/pip install -q gym scipy requests tqdm "cython<3.1" setuptools wheel
	rm -rf build/l2l && mkdir -p build/l2l
	$(BIN)/pip download -q --no-deps --no-binary :all: learn2learn==0.2.0 -d build/l2l
	tar xzf build/l2l/learn2learn-0.2.0.tar.gz -C build/l2l
	$(BIN)/python -m cython -3 -X embedsignature=True build/l2l/learn2learn-0.2.0/learn2learn/data/*.pyx
	$(BIN)/pip install -q --no-deps --no-build-isolation ./build/l2l/learn2learn-0.2.0
	touch $@

train: $(STAMP)
	$(BIN)/metalab-train $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint
	$(BIN)/pytest -m "not slow" $(ARGS)

# the tests marked slow too (longer end-to-end runs)
test-all: lint
	$(BIN)/pytest $(ARGS)

# Mutation testing of every mutant of the core modules, each module's against its own fast tests
# ([tool.mutmut] in pyproject.toml, MUTANT_TESTS in tests/conftest.py; time measured in
# docs/mutation.md); the kill rates go in docs/mutation.md. Not in CI.
mutants: $(STAMP)
	rm -rf mutants
	OMP_NUM_THREADS=1 METALAB_CACHE=$(CURDIR)/.cache nice -n 10 $(BIN)/mutmut run --max-children 2 $(ARGS)
	$(BIN)/mutmut results

clean:
	rm -rf $(VENV) .cache build/l2l mutants

# A one-node SLURM cluster on this machine (needs root, slurm-wlm and munge) for trying
# launcher=slurm; then: export SLURM_CONF=/tmp/metalab-slurm/slurm.conf
.PHONY: slurm-up slurm-down
slurm-up:
	scripts/slurm/start-local-cluster.sh

slurm-down:
	scripts/slurm/stop-local-cluster.sh
