"""Bayesian µP hyper-parameter search (paper §3.1, Table 7): Optuna's multivariate TPE through Ray Tune.

A search file (`sweeps/mup_search.yaml`) names a search space of TrainSpec keys, a model and token budget
per scale, and the objective: the mean held-out loss per byte at the end of training. Each trial trains
through `windtunnel.train.train` in the run storage every run shares (`results/runs/<spec_hash>/`, so a
trial with the parameters of a finished run does not train again), reports the objective to Tune at every
evaluation so that ASHA can stop poor trials early, and is an MLflow child run under one parent run for
the search. A diverged trial reports a penalty (TPE then learns to avoid the region: Optuna's TPE ignores
failed trials) and is counted as failed, never as the best.

Layout of `results/search/<name>-<scale>/`: `round-<k>/` (Tune experiments: the first holds `trials` trials;
a later call asking for more trials adds a round whose searcher is restored from the previous one, so it
continues the same Optuna study), `search.json` (the search's identity), `trials.csv`, `summary.json`,
`best.yaml` (also copied to `results/search/best.yaml`), and plots `history.png`, `importances.png`,
`slice.png`. Killed searches resume: the same call restores the last round with `Tuner.restore`.

    spec = load_search("sweeps/mup_search.yaml", scale="micro")
    result = run_search(spec)          # → best params, value, counts, paths
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from windtunnel.config import TrainSpec, apply_overrides, build, get_model, read_yaml, spec_hash
from windtunnel.errors import SpecError, WindtunnelError, one_line
from windtunnel.paths import results_dir

__all__ = ["ParamRange", "AshaSpec", "SearchSpec", "TrialOutcome", "SearchResult", "SEARCHABLE", "OBJECTIVES",
           "load_search", "run_search", "trial_spec", "objective_value"]

SEARCHABLE = {  # dotted TrainSpec key → type of its values; the hyper-parameters a search may vary
    "lr": float, "weight_decay": float, "beta1": float, "beta2": float, "grad_clip": float,
    "model.scale_emb": float, "model.scale_depth": float, "model.init_std": float,
    "schedule.warmup_tokens": int, "schedule.decay_fraction": float,
}
OBJECTIVES = {"bpb": "mean held-out bits per byte", "loss": "mean held-out nats per token"}
DIVERGED = 100.0  # objective reported for a diverged trial: worse than any trained model (an untrained one scores ~5)
SIGNIFICANT = 4  # suggested values are rounded to 4 significant digits: readable, and equal suggestions share a run
METRIC = "objective"  # the key trials report to Tune


# ---------------------------------------------------------------- the spec


@dataclass(frozen=True, kw_only=True)
class ParamRange:
    """One dimension of the search space."""

    name: str
    """a dotted TrainSpec key of SEARCHABLE, e.g. "lr" or "model.scale_emb" """
    low: float
    """lowest value (inclusive)"""
    high: float
    """highest value (inclusive)"""
    log: bool = False
    """sample log-uniformly (needs low > 0)"""

    @property
    def integer(self) -> bool:
        """Token counts are integers: sampled as such."""
        return SEARCHABLE[self.name] is int


@dataclass(frozen=True, kw_only=True)
class AshaSpec:
    """ASHA early stopping (Li et al. 2020) on the objective reported at each evaluation."""

    enabled: bool = True
    """False: every trial trains to the end"""
    grace_evals: int = 2
    """evaluations every trial gets before it can be stopped"""
    reduction_factor: float = 3.0
    """at each rung only the best 1/reduction_factor of the trials go on"""


@dataclass(frozen=True, kw_only=True)
class SearchSpec:
    """A search at one scale, validated: everything `run_search` needs."""

    name: str
    """the search's name: its MLflow experiment and its folder results/search/<name>-<scale>/"""
    scale: str
    """the scale section used (micro | paper | ...)"""
    file: str
    """the search file, for messages"""
    description: str = ""
    """what the search is for"""
    template: TrainSpec
    """every trial's spec before the searched values are applied (model, tokens, base and scale overrides)"""
    space: tuple[ParamRange, ...]
    """the searched dimensions"""
    objective: str = "bpb"
    """a key of OBJECTIVES: what is minimised, averaged over the held-out sets at the end"""
    trials: int = 32
    """trials in all"""
    concurrency: int = 2
    """trials at once"""
    seed: int = 0
    """seed of the TPE sampler"""
    startup_trials: int = 10
    """random trials before TPE models the results"""
    asha: AshaSpec = field(default_factory=AshaSpec)
    """early stopping"""

    @property
    def identity(self) -> dict:
        """What makes two invocations the same study (budgets and concurrency excluded)."""
        return {"template": spec_hash(self.template), "objective": self.objective, "seed": self.seed,
                "startup_trials": self.startup_trials, "space": [dataclasses.asdict(p) for p in self.space]}


