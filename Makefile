# windtunnel — the two commands for a fresh machine are `make demo` and `make test`.
# Both create .venv and install on first use (torch==2.13.0 first: the CPU wheel on these machines).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup demo test bench mlflow-ui ui-check clean sweep-lr sweep-bs sweep-wsd scaling-law fit plots report plan \
        hparam-search validate launch sweep-decay-data check-mup
SCALE ?= micro
TARGET ?= micro-1.3m
# SCALE=paper trains the ladder in TARGET's family (its vocabulary and tokenizer): the sweeps' scale paper@TARGET
RUN_SCALE = $(if $(filter paper,$(SCALE)),paper@$(TARGET),$(SCALE))
PLAN_ARGS ?=
# the micro target at the micro ladder's largest D: a stable stage of 8,388,608 tokens + a 10% decay
VALIDATE_TOKENS ?= 9227469

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --disable-pip-version-check -c constraints.txt -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	@mkdir -p results && date +%s > results/.demo-start
	$(BIN)/windtunnel peak
	$(BIN)/windtunnel models
	$(BIN)/python analysis/schedules_plot.py
	$(BIN)/windtunnel sweep sweeps/lr.yaml sweeps/batch_size.yaml sweeps/scaling_law.yaml --scale demo
	$(MAKE) --no-print-directory plots SCALE=demo
	$(BIN)/windtunnel plan micro-425k --tokens 1153434
	$(BIN)/windtunnel plan minicpm-1.2b
	$(BIN)/windtunnel report
	@echo
	@echo "The demo planned micro-425k (2.5x the demo ladder's largest N) from its own fits: results/plans/micro-425k.yaml."
	@echo "minicpm-1.2b cannot be planned from a micro ladder (see 'not planned' above): another head width and"
	@echo "vocabulary (another µP family), and thousands of times beyond its largest N: that takes the paper ladder"
	@echo "in its family on GPUs: make scaling-law sweep-lr sweep-bs fit plan SCALE=paper TARGET=minicpm-1.2b."
	@echo "Runs and checkpoints: results/runs/   MLflow store: results/mlflow.db   Plots: results/plots/"
	@echo "Fits and figures: results/<study>/fit.json   Plans: results/plans/   Report: results/report.html"
	@echo "In-context copying: results/scaling_law/copy_gap.png (each run's copy gap against tokens; MLflow eval/<set>/copy_gap)"
	@echo "MLflow experiments: 'lr', 'batch_size', 'scaling_law' (one parent run per sweep, one child per run)"
	@echo "Compare runs in the browser: make mlflow-ui  (http://127.0.0.1:5000)"
	@echo "make demo took $$(( $$(date +%s) - $$(cat results/.demo-start) )) s"

# the report's and the MLflow UI's browser tests need Chromium: installed from Debian's packages where this runs as
# root with apt-get (CI's clean machine); elsewhere those two tests skip and say so
test: $(STAMP)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "no Chromium here: the browser tests of the report and the MLflow UI skip (apt-get install chromium)"
	$(BIN)/python -m pytest

# µP coordinate check (docs/method.md §3): each layer's update size against width, µP and SP;
# results/plots/coord_check.png
check-mup: $(STAMP)
	$(BIN)/windtunnel check-mup

bench: $(STAMP)  # one after the other: benchmarks must not share the 2 cores
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/sweep_overhead.py

# the studies: each resumes where it stopped when run again; SCALE=paper TARGET=minicpm-1.2b (or minicpm-2.4b) for
# GPUs or a Ray cluster (RAY_ADDRESS): the paper ladder in that target's family, then `make fit plan` alike
sweep-lr: $(STAMP)
	$(BIN)/windtunnel sweep sweeps/lr.yaml --scale $(RUN_SCALE)

sweep-bs: $(STAMP)
	$(BIN)/windtunnel sweep sweeps/batch_size.yaml --scale $(RUN_SCALE)

