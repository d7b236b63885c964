"""One search trial, as Ray Tune runs it in a worker: train the trial's spec and report the objective.

Each trial trains through `windtunnel.train.train` in the run storage every run shares (`results/runs/<id>/`,
so a trial with the parameters of a finished run does not train again), reports the objective to Tune at
every evaluation so that ASHA can stop poor trials early, and is an MLflow child run under the search's
parent run. A diverged trial reports the penalty DIVERGED (TPE then learns to avoid the region: Optuna's TPE
ignores failed trials).
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

from windtunnel.config import TrainSpec
from windtunnel.errors import WindtunnelError
from windtunnel.paths import results_dir
from windtunnel.search.spec import SearchSpec, evals_at, rounded, trial_spec

__all__ = ["DIVERGED", "METRIC", "objective_value", "trial_run", "trainable"]

DIVERGED = 100.0  # objective reported for a diverged trial: worse than any trained model (an untrained one scores ~5)
METRIC = "objective"  # the key trials report to Tune


def objective_value(result_eval: dict, objective: str = "bpb") -> float:
    """Mean of `objective` over the held-out sets of a TrainResult.eval; NaN when missing or not finite."""
    values = [row[objective] for row in result_eval.values() if objective in row]
    value = sum(values) / len(values) if values else math.nan
    return value if math.isfinite(value) else math.nan


def trial_run(template: TrainSpec, params: dict):
    """The Run of the trial with searched values `params`: its identity, name and coordinates (the one place
    a trial's run id is made)."""
    from windtunnel.runs import make_run

    spec = trial_spec(template, params)
    values = {k: rounded(v) for k, v in params.items()}
    return make_run(spec, name=_label(spec.model.name, values), coords={"model": spec.model.name, **values})


def _label(model: str, params: dict) -> str:
    return " ".join([model] + [f"{k.split('.')[-1]}={v:g}" for k, v in params.items()])


def trainable(spec: SearchSpec, *, scale: str, parent: str, gpus: bool):
    """The Tune trainable: `_trial` bound to this search's context, with one trial's resources."""
    from ray import tune

    from windtunnel.runs import resources
    from windtunnel.tracking import tracking_uri

    need = resources(trial_run(spec.template, {}), gpus=gpus)
    ctx = {"template": spec.template, "objective": spec.objective, "experiment": spec.name, "scale": scale,
           "parent": parent, "threads": need["num_cpus"], "cwd": os.getcwd(),
           "env": {"WINDTUNNEL_RESULTS": str(results_dir()), "MLFLOW_TRACKING_URI": tracking_uri()}}
    return tune.with_resources(tune.with_parameters(_trial, ctx=ctx),
                               {"cpu": need["num_cpus"], "gpu": need.get("num_gpus", 0)})


class _Reporter:
    """The trainer's `log` callback: every point to MLflow, the objective to Tune at each evaluation but the last.

    The last is reported after `train` returns: Tune stops a trial that reaches ASHA's max_t inside
    `tune.report` (SystemExit), which must not happen before the run is recorded as finished.
    """

    def __init__(self, spec: TrainSpec, logger, objective: str, run_id: str):
        from windtunnel.train import total_tokens

        self.logger, self.objective, self.run_id = logger, objective, run_id
        self.every, self.steps = spec.eval_every, math.ceil(total_tokens(spec) / spec.batch_tokens)

    def log(self, metrics: dict, step: int) -> None:
        from ray import tune

        self.logger.log(metrics, step)
        values = [v for k, v in metrics.items() if k.startswith("eval/") and k.endswith(f"/{self.objective}")]
        if values and step < self.steps:
            tune.report({METRIC: sum(values) / len(values), "evals": evals_at(step, self.steps, self.every),
                         "step": step, "status": "running", "reason": "", "run": self.run_id})


def _trial(config: dict, *, ctx: dict) -> None:
    """One Tune trial (runs in a Ray worker): train the template with `config`, reporting to Tune and MLflow."""
    import torch

    from windtunnel.runs import record_attempt, run_dir, run_params
    from windtunnel.train import train

    os.environ.update(ctx["env"])  # results and MLflow store of the driver, whatever Ray was started with
    os.chdir(ctx["cwd"])  # Tune starts trials in their own folder: relative data paths mean the driver's
    torch.set_num_threads(ctx["threads"])
    run = trial_run(ctx["template"], config)
    folder = run_dir(run)
    folder.mkdir(parents=True, exist_ok=True)
    with _run_lock(folder):  # two trials proposing the same (rounded) values train the run once
        logger = _child_logger(run, folder, run_params(run), ctx, where=record_attempt(folder))
        reporter = _Reporter(run.spec, logger, ctx["objective"], run.id)
        try:
            result = train(run.spec, folder, log=reporter.log, flush=logger.flush)
        except SystemExit:  # tune.report raises it when ASHA stops the trial
            logger.finish("KILLED", tag_status="pruned")
            raise
        except BaseException:
            logger.finish("FAILED", tag_status="failed")
            raise
    _report_end(result, reporter, logger, ctx["objective"])


def _report_end(result, reporter: _Reporter, logger, objective: str) -> None:
    """The last report: the objective of a finished run, or DIVERGED with the reason."""
    from ray import tune

    value = objective_value(result.eval, objective)
    final = {"evals": evals_at(result.step, reporter.steps, reporter.every), "step": result.step,
             "run": reporter.run_id}
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


def _child_logger(run, folder: Path, params: dict, ctx: dict, *, where: dict):
    """The trial's MLflow child run; a run dir's existing MLflow run is reopened (its steps are kept once)."""
    from windtunnel.tracking import RUN_ID_FILE, RunLogger

    kwargs = dict(experiment=ctx["experiment"], run_name=run.name, params=params, parent_run_id=ctx["parent"],
                  system_metrics=True, tags={"search": ctx["experiment"], "scale": ctx["scale"], "windtunnel.run": run.id,
                        "model": run.spec.model.name, "kind": "trial", **where})
    try:
        return RunLogger.in_folder(folder, **kwargs)
    except WindtunnelError:  # the run dir's MLflow run belongs to another experiment or store: start one here
        (folder / RUN_ID_FILE).unlink()
        return RunLogger.in_folder(folder, **kwargs)