@dataclass(frozen=True, kw_only=True)
class _ScaleSection:
    model: str
    """the model searched"""
    tokens_per_param: float | None = None
    """training tokens in units of N (the paper: 10)"""
    tokens: int | None = None
    """training tokens, when not given per parameter"""
    trials: int = 32
    """trials in all"""
    concurrency: int = 2
    """trials at once"""
    set: dict = field(default_factory=dict)
    """TrainSpec overrides of this scale"""


@dataclass(frozen=True, kw_only=True)
class _SearchFile:
    name: str
    description: str = ""
    objective: str = "bpb"
    seed: int = 0
    startup_trials: int = 10
    space: dict = field(default_factory=dict)
    asha: dict = field(default_factory=dict)
    base: dict = field(default_factory=dict)
    scales: dict = field(default_factory=dict)


def load_search(path, *, scale: str = "micro") -> SearchSpec:
    """The search file at `scale`, validated: every bad key or value raises SpecError before anything runs."""
    from windtunnel.model import count_params

    path = Path(path)
    raw = _read(path)
    top = build(_SearchFile, raw, file=path)
    if top.objective not in OBJECTIVES:
        raise SpecError(path, "objective", top.objective, "one of " + ", ".join(OBJECTIVES))
    _positive(path, "startup_trials", top.startup_trials, minimum=0)
    if scale not in top.scales:
        raise SpecError(path, "scales", scale, "scales defined here: " + ", ".join(map(str, top.scales)))
    key = f"scales.{scale}"
    section = build(_ScaleSection, top.scales[scale] or {}, file=path, prefix=f"{key}.")
    _positive(path, f"{key}.trials", section.trials)
    _positive(path, f"{key}.concurrency", section.concurrency)
    asha = build(AshaSpec, top.asha or {}, file=path, prefix="asha.")
    _positive(path, "asha.grace_evals", asha.grace_evals)
    if asha.reduction_factor <= 1:
        raise SpecError(path, "asha.reduction_factor", asha.reduction_factor, "a number > 1")
    try:
        model = get_model(section.model)
    except SpecError as err:
        raise SpecError(path, f"{key}.model", section.model, err.allowed) from None
    template = apply_overrides(apply_overrides(TrainSpec(model=model), top.base, source=str(path)),
                               section.set, source=str(path))
    if (section.tokens is None) == (section.tokens_per_param is None):
        raise SpecError(path, f"{key}.tokens_per_param", section.tokens_per_param,
                        "exactly one of tokens_per_param and tokens")
    tokens = section.tokens or section.tokens_per_param * count_params(model)
    steps = max(1, round(tokens / template.batch_tokens))
    template = apply_overrides(template, {"tokens": steps * template.batch_tokens}, source=str(path))
    space = tuple(_param(path, name, value, template) for name, value in (top.space or {}).items())
    if not space:
        raise SpecError(path, "space", top.space, "at least one dimension, e.g. lr: {low: 0.001, high: 0.1, log: true}")
    return SearchSpec(name=str(top.name), scale=scale, file=str(path), description=top.description, template=template,
                      space=space, objective=top.objective, trials=section.trials, concurrency=section.concurrency,
                      seed=top.seed, startup_trials=top.startup_trials, asha=asha)


def _read(path: Path) -> dict:
    raw = read_yaml(path, what="search file")
    if not isinstance(raw, dict):
        raise SpecError(path, "<top>", raw, "a mapping with keys name, space, scales, ...")
    return raw


def _positive(path, key: str, value, *, minimum: int = 1) -> None:
    if value < minimum:
        raise SpecError(path, key, value, f"an integer >= {minimum}")


