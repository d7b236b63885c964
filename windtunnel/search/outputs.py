"""What a search leaves: each trial's outcome, and in `results/search/<name>-<scale>/` the files
`trials.csv`, `summary.json`, `best.yaml` (also copied to `results/search/best.yaml`), Optuna's plots
`history.png`, `importances.png`, `slice.png` (drawn from the stored study), and the MLflow parent run's
per-trial and final metrics.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml

from windtunnel.config import spec_hash
from windtunnel.errors import one_line
from windtunnel.paths import atomic_path, write_atomic
from windtunnel.search.spec import OBJECTIVES, SearchSpec, rounded
from windtunnel.search.trial import DIVERGED, METRIC, trial_run

__all__ = ["STUDY_FILE", "TrialOutcome", "SearchResult", "outcome", "best", "finish", "log_parent"]

STUDY_FILE = "study.journal"  # the stored Optuna study, in the search's folder (windtunnel.search.study)


@dataclass(frozen=True)
class TrialOutcome:
    """What became of one trial."""

    number: int               # 0-based, in the order the trials were proposed (Optuna's trial number)
    status: str               # complete | pruned | failed
    value: float | None       # the objective at its last report (None when it never reported)
    params: dict              # searched values as trained (rounded), by dotted key
    evals: int                # evaluations reported
    reason: str               # why it was pruned or failed ("" when complete)
    run_id: str | None        # its run dir results/runs/<run_id>
    intermediate: dict        # evaluation number → objective


@dataclass(frozen=True)
class SearchResult:
    """The search's outcome; `best_*` are None while no trial is complete."""

    name: str
    scale: str
    folder: Path              # results/search/<name>-<scale>
    objective: str            # a key of OBJECTIVES
    best_params: dict | None  # searched values of the best complete trial, by dotted key
    best_value: float | None
    best_trial: int | None
    best_run: str | None      # run id of the best trial
    n_complete: int
    n_pruned: int
    n_failed: int
    trials: tuple[TrialOutcome, ...]
    best_yaml: Path | None    # the folder's best.yaml (also copied to results/search/best.yaml)
    plots: tuple[Path, ...]

    @property
    def n_trials(self) -> int:
        return len(self.trials)


def outcome(result, number: int, spec: SearchSpec, max_evals: int) -> TrialOutcome:
    """A Tune Result as a TrialOutcome: finished → complete, diverged or raised → failed, stopped early → pruned."""
    metrics = result.metrics or {}
    params = {k: rounded(v) for k, v in (result.config or {}).items()}
    value, evals = metrics.get(METRIC), metrics.get("evals", 0)
    run_id = metrics.get("run") or (trial_run(spec.template, params).id if params else None)
    if result.error is not None:
        status, reason, value = "failed", one_line(result.error), None
    elif metrics.get("status") == "diverged":
        status, reason, value = "failed", metrics.get("reason", "diverged"), None
    elif metrics.get("status") == "finished":
        status, reason = "complete", ""
    else:
        status, reason = "pruned", f"stopped by ASHA after {evals}/{max_evals} evaluations"
    return TrialOutcome(number, status, value, params, int(evals), reason, run_id, _intermediate(result))


def _intermediate(result) -> dict:
    """Evaluation number → objective reported, penalties and non-finite values left out."""
    try:
        history = result.metrics_dataframe
        pairs = {} if history is None or METRIC not in history else dict(zip(history["evals"], history[METRIC]))
    except Exception:  # noqa: BLE001 - a trial that never reported has no progress file
        pairs = {}
    return {int(k): float(v) for k, v in pairs.items() if v != DIVERGED and math.isfinite(v)}


def best(trials: list[TrialOutcome]) -> TrialOutcome | None:
    complete = [t for t in trials if t.status == "complete" and t.value is not None and math.isfinite(t.value)]
    return min(complete, key=lambda t: (t.value, t.number)) if complete else None


def finish(spec: SearchSpec, folder: Path, outcomes: list[TrialOutcome], study, *, scale: str) -> SearchResult:
    """Write trials.csv, summary.json, best.yaml (also results/search/best.yaml) and the plots of `study`."""
    top = best(outcomes)
    counts = {s: sum(t.status == s for t in outcomes) for s in ("complete", "pruned", "failed")}
    _write_trials(folder / "trials.csv", outcomes)
    best_yaml = None
    if top is not None:
        best_yaml = folder / "best.yaml"
        text = _best_yaml(spec, top, counts, scale=scale)
        write_atomic(best_yaml, text)
        write_atomic(folder.parent / "best.yaml", text)
    plots = _plots(spec, folder, study) if counts["complete"] else ()
    result = SearchResult(name=spec.name, scale=scale, folder=folder, objective=spec.objective,
                          best_params=top.params if top else None, best_value=top.value if top else None,
                          best_trial=top.number if top else None, best_run=top.run_id if top else None,
                          n_complete=counts["complete"], n_pruned=counts["pruned"], n_failed=counts["failed"],
                          trials=tuple(outcomes), best_yaml=best_yaml, plots=plots)
    _write_summary(folder / "summary.json", spec, result)
    return result


