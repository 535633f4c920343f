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

RUN_FLAGS = --backend $(BACKEND) --jobs $(JOBS) \
	$(if $(ROUNDS),--set rounds=$(ROUNDS)) $(foreach s,$(SET),--set $(s)) $(if $(FORCE),--force) $(SLURM_ARGS) \
	$(if $(RESULTS),--results_dir $(RESULTS))
BATCH_FLAGS = --seeds $(SEEDS) --name $(BATCH) $(RUN_FLAGS)

.DEFAULT_GOAL := help
.PHONY: help venv run test test-deps ablations width-study width-study-early horizon reproduce analysis \
	bench-seed bench-side \
	report report-pdf pdf-deps lab bench \
	notebooks \
	strip-notebooks deploy

help:
	@echo "FedPrune-Sparse"
	@echo "  make run          default hybrid experiment through papermill + its HTML report"
	@echo "  make test         the test suite (real MNIST: set FEDPRUNE_DATA_ROOT)"
	@echo "  make ablations    every params/ablations/*.yaml (ROUNDS= SEEDS= JOBS= FORCE=1 BACKEND=)"
	@echo "  make horizon      FedAvg on the default federation until its tail accuracy stops rising"
	@echo "  make width-study  the width study at that horizon (5 seeds for the rows that decide)"
	@echo "  make reproduce    a published table rerun: PAPER=mcmahan|heterofl|heterofl_mnist|fjord (params/reproduce/<paper>/)"
	@echo "  make analysis     dissertation figures and tables into results/analysis/"
	@echo "  make report       HTML reports of the analysis and every run notebook"
	@echo "  make report-pdf   the same as PDF (installs headless Chromium)"
	@echo "  make lab          JupyterLab with the project's kernel"
	@echo "  make bench        speed and memory benchmark into results/bench/bench.json"
	@echo "  make bench-seed   the default run beside the seed's own code (SEED_REPO=path)"
	@echo "  make bench-side   FedAvg beside Flower's simulation; make deploy beside make run"
	@echo "  make notebooks    regenerate the notebooks and the READMEs' parameter table from the config"
	@echo "  make deploy       the experiment on a Flower deployment: SuperLink + NODES=4 SuperNodes here"

# Quiet pip (its location warnings and setuptools' editable-install banner are noise to a
# user), with one line first saying what the minutes of silence are.
PIP = PYTHONWARNINGS=ignore $(PY) -m pip install -q
$(STAMP): pyproject.toml
	@echo "setting up .venv (PyTorch and the suite's packages: about 2 minutes, once)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	@$(PIP) $(TORCH_SPEC) 2>&1 | grep -v "^WARNING: Location" || true
	@$(PIP) -e '.[notebooks,dask,dev,flower]' 2>&1 | grep -v "^WARNING: Location" || true
	@$(PY) -c "import torch, torchvision, papermill, fedprune_core"
	@$(PY) -m ipykernel install --sys-prefix --name $(KERNEL_NAME) \
		--display-name "FedPrune-Sparse (.venv)" > /dev/null
	@if [ -d .git ]; then $(VENV)/bin/nbstripout --install --attributes .gitattributes && \
		git config filter.nbstripout.extrakeys "metadata.language_info metadata.toc \
		metadata.toc-autonumbering metadata.varInspector metadata.vscode metadata.jupytext \
		cell.metadata.jp-MarkdownHeadingCollapsed cell.metadata.jupyter cell.metadata.editable \
		cell.metadata.deletable cell.metadata.slideshow cell.metadata.trusted"; fi
	@mkdir -p $(VENV)/etc/jupyter && echo \
		'{"ContentsManager": {"post_save_hook": "fedprune_core.tools.notebook.refresh_git_index"}}' \
		> $(VENV)/etc/jupyter/jupyter_server_config.json
	@touch $(STAMP)
	@echo "set up: .venv is ready"

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m fedprune_core notebook --params params/default.yaml --report html $(ARGS) \
		$(if $(FORCE),--overwrite)

test: $(STAMP) test-deps
	$(PY) scripts/timed.py "make test" $(PY) -m pytest -q -n $(TEST_WORKERS)

ablations: $(STAMP)
	$(PY) -m fedprune_core batch run --params $(ABLATIONS) $(BATCH_FLAGS)