def _param(path: Path, name, value, template: TrainSpec) -> ParamRange:
    """One dimension, checked: a searchable key, low < high, low > 0 on a log scale, both ends valid specs."""
    key = f"space.{name}"
    if name not in SEARCHABLE:
        raise SpecError(path, key, value, "searchable keys: " + ", ".join(SEARCHABLE))
    param = build(ParamRange, {**value, "name": name} if isinstance(value, dict) else value, file=path,
                  prefix=f"{key}.")
    if param.integer and not all(float(v).is_integer() for v in (param.low, param.high)):
        raise SpecError(path, f"{key}.low", (param.low, param.high), "whole numbers: this key counts tokens")
    if not param.low < param.high:
        raise SpecError(path, f"{key}.low", param.low, f"less than high={param.high}")
    if param.log and param.low <= 0:
        raise SpecError(path, f"{key}.low", param.low, "> 0 on a log scale (or log: false)")
    for end in ("low", "high"):  # each end must build a trainable spec (types, schedule fits the run, ...)
        try:
            _check_trainable(trial_spec(template, {name: getattr(param, end)}))
        except SpecError as err:
            raise SpecError(path, f"{key}.{end}", getattr(param, end), f"{err.key}: {err.allowed}") from None
    return param


def _check_trainable(spec: TrainSpec) -> None:
    """The checks the trainer would make at its first step, made now."""
    from windtunnel.schedules import make_schedule

    steps = math.ceil(spec.tokens / spec.batch_tokens)
    make_schedule(spec.schedule, lr=spec.lr, total_steps=steps, batch_tokens=spec.batch_tokens)


# ---------------------------------------------------------------- one trial


def _round(value):
    """4 significant digits for floats; ints stay ints."""
    if isinstance(value, int) or not math.isfinite(value) or value == 0:
        return value
    return float(f"{value:.{SIGNIFICANT}g}")


def trial_spec(template: TrainSpec, params: dict) -> TrainSpec:
    """The TrainSpec of one trial: the template with the searched values (rounded) applied."""
    values = {k: int(round(v)) if SEARCHABLE.get(k) is int else _round(float(v)) for k, v in params.items()}
    return apply_overrides(template, values, source="search space")


def objective_value(result_eval: dict, objective: str = "bpb") -> float:
    """Mean of `objective` over the held-out sets of a TrainResult.eval; NaN when missing or not finite."""
    values = [row[objective] for row in result_eval.values() if objective in row]
    value = sum(values) / len(values) if values else math.nan
    return value if math.isfinite(value) else math.nan


def _evals_at(step: int, steps: int, every: int) -> int:
    """Evaluations done by `step`: every `every` steps, and always at the last step."""
    return step // every + (1 if step == steps and steps % every else 0)


class _Reporter:
    """The trainer's `log` callback: every point to MLflow, the objective to Tune at each evaluation but the last.

    The last is reported after `train` returns: Tune stops a trial that reaches ASHA's max_t inside
    `tune.report` (SystemExit), which must not happen before the run is recorded as finished.
    """

    def __init__(self, spec: TrainSpec, logger, objective: str):
        from windtunnel.train import total_tokens

        self.logger, self.objective = logger, objective
        self.every, self.steps = spec.eval_every, math.ceil(total_tokens(spec) / spec.batch_tokens)

    def log(self, metrics: dict, step: int) -> None:
        from ray import tune

        self.logger.log(metrics, step)
        values = [v for k, v in metrics.items() if k.startswith("eval/") and k.endswith(f"/{self.objective}")]
        if values and step < self.steps:
            tune.report({METRIC: sum(values) / len(values), "evals": _evals_at(step, self.steps, self.every),
                         "step": step, "status": "running", "reason": ""})


