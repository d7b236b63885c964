# windtunnel — the two commands for a fresh machine are `make demo` and `make test`.
# Both create .venv and install on first use (torch==2.13.0 first: the CPU wheel on these machines).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup demo test bench mlflow-ui ui-check clean sweep-lr sweep-bs sweep-wsd scaling-law fit plots report plan hparam-search
SCALE ?= micro
TARGET ?= minicpm-1.2b
STUDIES := lr_transfer batch_size wsd scaling_law decay_dynamics

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/windtunnel models
	$(BIN)/python analysis/schedules_plot.py
	$(BIN)/windtunnel sweep sweeps/lr.yaml --scale demo
	$(BIN)/windtunnel sweep sweeps/batch_size.yaml --scale demo
	$(BIN)/windtunnel sweep sweeps/scaling_law.yaml --scale demo
	$(MAKE) --no-print-directory report SCALE=demo
	@echo
	@echo "Runs and checkpoints: results/runs/   MLflow store: results/mlflow.db   Plots: results/plots/"
	@echo "Fits and figures: results/<study>/fit.json   Plan: results/plans/$(TARGET).yaml   Report: results/report.html"
	@echo "MLflow experiments: 'lr', 'batch_size', 'scaling_law' (one parent run per sweep, one child per run)"
	@echo "Compare runs in the browser: make mlflow-ui  (http://127.0.0.1:5000)"

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)  # one after the other: benchmarks must not share the 2 cores
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/sweep_overhead.py

# the studies: each resumes where it stopped when run again; SCALE=paper for GPUs or a Ray cluster (RAY_ADDRESS)
sweep-lr: $(STAMP)
	$(BIN)/windtunnel sweep sweeps/lr.yaml --scale $(SCALE)

sweep-bs: $(STAMP)
	$(BIN)/windtunnel sweep sweeps/batch_size.yaml --scale $(SCALE)

sweep-wsd: $(STAMP)
	$(BIN)/windtunnel sweep sweeps/wsd.yaml --scale $(SCALE)

scaling-law: $(STAMP)
	$(BIN)/windtunnel sweep sweeps/scaling_law.yaml --scale $(SCALE)

# the analysis: every study whose sweep ran at $(SCALE) (a study not run is skipped: its script exits 3)
fit: $(STAMP)
	@for s in $(STUDIES); do $(BIN)/python analysis/$$s.py --scale $(SCALE) --no-plots; rc=$$?; \
	  if [ $$rc -ne 0 ] && [ $$rc -ne 3 ]; then exit $$rc; fi; done

plots: $(STAMP)
	@for s in $(STUDIES); do $(BIN)/python analysis/$$s.py --scale $(SCALE); rc=$$?; \
	  if [ $$rc -ne 0 ] && [ $$rc -ne 3 ]; then exit $$rc; fi; done

plan: $(STAMP)
	$(BIN)/windtunnel plan $(TARGET)

report: plots plan
	$(BIN)/windtunnel report

# Bayesian µP search (paper §3.1); the same command resumes it; best values: results/search/best.yaml
hparam-search: $(STAMP)
	$(BIN)/windtunnel search sweeps/mup_search.yaml --scale $(SCALE)

mlflow-ui: $(STAMP)
	$(BIN)/windtunnel ui

# read the newest sweep back through the MLflow UI's REST API, check it, screenshot the UI to results/ui/
ui-check: $(STAMP)
	$(BIN)/python -m windtunnel.uicheck

clean:
	find results -mindepth 1 ! -name README.md -exec rm -rf {} +
	find . -name __pycache__ -not -path "./$(VENV)/*" -exec rm -rf {} +