# A published table rerun (README: "The published tables, rerun"): PAPER=mcmahan (McMahan et al.
# 2017, Table 2; the default), heterofl (HeteroFL's CIFAR-10 model mixes), heterofl_mnist
# (Flower's HeteroFL MNIST table, every row) or fjord (FjORD's accuracy at each width, 3 seeds). Runs params/reproduce/$(PAPER)/*.yaml as the batch
# reproduce_$(PAPER), then writes the table beside the paper's numbers into that batch's folder,
# results/reproduce_$(PAPER)/reproduce.{csv,md,tex}. Hours to days on a CPU.
PAPER ?= mcmahan
PAPER_SEEDS = $(if $(filter fjord,$(PAPER)),0 1 2,0)
reproduce: BATCH = reproduce_$(PAPER)
reproduce: SEEDS := $(if $(filter command line environment,$(origin SEEDS)),$(SEEDS),$(PAPER_SEEDS))
reproduce: $(STAMP)
	@test -d params/reproduce/$(PAPER) || { echo "error: PAPER: $(PAPER) is not allowed; \
		allowed: $$(ls params/reproduce | tr '\n' ' ')" >&2; exit 2; }
	$(PY) -m fedprune_core batch run --params params/reproduce/$(PAPER)/*.yaml $(BATCH_FLAGS)
	$(PY) -c "from fedprune_core.analysis import write_reproduce; \
		write_reproduce('$(or $(RESULTS),results)/$(BATCH)', paper='$(PAPER)')"

# The width study at FedAvg's horizon (README: "The width study"): params/width_study/converged/,
# FedAvg and the candidates that decide the goal at 5 seeds, the other rows at 3, into
# results/width_study/ (resumable: run it again and a killed study continues where it stopped);
# then make analysis BATCH=width_study. Its early phase (20 rounds, 9 methods, 5 seeds):
# make width-study-early.
STUDY := params/width_study/converged
STUDY_DECIDING := $(STUDY)/fedavg.yaml $(STUDY)/heterofl_mild.yaml $(STUDY)/hybrid_fjord.yaml
STUDY_REST := $(filter-out $(STUDY_DECIDING),$(sort $(wildcard $(STUDY)/[!_]*.yaml)))

width-study: $(STAMP)
	$(PY) -m fedprune_core batch run --params $(STUDY_DECIDING) --seeds 0 1 2 3 4 \
		--name width_study $(RUN_FLAGS)
	$(PY) -m fedprune_core batch run --params $(STUDY_REST) --seeds 0 1 2 --name width_study \
		$(RUN_FLAGS)

width-study-early: ABLATIONS = params/width_study/early/*.yaml
width-study-early: BATCH = width_study_early
width-study-early: SEEDS = 0 1 2 3 4
width-study-early: ablations

# The study's horizon from FedAvg's curve: FedAvg (the study's file, seed 0) for ROUNDS (400)
# rounds, then the first round after which its 10-round tail mean rose by less than 0.3 points
# over 50 rounds (fedprune_core/analysis/horizon.py). About 2.5 hours on one core.
horizon: $(STAMP)
	$(PY) -m fedprune_core batch run --params $(STUDY)/fedavg.yaml --seeds 0 --name horizon \
		$(RUN_FLAGS) $(if $(ROUNDS),,--set rounds=400)
	$(PY) -m fedprune_core.analysis.horizon $(or $(RESULTS),results)/horizon/fedavg_s0

# One comparison per batch: `make analysis BATCH=ablations BASELINE=FedAvg` analyses the runs in
# results/<batch>/ alone, into results/<batch>/analysis/; without BATCH on the command line
# (BATCH's default names the ablations' batch) every finished run, into results/analysis/.
# BANDS=ci95|std|none (default auto), TARGET=95: the notebook's parameters.
ANALYSIS_BATCH = $(if $(filter command line environment,$(origin BATCH)),$(BATCH))
ANALYSIS_DIR = results/$(if $(ANALYSIS_BATCH),$(ANALYSIS_BATCH)/)analysis

analysis: $(STAMP)
	mkdir -p $(ANALYSIS_DIR)
	$(PY) -m fedprune_core.tools.notebook notebooks/analysis.ipynb $(ANALYSIS_DIR)/analysis.ipynb \
		$(if $(ANALYSIS_BATCH),-p batch $(ANALYSIS_BATCH)) $(if $(BASELINE),-p baseline "$(BASELINE)") \
		$(if $(BANDS),-p bands $(BANDS)) $(if $(TARGET),-p target_accuracy $(TARGET))

# Reports are written beside each executed notebook, code hidden (fedprune_core.tools.reports):
# every analysis and run notebook, or with BATCH on the command line that batch's alone.
REPORT_NOTEBOOKS = $(if $(ANALYSIS_BATCH),results/$(ANALYSIS_BATCH)/analysis/analysis.ipynb \
	'results/$(ANALYSIS_BATCH)/*/experiment.ipynb',results/analysis/analysis.ipynb \
	'results/*/analysis/analysis.ipynb' 'results/*/experiment.ipynb' \
	'results/*/*/experiment.ipynb')

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
	$(PY) benchmarks/seed.py $(if $(SEED_REPO),--seed-repo $(SEED_REPO))
	$(MAKE) bench-side

# The suite beside the seed's own code (github.com/thiefcoder/fedprune-sparse, a checkout at
# SEED_REPO), at 5, 10 and 20 rounds, alternated: results/bench/seed.json. About 30 minutes.
bench-seed: $(STAMP)
	$(PY) benchmarks/seed.py $(if $(SEED_REPO),--seed-repo $(SEED_REPO))

notebooks: $(STAMP)
	$(PY) scripts/build_notebooks.py
	$(PY) scripts/sync_readme.py

# A Flower deployment on this machine: a SuperLink and NODES SuperNodes (separate processes on
# 127.0.0.1, free ports), the experiment of PARAMS (+ ARGS) into results/<run_name>/, then every
# process stopped (also on Ctrl-C). The flower extra is installed on first use.
NODES ?= 4
PARAMS ?= params/default.yaml
FLOWER_STAMP := $(VENV)/.flower-installed

$(FLOWER_STAMP): $(STAMP)
	@$(PIP) -e '.[flower]' 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import flwr"
	touch $(FLOWER_STAMP)

# Whole commands side by side, alternated, 5 rounds, 2 pairs: the suite's FedAvg beside Flower's
# simulation engine, and make deploy (4 SuperNodes) beside make run: results/bench/side.json.
bench-side: $(FLOWER_STAMP)
	$(PY) benchmarks/side_by_side.py

deploy: $(FLOWER_STAMP)
	$(PY) -m fedprune_core deploy --params $(PARAMS) --nodes $(NODES) $(ARGS) \
		$(if $(FORCE),--overwrite)

strip-notebooks: $(STAMP)
	$(VENV)/bin/nbstripout notebooks/*.ipynb