def _trial(config: dict, *, ctx: dict) -> None:
    """One Tune trial (runs in a Ray worker): train the template with `config`, reporting to Tune and MLflow."""
    import torch
    from ray import tune

    from windtunnel.graph import Run
    from windtunnel.orchestrate import run_dir, run_params
    from windtunnel.train import train

    os.environ.update(ctx["env"])  # results and MLflow store of the driver, whatever Ray was started with
    os.chdir(ctx["cwd"])  # Tune starts trials in their own folder: relative data paths mean the driver's
    torch.set_num_threads(ctx["threads"])
    spec = trial_spec(ctx["template"], config)
    params = {k: _round(v) for k, v in config.items()}
    run = Run(id=spec_hash(spec), name=_label(spec.model.name, params), spec=spec,
              coords={"model": spec.model.name, **params})
    folder = run_dir(run)
    folder.mkdir(parents=True, exist_ok=True)
    with _run_lock(folder):  # two trials proposing the same (rounded) values train the run once
        logger = _child_logger(run, folder, run_params(run), ctx)
        reporter = _Reporter(spec, logger, ctx["objective"])
        try:
            result = train(spec, folder, log=reporter.log, flush=logger.flush)
        except SystemExit:  # tune.report raises it when ASHA stops the trial
            logger.finish("KILLED", tag_status="pruned")
            raise
        except BaseException:
            logger.finish("FAILED", tag_status="failed")
            raise
    value = objective_value(result.eval, ctx["objective"])
    final = {"evals": _evals_at(result.step, reporter.steps, reporter.every), "step": result.step}
    if result.status == "diverged" or math.isnan(value):
        logger.finish("FAILED", tag_status="diverged")
        reason = f"diverged at step {result.step} (smoothed train loss {result.train_loss:.3g})"
        tune.report({METRIC: DIVERGED, **final, "status": "diverged", "reason": reason})
    else:
        logger.finish("FINISHED", tag_status="finished")
        tune.report({METRIC: value, **final, "status": "finished", "reason": ""})