def _write_summary(path: Path, spec: SearchSpec, result: SearchResult) -> None:
    summary = {k: v for k, v in dataclasses.asdict(result).items() if k not in ("trials", "folder")}
    summary.update(n_trials=result.n_trials, folder=str(result.folder), plots=[str(p) for p in result.plots],
                   best_yaml=str(result.best_yaml) if result.best_yaml else None,
                   template_spec_hash=spec_hash(spec.template), study=result.folder.name,
                   storage=str(result.folder / STUDY_FILE))
    write_atomic(path, json.dumps(summary, indent=1, default=str))


def _write_trials(path: Path, outcomes: list[TrialOutcome]) -> None:
    import csv

    names = sorted({k for t in outcomes for k in t.params})
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trial", "status", "objective", "evals", *names, "run_id", "reason"])
        for t in outcomes:
            writer.writerow([t.number, t.status, "" if t.value is None else f"{t.value:.6g}", t.evals,
                             *[t.params.get(k, "") for k in names], t.run_id or "", t.reason])


def _nested(params: dict) -> dict:
    """Dotted keys as a --set-file mapping: `model.*` nested (merged key by key by apply_overrides);
    `schedule.*` kept dotted, since a nested `schedule:` would replace the whole schedule."""
    out: dict = {}
    for key, value in sorted(params.items()):
        head, _, rest = key.partition(".")
        if rest and head != "schedule":
            out.setdefault(head, {})[rest] = value
        else:
            out[key] = value
    return out


def _best_yaml(spec: SearchSpec, top: TrialOutcome, counts: dict, *, scale: str) -> str:
    total = sum(counts.values())
    head = [
        f"# Best µP hyper-parameters of search {spec.name!r} (scale {scale}, {spec.file}):",
        f"# objective {spec.objective} ({OBJECTIVES[spec.objective]}) = {top.value:.6g}, trial {top.number} "
        f"of {total} ({counts['complete']} complete, {counts['pruned']} pruned, {counts['failed']} failed),",
        f"# model {spec.template.model.name} on {spec.template.tokens:,} tokens, run results/runs/{top.run_id}.",
        "# Use: windtunnel train MODEL --set-file THIS_FILE, or windtunnel sweep SPEC --set-file THIS_FILE",
    ]
    return "\n".join(head) + "\n" + yaml.safe_dump(_nested(top.params), sort_keys=True, default_flow_style=False)


def _plots(spec: SearchSpec, folder: Path, study) -> tuple[Path, ...]:
    """Optuna's optimization history, parameter importances and slice plots of the stored study as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    from windtunnel.search.study import plot_view

    view, saved = plot_view(study), []
    for name, plot in (("history", ovm.plot_optimization_history), ("importances", ovm.plot_param_importances),
                       ("slice", ovm.plot_slice)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                plot(view)
            path = folder / f"{name}.png"
            plt.gcf().set_size_inches(max(6.4, 3.2 * len(spec.space)) if name == "slice" else 6.4, 4.8)
            with atomic_path(path) as tmp:
                plt.gcf().savefig(tmp, dpi=100, bbox_inches="tight", format="png")
            saved.append(path)
        except (ValueError, RuntimeError, ZeroDivisionError) as err:  # e.g. importances of 1 complete trial
            warnings.warn(f"{spec.name}: {name} plot skipped ({err})", stacklevel=2)
        finally:
            plt.close("all")
    return tuple(saved)


def log_parent(parent, result: SearchResult) -> None:
    """Per trial: its objective and the best so far (step = trial number); at the end: counts and the best."""
    low = math.inf
    for t in result.trials:
        if t.status == "complete":
            low = min(low, t.value)
            parent.log({"trial/objective": t.value, "search/best": low}, step=t.number)
    final = {"trials/complete": result.n_complete, "trials/pruned": result.n_pruned, "trials/failed": result.n_failed}
    if result.best_params:
        final.update({"best/objective": result.best_value, **{f"best/{k}": v for k, v in result.best_params.items()}})
    parent.log(final, step=result.n_trials)
    parent.finish("FINISHED", tag_status="finished")
