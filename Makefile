# FedPrune-Sparse: every command a researcher needs. `make help` lists them.
# Each target sets up what it needs (the .venv, the packages, the Jupyter kernel) on first use.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch/torchvision are installed first, pinned, so pip never picks a multi-GB surprise build.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
KERNEL_NAME := fedprune-sparse

# Batch knobs: make ablations ROUNDS=5 SEEDS="0 1 2" JOBS=2 FORCE=1 BACKEND=local|dask|slurm
SEEDS ?= 0
# One unit per core at a time; each unit runs on one thread (same numbers whatever JOBS is).
JOBS ?= $(shell nproc 2>/dev/null || echo 1)
# make test: one pytest worker per core (each test process uses one torch thread)
TEST_WORKERS ?= $(JOBS)
BACKEND ?= local
ROUNDS ?=
FORCE ?=
SET ?=
ABLATIONS ?= params/ablations/*.yaml
BATCH ?= ablations
# Extra flags for `make run`, e.g. make run ARGS="--rounds 5"
ARGS ?=
# SLURM job settings, e.g. SLURM_ARGS="--slurm-time 04:00:00 --slurm-partition gpu --slurm-cpus 2"
SLURM_ARGS ?=

BATCH_FLAGS = --backend $(BACKEND) --jobs $(JOBS) --seeds $(SEEDS) --name $(BATCH) \
	$(if $(ROUNDS),--set rounds=$(ROUNDS)) $(foreach s,$(SET),--set $(s)) $(if $(FORCE),--force) $(SLURM_ARGS) \
	$(if $(RESULTS),--results_dir $(RESULTS))

.DEFAULT_GOAL := help
.PHONY: help venv run test test-deps ablations reproduce analysis report report-pdf pdf-deps lab bench \
	notebooks \
	strip-notebooks

help:
	@echo "FedPrune-Sparse"
	@echo "  make run          default hybrid experiment through papermill + its HTML report"
	@echo "  make test         the test suite (real MNIST: set FEDPRUNE_DATA_ROOT)"
	@echo "  make ablations    every params/ablations/*.yaml (ROUNDS= SEEDS= JOBS= FORCE=1 BACKEND=)"
	@echo "  make reproduce    McMahan et al. 2017's non-IID MNIST CNN rows (params/reproduce/): hours"
	@echo "  make analysis     dissertation figures and tables into results/analysis/"
	@echo "  make report       HTML reports of the analysis and every run notebook"
	@echo "  make report-pdf   the same as PDF (installs headless Chromium)"
	@echo "  make lab          JupyterLab with the project's kernel"
	@echo "  make bench        speed and memory benchmark into results/bench/bench.json"
	@echo "  make notebooks    regenerate the notebooks and the READMEs' parameter table from the config"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install -q $(TORCH_SPEC) 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install -q -e '.[notebooks,dask,dev]' 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import torch, torchvision, papermill, fedprune_core"
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL_NAME) \
		--display-name "FedPrune-Sparse (.venv)" > /dev/null
	if [ -d .git ]; then $(VENV)/bin/nbstripout --install --attributes .gitattributes; fi
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m fedprune_core notebook --params params/default.yaml --report html $(ARGS) \
		$(if $(FORCE),--overwrite)

test: $(STAMP) test-deps
	$(PY) -m pytest -q -n $(TEST_WORKERS)

ablations: $(STAMP)
	$(PY) -m fedprune_core batch run --params $(ABLATIONS) $(BATCH_FLAGS)

# McMahan et al. 2017, Table 2 (params/reproduce/*.yaml), then the table beside the paper's in
# results/reproduce/. Hours on a laptop CPU (README: "The published table, rerun").
reproduce: BATCH = reproduce
reproduce: $(STAMP)
	$(PY) -m fedprune_core batch run --params params/reproduce/*.yaml $(BATCH_FLAGS)
	$(PY) -c "from fedprune_core.analysis import write_reproduce; \
		write_reproduce('$(or $(RESULTS),results)')"

analysis: $(STAMP)
	mkdir -p results/analysis
	$(PY) -m papermill notebooks/analysis.ipynb results/analysis/analysis.ipynb \
		-k python3 --cwd . --no-progress-bar

# Reports are written beside each executed notebook, code hidden (fedprune_core.tools.reports).
REPORT_NOTEBOOKS := results/analysis/analysis.ipynb results/*/experiment.ipynb

report: $(STAMP)
	$(PY) -m fedprune_core.tools.reports html --skip-missing $(REPORT_NOTEBOOKS)

report-pdf: $(STAMP) pdf-deps
	$(PY) -m fedprune_core.tools.reports pdf --skip-missing $(REPORT_NOTEBOOKS)

# What the tests exercise for real: headless Chromium (PDF) and a single-node SLURM.
test-deps:
	bash scripts/install_test_deps.sh

# The PDF route's system package (Debian chromium); apt-get runs only if it is missing.
pdf-deps:
	bash scripts/install_pdf_deps.sh

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

bench: $(STAMP)
	$(PY) benchmarks/bench.py

notebooks: $(STAMP)
	$(PY) scripts/build_notebooks.py
	$(PY) scripts/sync_readme.py

strip-notebooks: $(STAMP)
	$(VENV)/bin/nbstripout notebooks/*.ipynb