sweep-wsd: $(STAMP)
	$(BIN)/windtunnel sweep sweeps/wsd.yaml --scale $(RUN_SCALE)

scaling-law: $(STAMP)
	$(BIN)/windtunnel sweep sweeps/scaling_law.yaml --scale $(RUN_SCALE)

sweep-decay-data: $(STAMP)
	$(BIN)/windtunnel sweep sweeps/decay_data.yaml --scale $(RUN_SCALE)

# the analysis: every study of the registry (windtunnel/studies) whose sweep ran at $(SCALE); the others are skipped
fit: $(STAMP)
	$(BIN)/windtunnel fit --all --scale $(RUN_SCALE) --no-plots

plots: $(STAMP)
	$(BIN)/windtunnel fit --all --scale $(RUN_SCALE)

plan: $(STAMP)
	$(BIN)/windtunnel plan $(TARGET) $(PLAN_ARGS)

# the planned run on Ray Train (RAY_ADDRESS joins a cluster); the same command resumes a stopped launch
PLAN ?= results/plans/$(TARGET).yaml
WORKERS ?= 1
LAUNCH_ARGS ?=
launch: $(STAMP)
	$(BIN)/windtunnel launch $(PLAN) --workers $(WORKERS) $(LAUNCH_ARGS)

# the wind tunnel's own test (after sweep-lr, sweep-bs, scaling-law and fit at SCALE=micro): plan micro-1.3m,
# train it as planned through `windtunnel launch` on 2 Ray Train workers (DDP), compare its loss with the
# prediction; the figures land in bench/results/validate.json.
# The micro batch-size law measured optima down to loss 2.2 only, so at the target's ~1.63 the batch's interval is
# wider than 4x: the plan still names the batch of least expected loss cost and notes that risk, so nothing is --set.
validate: $(STAMP)
	$(BIN)/windtunnel validate micro-1.3m --tokens $(VALIDATE_TOKENS) --workers 2
	cp results/validate/micro-1.3m.json bench/results/validate.json

report: plots plan
	$(BIN)/windtunnel report

# Bayesian µP search (paper §3.1); the same command resumes it; best values: results/search/best.yaml
hparam-search: $(STAMP)
	$(BIN)/windtunnel search sweeps/mup_search.yaml --scale $(SCALE)

# the search's stored Optuna study (results/search/$(SEARCH)/study.journal) in optuna-dashboard on 127.0.0.1;
# optuna-dashboard (the dashboard extra) is installed into .venv on first use; it follows a running search live
.PHONY: optuna-dashboard
PORT ?= 8080
SEARCH ?= mup_search-$(SCALE)
STUDY_FILE ?= $(or $(WINDTUNNEL_RESULTS),results)/search/$(SEARCH)/study.journal
optuna-dashboard: $(STAMP)
	@test -f $(STUDY_FILE) || { echo "no study $(STUDY_FILE):" \
	  "run make hparam-search SCALE=$(SCALE) first, or name another: make optuna-dashboard SEARCH=<name>-<scale>"; exit 2; }
	@test -x $(BIN)/optuna-dashboard || $(BIN)/pip install --disable-pip-version-check -c constraints.txt -e ".[dashboard]"
	@echo "optuna-dashboard of study $(SEARCH): http://127.0.0.1:$(PORT)  (Ctrl-C stops it)"
	$(BIN)/optuna-dashboard --host 127.0.0.1 --port $(PORT) --storage-class JournalFileStorage $(STUDY_FILE)

mlflow-ui: $(STAMP)
	$(BIN)/windtunnel ui

# read the newest sweep back through the MLflow UI's REST API, check it, screenshot the UI to results/ui/
ui-check: $(STAMP)
	$(BIN)/python -m windtunnel.uicheck

clean:
	find results -mindepth 1 ! -name README.md -exec rm -rf {} +
	find . -name __pycache__ -not -path "./$(VENV)/*" -exec rm -rf {} +
