"""The search driver: Ray Tune runs the trials, Optuna's multivariate TPE proposes them, ASHA stops poor ones.

`results/search/<name>-<scale>/` holds `search.json` (the search's identity), `study.journal` (the Optuna
study, see `windtunnel.search.study`) and `round-<k>/` (Tune experiments: the first holds `trials` trials;
a later call asking for more trials adds a round asking the same stored study, its TPE sampler restored
from the previous round so that its random state goes on). Killed searches resume: the same call restores
the last round with `Tuner.restore`.

    result = run_search(load_search("sweeps/mup_search.yaml"), trials=40)   # run, resume or extend
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from windtunnel.checks import POSITIVE_INT, problem
from windtunnel.errors import SpecError, WindtunnelError
from windtunnel.paths import results_dir, write_atomic
from windtunnel.search.outputs import STUDY_FILE, SearchResult, TrialOutcome, finish, log_parent, outcome
from windtunnel.search.progress import Board, Relay, tag_index
from windtunnel.search.spec import SearchSpec, max_evals
from windtunnel.search.trial import METRIC, trainable

__all__ = ["run_search"]


def run_search(spec: SearchSpec, *, file=None, scale: str | None = None, trials: int | None = None,
               num_cpus: int | None = None, progress: bool = True) -> SearchResult:
    """Run (or resume, or extend to `trials`) the search; returns the best parameters, counts and output paths.

    Ray is started embedded (or joins $RAY_ADDRESS) unless already initialised, and shut down if started here.
    """
    from windtunnel.data import prepare
    from windtunnel.orchestrate import init_ray
    from windtunnel.tracking import ending_family

    scale = scale or spec.scale
    file = file or spec.file
    trials = spec.trials if trials is None else trials  # --trials 0 is refused, not the file's count
    allowed = problem(POSITIVE_INT, trials)
    if allowed:
        raise SpecError(file, "--trials", trials, allowed)
    folder = results_dir() / "search" / f"{spec.name}-{scale}"
    _claim(folder, spec)
    prepare(spec.template.data, vocab_size=spec.template.model.vocab_size, progress=progress)  # once, not per trial
    parent = _parent_logger(spec, scale, folder, trials)
    with ending_family(parent):  # FAILED on an error, KILLED on Ctrl-C, with its trials still RUNNING
        started = init_ray(num_cpus)
        try:
            outcomes = _run_rounds(spec, folder, scale=scale, trials=trials, parent=parent.run_id, progress=progress)
        finally:
            if started:
                __import__("ray").shutdown()
        _close_pruned(spec, outcomes)
        result = finish(spec, folder, outcomes, _stored(folder), scale=scale)
        log_parent(parent, result)
    return result


def _stored(folder: Path):
    """The stored study once the search ended, its lost trials (asked before a kill) failed."""
    from windtunnel.search.study import close_lost, load

    study = load(folder)
    close_lost(study)
    return study


def _close_pruned(spec: SearchSpec, outcomes: list[TrialOutcome]) -> None:
    """End the MLflow runs of pruned trials still RUNNING: Tune may end a stopped trial's actor before the
    trial has closed its run."""
    from windtunnel.tracking import RunLogger, runs_dataframe

    pruned = {t.run_id for t in outcomes if t.status == "pruned"}
    frame = runs_dataframe(experiment=spec.name)
    if not pruned or "tags.windtunnel.run" not in frame:
        return
    open_runs = frame[(frame["status"] == "RUNNING") & frame["tags.windtunnel.run"].isin(pruned)]
    for run_id, name in zip(open_runs["run_id"], open_runs["run_name"]):
        RunLogger(experiment=spec.name, run_name=name, params={}, tags={}, run_id=run_id).finish(
            "KILLED", tag_status="pruned")


def _claim(folder: Path, spec: SearchSpec) -> None:
    """Record the search's identity in its folder; refuse to continue a study made by a different search."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "search.json"
    identity = json.loads(json.dumps(spec.identity))
    if path.exists() and json.loads(path.read_text()) != identity:
        raise WindtunnelError(
            f"{folder} holds a study of a different search (space, objective, seed or trial spec changed in "
            f"{spec.file}); delete that folder to start again, or give the search another `name`")
    if (folder / "round-0").exists() and not (folder / STUDY_FILE).exists():
        raise WindtunnelError(f"{folder} holds a search made before searches stored their Optuna study "
                              f"({STUDY_FILE}); delete that folder to start again, or give the search another `name`")
    write_atomic(path, json.dumps(identity, indent=1))


def _parent_logger(spec: SearchSpec, scale: str, folder: Path, trials: int):
    from windtunnel.tracking import RunLogger

    space = {f"space.{p.name}": f"[{p.low:g}, {p.high:g}]{' log' if p.log else ''}" for p in spec.space}
    return RunLogger.in_folder(  # creates the experiment before any trial logs to it (docs/method.md §8)
        folder, experiment=spec.name, run_name=f"{spec.name} ({scale})",
        params={"scale": scale, "model": spec.template.model.name, "tokens": spec.template.tokens,
                "objective": spec.objective, "seed": spec.seed, "description": spec.description, **space},
        tags={"search": spec.name, "scale": scale, "kind": "search", "trials": trials},
        note=f"{(spec.description or spec.name).rstrip('.')}. Bayesian µP search (Optuna TPE through Ray Tune, ASHA) "
             f"of {', '.join(p.name for p in spec.space)} on {spec.template.model.name}; one parent run per scale, "
             f"one child per trial; best values in results/search/{spec.name}-SCALE/best.yaml.")