@contextlib.contextmanager
def _run_lock(folder: Path):
    """An exclusive lock on a run dir for one trial at a time (released when the process dies)."""
    if os.name == "nt":
        yield
        return
    import fcntl

    with open(folder / ".search.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _label(model: str, params: dict) -> str:
    return " ".join([model] + [f"{k.split('.')[-1]}={v:g}" for k, v in params.items()])


def _child_logger(run, folder: Path, params: dict, ctx: dict):
    """The trial's MLflow child run; a run dir's existing MLflow run is reopened (its steps are kept once)."""
    from windtunnel.tracking import RUN_ID_FILE, RunLogger

    kwargs = dict(experiment=ctx["experiment"], run_name=run.name, params=params, parent_run_id=ctx["parent"],
                  system_metrics=True,
                  tags={"search": ctx["experiment"], "scale": ctx["scale"], "windtunnel.run": run.id,
                        "model": run.spec.model.name, "kind": "trial"})
    try:
        return RunLogger.in_folder(folder, **kwargs)
    except WindtunnelError:  # the run dir's MLflow run belongs to another experiment or store: start one here
        (folder / RUN_ID_FILE).unlink()
        return RunLogger.in_folder(folder, **kwargs)


# ---------------------------------------------------------------- outcomes


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


def _outcome(result, number: int, spec: SearchSpec, max_evals: int) -> TrialOutcome:
    """A Tune Result as a TrialOutcome: finished → complete, diverged or raised → failed, stopped early → pruned."""
    metrics = result.metrics or {}
    params = {k: _round(v) for k, v in (result.config or {}).items()}
    value, evals = metrics.get(METRIC), metrics.get("evals", 0)
    try:
        history = result.metrics_dataframe
        intermediate = {} if history is None or METRIC not in history else dict(zip(history["evals"], history[METRIC]))
    except Exception:  # noqa: BLE001 - a trial that never reported has no progress file
        intermediate = {}
    run_id = spec_hash(trial_spec(spec.template, params)) if params else None
    if result.error is not None:
        status, reason, value = "failed", one_line(result.error), None
    elif metrics.get("status") == "diverged":
        status, reason, value = "failed", metrics.get("reason", "diverged"), None
    elif metrics.get("status") == "finished":
        status, reason = "complete", ""
    else:
        status, reason = "pruned", f"stopped by ASHA after {evals}/{max_evals} evaluations"
    intermediate = {int(k): float(v) for k, v in intermediate.items() if v != DIVERGED and math.isfinite(v)}
    return TrialOutcome(number, status, value, params, int(evals), reason, run_id, intermediate)


def _trial_index(path) -> int:
    """The trial's 0-based index within its round, from its folder name trial-<index>-<id>."""
    return int(Path(path).name.split("-")[1])


def _best(trials: list[TrialOutcome]) -> TrialOutcome | None:
    complete = [t for t in trials if t.status == "complete" and t.value is not None and math.isfinite(t.value)]
    return min(complete, key=lambda t: (t.value, t.number)) if complete else None


# ---------------------------------------------------------------- the driver


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
    trials = trials or spec.trials
    if trials < 1:
        raise SpecError(file, "trials", trials, "an integer >= 1")
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
        result = _finish(spec, folder, outcomes, scale=scale)
        _log_parent(parent, result)
    return result


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
    path.write_text(json.dumps(identity, indent=1))


def _parent_logger(spec: SearchSpec, scale: str, folder: Path, trials: int):
    from windtunnel.tracking import RunLogger

    space = {f"space.{p.name}": f"[{p.low:g}, {p.high:g}]{' log' if p.log else ''}" for p in spec.space}
    return RunLogger.in_folder(  # creates the experiment before any trial logs to it (DESIGN §8)
        folder, experiment=spec.name, run_name=f"{spec.name} ({scale})",
        params={"scale": scale, "model": spec.template.model.name, "tokens": spec.template.tokens,
                "objective": spec.objective, "seed": spec.seed, "description": spec.description, **space},
        tags={"search": spec.name, "scale": scale, "kind": "search", "trials": trials})


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
    trainable = _trainable(spec, scale=scale, parent=parent, gpus=ray.cluster_resources().get("GPU", 0) > 0)
    max_evals = _max_evals(spec.template)
    outcomes: list[TrialOutcome] = []
    rounds, sizes = _rounds(folder), folder / "rounds.json"  # rounds.json: trials asked of each round
    samples = json.loads(sizes.read_text()) if sizes.exists() else {}
    board = _Board(spec, total=trials, enabled=progress)
    try:
        for i, path in enumerate(rounds):
            tuner = Tuner.restore(str(path), trainable=trainable, resume_errored=True)
            board.round(outcomes)
            grid = _fit(tuner, samples.get(path.name)) if i == len(rounds) - 1 else tuner.get_results()
            outcomes += _round_outcomes(grid, spec, offset=len(outcomes), max_evals=max_evals)
        if len(outcomes) < trials:
            board.round(outcomes)
            path = folder / f"round-{len(rounds)}"
            samples[path.name] = trials - len(outcomes)
            sizes.write_text(json.dumps(samples))
            tuner = _new_tuner(spec, path, trainable, samples=samples[path.name],
                               restore_from=rounds[-1] if rounds else None)
            outcomes += _round_outcomes(_fit(tuner, samples[path.name]), spec, offset=len(outcomes),
                                        max_evals=max_evals)
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


def _round_outcomes(grid, spec: SearchSpec, *, offset: int, max_evals: int) -> list[TrialOutcome]:
    ordered = sorted(grid, key=lambda r: _trial_index(r.path))
    return [_outcome(r, offset + _trial_index(r.path), spec, max_evals) for r in ordered]


def _max_evals(spec: TrainSpec) -> int:
    steps = math.ceil(spec.tokens / spec.batch_tokens)
    return _evals_at(steps, steps, spec.eval_every)


def _trainable(spec: SearchSpec, *, scale: str, parent: str, gpus: bool):
    """The Tune trainable: `_trial` bound to this search's context, with one trial's resources."""
    from ray import tune

    from windtunnel.graph import Run
    from windtunnel.orchestrate import resources
    from windtunnel.tracking import tracking_uri

    need = resources(Run(id="", name="", spec=spec.template, coords={}), gpus=gpus)
    ctx = {"template": spec.template, "objective": spec.objective, "experiment": spec.name, "scale": scale,
           "parent": parent, "threads": need["num_cpus"], "cwd": os.getcwd(),
           "env": {"WINDTUNNEL_RESULTS": str(results_dir()), "MLFLOW_TRACKING_URI": tracking_uri()}}
    return tune.with_resources(tune.with_parameters(_trial, ctx=ctx),
                               {"cpu": need["num_cpus"], "gpu": need.get("num_gpus", 0)})


def _new_tuner(spec: SearchSpec, path: Path, trainable, *, samples: int, restore_from: Path | None):
    """A Tune experiment of `samples` trials; its searcher continues the study of `restore_from` if given."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {p.name: (optuna.distributions.IntDistribution(int(p.low), int(p.high), log=p.log) if p.integer else
                      optuna.distributions.FloatDistribution(p.low, p.high, log=p.log)) for p in spec.space}
    sampler = optuna.samplers.TPESampler(multivariate=True, seed=spec.seed, n_startup_trials=spec.startup_trials)
    searcher = OptunaSearch(space=space, metric=METRIC, mode="min", sampler=sampler)
    if restore_from is not None:
        searcher.restore_from_dir(str(restore_from))  # the same study: its trials, sampler and RNG state
    scheduler = (ASHAScheduler(time_attr="evals", max_t=_max_evals(spec.template), grace_period=spec.asha.grace_evals,
                               reduction_factor=spec.asha.reduction_factor)
                 if spec.asha.enabled else FIFOScheduler())
    config = tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=samples, metric=METRIC, mode="min",
                             max_concurrent_trials=spec.concurrency, reuse_actors=True,
                             trial_dirname_creator=_dirname)
    run = tune.RunConfig(name=path.name, storage_path=str(path.parent.resolve()), verbose=0, callbacks=[_Relay()],
                         failure_config=tune.FailureConfig(max_failures=0))
    return tune.Tuner(trainable, tune_config=config, run_config=run)


def _dirname(trial) -> str:
    return f"trial-{_tag_index(trial):04d}-{trial.trial_id}"


def _tag_index(trial) -> int:
    """The trial's 0-based index within its round (Tune's experiment tag starts with the 1-based one)."""
    return int(trial.experiment_tag.split("_")[0]) - 1


# ---------------------------------------------------------------- progress


_BOARD: _Board | None = None  # the driver's progress display, found by the (pickled, restorable) Tune callback


class _Relay:
    """A Tune callback forwarding trial ends to the driver's board; stateless, so Tuner.restore can unpickle it."""

    def __getattr__(self, name):  # every other Callback hook does nothing
        if name.startswith("on_") or name in ("setup", "get_state", "set_state"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if _BOARD:
            _BOARD.trial_end(trial, error=None)

    def on_trial_error(self, iteration, trials, trial, **info):
        if _BOARD:
            _BOARD.trial_end(trial, error=getattr(trial, "error_file", None) or "raised")


class _Board:
    """One line per ended trial above a bar of trials done with the best objective so far."""

    def __init__(self, spec: SearchSpec, *, total: int, enabled: bool):
        from tqdm.auto import tqdm

        global _BOARD
        self.spec, self.offset, self.best = spec, 0, math.inf
        self.bar = tqdm(total=total, unit="trial", desc=f"search {spec.name}", disable=not enabled,
                        dynamic_ncols=True, file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 30)
        _BOARD = self

    def round(self, done: list[TrialOutcome]) -> None:
        """A round starts after the trials `done` (of earlier rounds)."""
        best = _best(done)
        self.offset, self.best = len(done), min(self.best, best.value if best else math.inf)
        self.bar.n = len(done)
        self.bar.refresh()

    def trial_end(self, trial, *, error) -> None:
        last = trial.last_result or {}
        number = self.offset + _tag_index(trial)
        value, status = last.get(METRIC), last.get("status")
        params = " ".join(f"{k.split('.')[-1]}={_round(v):g}" for k, v in (trial.config or {}).items())
        if error:
            text = f"failed    (raised; see {error})"
        elif status == "diverged":
            text = f"failed    ({last.get('reason')})"
        elif status == "finished":
            self.best = min(self.best, value)
            text = f"complete  {value:.4f}"
        else:
            text = f"pruned    {value:.4f} after {last.get('evals')} evals" if value is not None else "pruned"
        if not self.bar.disable:
            self.bar.write(f"trial {number:>4}  {text}  {params}", file=sys.stderr)
        self.bar.set_postfix_str(f"best {self.best:.4f} {self.spec.objective}" if math.isfinite(self.best) else "")
        self.bar.update(1)

    def close(self) -> None:
        global _BOARD
        self.bar.close()
        _BOARD = None


# ---------------------------------------------------------------- outputs


def _finish(spec: SearchSpec, folder: Path, outcomes: list[TrialOutcome], *, scale: str) -> SearchResult:
    """Write trials.csv, summary.json, best.yaml (also results/search/best.yaml) and the plots."""
    best = _best(outcomes)
    counts = {s: sum(t.status == s for t in outcomes) for s in ("complete", "pruned", "failed")}
    _write_trials(folder / "trials.csv", outcomes)
    best_yaml = None
    if best is not None:
        best_yaml = folder / "best.yaml"
        text = _best_yaml(spec, best, counts, scale=scale)
        best_yaml.write_text(text)
        (folder.parent / "best.yaml").write_text(text)
    plots = _plots(spec, folder, outcomes)
    result = SearchResult(name=spec.name, scale=scale, folder=folder, objective=spec.objective,
                          best_params=best.params if best else None, best_value=best.value if best else None,
                          best_trial=best.number if best else None, best_run=best.run_id if best else None,
                          n_complete=counts["complete"], n_pruned=counts["pruned"], n_failed=counts["failed"],
                          trials=tuple(outcomes), best_yaml=best_yaml, plots=plots)
    summary = {k: v for k, v in dataclasses.asdict(result).items() if k not in ("trials", "folder")}
    summary.update(n_trials=len(outcomes), folder=str(folder), best_yaml=str(best_yaml) if best_yaml else None,
                   plots=[str(p) for p in plots], template_run_spec=spec_hash(spec.template))
    (folder / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return result


def _write_trials(path: Path, outcomes: list[TrialOutcome]) -> None:
    import csv

    names = sorted({k for t in outcomes for k in t.params})
    with open(path, "w", newline="") as f:
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


def _best_yaml(spec: SearchSpec, best: TrialOutcome, counts: dict, *, scale: str) -> str:
    total = sum(counts.values())
    head = [
        f"# Best µP hyper-parameters of search {spec.name!r} (scale {scale}, {spec.file}):",
        f"# objective {spec.objective} ({OBJECTIVES[spec.objective]}) = {best.value:.6g}, trial {best.number} "
        f"of {total} ({counts['complete']} complete, {counts['pruned']} pruned, {counts['failed']} failed),",
        f"# model {spec.template.model.name} on {spec.template.tokens:,} tokens, run results/runs/{best.run_id}.",
        "# Use: windtunnel train MODEL --set-file THIS_FILE, or windtunnel sweep SPEC --set-file THIS_FILE",
    ]
    return "\n".join(head) + "\n" + yaml.safe_dump(_nested(best.params), sort_keys=True, default_flow_style=False)


def _study(spec: SearchSpec, outcomes: list[TrialOutcome]):
    """The trials as an Optuna study (complete / pruned / failed), for Optuna's plots."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {p.name: (optuna.distributions.IntDistribution(int(p.low), int(p.high), log=p.log) if p.integer else
                      optuna.distributions.FloatDistribution(p.low, p.high, log=p.log)) for p in spec.space}
    states = {"complete": optuna.trial.TrialState.COMPLETE, "pruned": optuna.trial.TrialState.PRUNED,
              "failed": optuna.trial.TrialState.FAIL}
    study = optuna.create_study(direction="minimize", study_name=spec.name)
    for t in outcomes:
        params = {k: min(max(v, dists[k].low), dists[k].high) for k, v in t.params.items() if k in dists}
        if set(params) != set(dists):
            continue  # a trial that failed before it was given parameters
        study.add_trial(optuna.trial.create_trial(
            state=states[t.status], value=t.value if t.status == "complete" else None, params=params,
            distributions=dists, intermediate_values=t.intermediate or None, user_attrs={"reason": t.reason}))
    return study


def _plots(spec: SearchSpec, folder: Path, outcomes: list[TrialOutcome]) -> tuple[Path, ...]:
    """Optuna's optimization history, parameter importances and slice plots as PNGs (skipped when too few trials)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    study = _study(spec, outcomes)
    if sum(t.status == "complete" for t in outcomes) < 1:
        return ()
    saved = []
    for name, plot in (("history", ovm.plot_optimization_history), ("importances", ovm.plot_param_importances),
                       ("slice", ovm.plot_slice)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                plot(study)
            path = folder / f"{name}.png"
            plt.gcf().set_size_inches(max(6.4, 3.2 * len(spec.space)) if name == "slice" else 6.4, 4.8)
            plt.gcf().savefig(path, dpi=100, bbox_inches="tight")
            saved.append(path)
        except (ValueError, RuntimeError, ZeroDivisionError) as err:  # e.g. importances of 1 complete trial
            warnings.warn(f"{spec.name}: {name} plot skipped ({err})", stacklevel=2)
        finally:
            plt.close("all")
    return tuple(saved)


def _log_parent(parent, result: SearchResult) -> None:
    """Per trial: its objective and the best so far (step = trial number); at the end: counts and the best."""
    best = math.inf
    for t in result.trials:
        if t.status == "complete":
            best = min(best, t.value)
            parent.log({"trial/objective": t.value, "search/best": best}, step=t.number)
    final = {"trials/complete": result.n_complete, "trials/pruned": result.n_pruned, "trials/failed": result.n_failed}
    if result.best_params:
        final.update({"best/objective": result.best_value, **{f"best/{k}": v for k, v in result.best_params.items()}})
    parent.log(final, step=result.n_trials)
    parent.finish("FINISHED", tag_status="finished")
