"""Bayesian µP hyper-parameter search (paper §3.1, Table 7): Optuna's multivariate TPE through Ray Tune.

A search file (`sweeps/mup_search.yaml`) names a search space of TrainSpec keys, a model and token budget
per scale, and the objective: the mean held-out loss per byte at the end of training. The modules, one job
each:

- `spec`: the search file as a validated SearchSpec, and one trial's TrainSpec;
- `trial`: one trial as Tune runs it in a worker (train, report to Tune and MLflow);
- `tune`: the driver (Tune rounds, resume, extension);
- `study`: the Optuna study stored in `results/search/<name>-<scale>/study.journal` (optuna-dashboard opens it);
- `progress`: the progress board;
- `outputs`: trial outcomes, trials.csv, summary.json, best.yaml, plots, the MLflow parent run's metrics.

    spec = load_search("sweeps/mup_search.yaml", scale="micro")
    result = run_search(spec)          # → best params, value, counts, paths
"""

from windtunnel.search.outputs import SearchResult, TrialOutcome
from windtunnel.search.spec import OBJECTIVES, SEARCHABLE, AshaSpec, ParamRange, SearchSpec, load_search, trial_spec
from windtunnel.search.trial import DIVERGED, objective_value
from windtunnel.search.tune import run_search

__all__ = ["ParamRange", "AshaSpec", "SearchSpec", "TrialOutcome", "SearchResult", "SEARCHABLE", "OBJECTIVES",
           "DIVERGED", "load_search", "run_search", "trial_spec", "objective_value"]