def _rounds(folder: Path) -> list[Path]:
    """The Tune experiments of the study that can be restored, in order."""
    from ray.tune import Tuner

    found = sorted(folder.glob("round-*"), key=lambda p: int(p.name.split("-")[1]))
    return [p for p in found if Tuner.can_restore(str(p))]


def _run_rounds(spec: SearchSpec, folder: Path, *, scale: str, trials: int, parent: str,
                progress: bool) -> list[TrialOutcome]:
    """Finish the last round if it was interrupted, then add a round for the trials still missing."""
    import ray
    from ray.tune import Tuner

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter, silent at verbose=0: our board prints
    run = trainable(spec, scale=scale, parent=parent, gpus=ray.cluster_resources().get("GPU", 0) > 0)
    outcomes: list[TrialOutcome] = []
    rounds, sizes = _rounds(folder), folder / "rounds.json"  # rounds.json: trials asked of each round
    samples = json.loads(sizes.read_text()) if sizes.exists() else {}
    board = Board(spec, total=trials, enabled=progress)
    try:
        for i, path in enumerate(rounds):
            tuner = Tuner.restore(str(path), trainable=run, resume_errored=True)
            board.round(outcomes)
            grid = _fit(tuner, samples.get(path.name)) if i == len(rounds) - 1 else tuner.get_results()
            outcomes += _round_outcomes(grid, spec, offset=len(outcomes))
        if len(outcomes) < trials:
            board.round(outcomes)
            path = folder / f"round-{len(rounds)}"
            samples[path.name] = trials - len(outcomes)
            write_atomic(sizes, json.dumps(samples))
            tuner = _new_tuner(spec, path, run, samples=samples[path.name], restore_from=rounds[-1] if rounds else None)
            outcomes += _round_outcomes(_fit(tuner, samples[path.name]), spec, offset=len(outcomes))
    finally:
        board.close()
    return outcomes


def _fit(tuner, samples: int | None):
    """Tuner.fit, raising KeyboardInterrupt when Tune stopped early on Ctrl-C (it then returns, state saved)."""
    with warnings.catch_warnings():  # a trial restarted after a kill reports its first evaluations again
        warnings.filterwarnings("ignore", message="The reported value is ignored")
        grid = tuner.fit()
    ended = grid.num_terminated + grid.num_errors
    if ended < len(grid) or (samples is not None and len(grid) < samples):
        raise KeyboardInterrupt(f"search interrupted after {ended} trials of this round")
    return grid


def _round_outcomes(grid, spec: SearchSpec, *, offset: int) -> list[TrialOutcome]:
    ordered = sorted(grid, key=lambda r: _trial_index(r.path))
    return [outcome(r, offset + _trial_index(r.path), spec, max_evals(spec.template)) for r in ordered]


def _trial_index(path) -> int:
    """The trial's 0-based index within its round, from its folder name trial-<index>-<id>."""
    return int(Path(path).name.split("-")[1])


def _new_tuner(spec: SearchSpec, path: Path, run, *, samples: int, restore_from: Path | None):
    """A Tune experiment of `samples` trials asking the stored study; TPE's state continues `restore_from`'s."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from windtunnel.search.study import StoredSearch, distributions, storage

    searcher = StoredSearch(space=distributions(spec), metric=METRIC, mode="min", sampler=_sampler(spec, restore_from),
                            storage=storage(path.parent), study_name=path.parent.name)
    scheduler = (ASHAScheduler(time_attr="evals", max_t=max_evals(spec.template), grace_period=spec.asha.grace_evals,
                               reduction_factor=spec.asha.reduction_factor)
                 if spec.asha.enabled else FIFOScheduler())
    config = tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=samples, metric=METRIC, mode="min",
                             max_concurrent_trials=spec.concurrency, reuse_actors=True,
                             trial_dirname_creator=_dirname)
    run_config = tune.RunConfig(name=path.name, storage_path=str(path.parent.resolve()), verbose=0,
                                callbacks=[Relay()], failure_config=tune.FailureConfig(max_failures=0))
    return tune.Tuner(run, tune_config=config, run_config=run_config)


def _sampler(spec: SearchSpec, restore_from: Path | None):
    """Multivariate TPE seeded by the spec; an extension takes the previous round's sampler (its random state
    goes on, so a search extended from 2 to 4 trials proposes what one of 4 trials would)."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if restore_from is None:
        return optuna.samplers.TPESampler(multivariate=True, seed=spec.seed, n_startup_trials=spec.startup_trials)
    previous = OptunaSearch()
    previous.restore_from_dir(str(restore_from))  # the round's searcher checkpoint
    return previous._sampler


def _dirname(trial) -> str:
    return f"trial-{tag_index(trial):04d}-{trial.trial_id}"
