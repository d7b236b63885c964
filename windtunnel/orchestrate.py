"""Execute a run graph on Ray: an embedded local Ray by default, a cluster when $RAY_ADDRESS is set.

Each Run trains in a Ray task in `results/runs/<id>/` (shared storage on a cluster). The driver
submits every run whose inputs exist — a root at once, a decay branch as soon as its parent's
checkpoint at the fork step is on disk, not when the parent ends — and keeps a live count of runs
done / running / queued / failed / diverged with tokens and ETA. Finished and diverged runs are
skipped; interrupted ones resume from their last checkpoint; a run that raises is retried
`retries` times, then recorded as failed while the sweep goes on. One MLflow parent run per sweep,
one child per Run, logged by the task itself (metrics are flushed before each checkpoint, and a
resumed run drops the steps MLflow already holds, so each step is stored once).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from windtunnel.errors import one_line
from windtunnel.graph import Run
from windtunnel.paths import results_dir
from windtunnel.train import checkpoint_path, read_status, total_tokens

__all__ = ["run_graph", "RunOutcome", "init_ray", "train_one", "train_spec", "run_dir"]

POLL_SECONDS = 0.5  # how often the driver looks for new branch checkpoints and finished tasks


@dataclass(frozen=True)
class RunOutcome:
    """What became of one Run in this sweep."""

    run: Run
    status: str          # finished | diverged | failed
    attempts: int        # tasks started for it in this invocation (0 = already done before)
    result: dict | None  # TrainResult fields when it trained to the end
    error: str | None    # the last error of a failed run


def run_dir(run: Run) -> Path:
    return results_dir() / "runs" / run.id


def _flat(prefix: str, obj: dict) -> dict:
    out = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            out.update(_flat(f"{prefix}{key}.", value))
        else:
            out[prefix + key] = value
    return out


def run_params(run: Run) -> dict:
    """MLflow params of a run: its spec flattened, plus N (non-embedding), N_total (with the tied embedding), D,
    the branch step and the sweep coordinates."""
    from windtunnel.model import count_params

    return {**_flat("", asdict(run.spec)), "N": count_params(run.spec.model),
            "N_total": count_params(run.spec.model, embedding=True), "D": total_tokens(run.spec),
            "fork_step": run.fork_step, "parent_run": run.parent,
            **{f"coord.{k}": v for k, v in run.coords.items()}}


def train_one(run: Run, *, init_from: str | None, experiment: str, parent_mlflow_id: str | None, tags: dict,
              threads: int | None = None, progress: bool = False, params: dict | None = None) -> dict:
    """Train one Run with MLflow logging (the body of a Ray task; `windtunnel train` calls it directly).
    `params` are logged beside the run's own (a validation's prediction)."""
    import torch

    from windtunnel.tracking import RunLogger
    from windtunnel.train import train

    if threads:
        torch.set_num_threads(threads)
    folder = run_dir(run)
    folder.mkdir(parents=True, exist_ok=True)
    logger = RunLogger.in_folder(folder, experiment=experiment, run_name=run.name, params={**run_params(run), **(params or {})},
                                 tags={**tags, "windtunnel.run": run.id, "model": run.spec.model.name,
                                       "parent": run.parent or ""},
                                 parent_run_id=parent_mlflow_id, system_metrics=True)
    try:
        result = train(run.spec, folder, init_from=Path(init_from) if init_from else None,
                       log=logger.log, flush=logger.flush, progress=progress)
    except BaseException as err:
        stopped = isinstance(err, KeyboardInterrupt)
        logger.finish("KILLED" if stopped else "FAILED", tag_status="interrupted" if stopped else "failed")
        raise
    logger.finish("FINISHED" if result.status == "finished" else "FAILED", tag_status=result.status)
    return asdict(result)


def train_spec(spec, *, experiment: str, tags: dict, params: dict | None = None, progress: bool = True) -> tuple[Run, dict]:
    """Train one spec outside a sweep (`windtunnel train`, `windtunnel validate`): its id hashes the spec and the
    corpus fingerprint, so editing the corpus trains anew; returns the Run and its TrainResult fields."""
    from windtunnel.config import spec_hash
    from windtunnel.data import prepare

    corpus = prepare(spec.data, vocab_size=spec.model.vocab_size)  # bad data fails here, before any run exists
    run = Run(id=spec_hash(spec, corpus.fingerprint), name=spec.model.name, spec=spec, coords={"model": spec.model.name})
    result = train_one(run, init_from=None, experiment=experiment, parent_mlflow_id=None,
                       tags={"parametrization": spec.model.parametrization, **tags}, progress=progress, params=params)
    return run, result


# ---------------------------------------------------------------- the driver


def init_ray(num_cpus: int | None) -> bool:
    """Embedded local Ray, or the cluster at $RAY_ADDRESS, unless Ray is already up; True when started here.

    Workers get this process's results and MLflow paths."""
    import ray

    from windtunnel.tracking import tracking_uri

    if ray.is_initialized():
        return False
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_not_auth_notice)
    env = {"WINDTUNNEL_RESULTS": str(results_dir()), "MLFLOW_TRACKING_URI": tracking_uri()}
    ray.init(address=os.environ.get("RAY_ADDRESS"), num_cpus=None if os.environ.get("RAY_ADDRESS") else num_cpus,
             include_dashboard=False, log_to_driver=False, configure_logging=False, runtime_env={"env_vars": env})
    return True


def _not_auth_notice(record: logging.LogRecord) -> bool:
    """Ray announces its default (token auth on) at every start; its warning when auth is off still shows."""
    return not record.getMessage().startswith("Token authentication is enabled")


def resources(run: Run, *, gpus: bool) -> dict:
    """Ray resources of one run: a GPU each when the cluster has GPUs, else 1 CPU (2 above 2M parameters)."""
    from windtunnel.model import count_params

    if gpus and run.spec.device != "cpu":
        return {"num_gpus": 1, "num_cpus": 1}
    return {"num_cpus": 1 if count_params(run.spec.model) < 2_000_000 else 2}


def _parent_logger(sweep: str, scale: str, runs: list[Run], description: str):
    from windtunnel.tracking import RunLogger

    folder = results_dir() / "sweeps" / f"{sweep}-{scale}"
    folder.mkdir(parents=True, exist_ok=True)
    return RunLogger.in_folder(folder, experiment=sweep, run_name=f"{sweep} ({scale})",
                               params={"scale": scale, "description": description},
                               tags={"sweep": sweep, "scale": scale, "kind": "sweep", "n_runs": str(len(runs))})  # may grow


class _Board:
    """The live view: runs done / running / queued / failed / diverged, tokens trained and ETA."""

    def __init__(self, runs: list[Run], outcomes: dict, *, enabled: bool):
        from tqdm.auto import tqdm

        self.runs, self.outcomes = runs, outcomes
        total = sum(r.own_tokens for r in runs if r.id not in outcomes)
        self.bar = tqdm(total=total, unit="tok", unit_scale=True, disable=not enabled, dynamic_ncols=True,
                        desc="sweep", smoothing=0.05, mininterval=0.5 if sys.stderr.isatty() else 30)

    def update(self, pending: dict) -> None:
        new = [r for r in self.runs if self.outcomes.get(r.id) is None or self.outcomes[r.id].attempts]
        trained = 0
        for run in new:
            status = read_status(run_dir(run)) or {}
            done = run.tokens if status.get("status") in ("finished", "diverged") else status.get("tokens", 0)
            trained += max(0, done - (run.fork_step or 0) * run.spec.batch_tokens)
        counts = {s: sum(o.status == s for o in self.outcomes.values()) for s in ("finished", "failed", "diverged")}
        running = sum((read_status(run_dir(r)) or {}).get("status") == "running" for r in pending.values())
        queued = len(self.runs) - len(self.outcomes) - running
        self.bar.set_postfix_str(f"done {counts['finished']} running {running} queued {queued} "
                                 f"failed {counts['failed']} diverged {counts['diverged']}", refresh=False)
        self.bar.update(min(trained, self.bar.total) - self.bar.n)  # redraws at most every mininterval

    def close(self) -> None:
        self.bar.close()


def run_graph(runs: list[Run], *, sweep: str, scale: str, description: str = "", retries: int = 2,
              num_cpus: int | None = None, progress: bool = True) -> list[RunOutcome]:
    """Train every run of the graph not yet done; returns one outcome per run, in graph order."""
    from windtunnel.data import prepare
    from windtunnel.tracking import ending_family

    outcomes: dict[str, RunOutcome] = {}
    for run in runs:
        status = read_status(run_dir(run))
        if status and status["status"] in ("finished", "diverged"):
            outcomes[run.id] = RunOutcome(run, status["status"], 0, status.get("result"), None)
    todo = [r for r in runs if r.id not in outcomes]
    for data, vocab in {(r.spec.data, r.spec.model.vocab_size) for r in todo}:  # once, not per task; bad data
        prepare(data, vocab_size=vocab, progress=progress)  # fails here, before the sweep's MLflow run exists
    parent = _parent_logger(sweep, scale, runs, description)
    with ending_family(parent):  # the parent ends FAILED on an error, KILLED on Ctrl-C; so do orphaned children
        board = _Board(runs, outcomes, enabled=progress)
        try:
            if todo:
                _drive(todo, {r.id: r for r in runs}, outcomes, board, sweep=sweep, scale=scale, parent=parent,
                       retries=retries, num_cpus=num_cpus)
        finally:
            board.close()
        failed = any(o.status == "failed" for o in outcomes.values())
        parent.log({"runs/finished": sum(o.status == "finished" for o in outcomes.values()),
                    "runs/failed": sum(o.status == "failed" for o in outcomes.values()),
                    "runs/diverged": sum(o.status == "diverged" for o in outcomes.values())}, step=0)
        parent.finish("FAILED" if failed else "FINISHED", tag_status="failed" if failed else "finished")
    return [outcomes[r.id] for r in runs]


def _drive(todo: list[Run], by_id: dict[str, Run], outcomes: dict, board: _Board, *, sweep, scale, parent,
           retries: int, num_cpus: int | None) -> None:
    import ray

    started_ray = init_ray(num_cpus)
    try:
        _loop(ray, todo, by_id, outcomes, board, sweep=sweep, scale=scale, parent=parent, retries=retries)
    finally:
        if started_ray:
            ray.shutdown()


def _loop(ray, todo: list[Run], by_id: dict[str, Run], outcomes: dict, board: _Board, *, sweep, scale, parent,
          retries: int) -> None:
    gpus = ray.cluster_resources().get("GPU", 0) > 0
    task = ray.remote(max_retries=0)(train_one)  # retries are ours: a retry resumes from the checkpoint
    pending: dict = {}
    attempts: dict[str, int] = {}
    errors: dict[str, str] = {}
    while todo or pending:
        for run in list(todo):
            init_from = _fork_point(run, by_id, outcomes)
            if init_from is False:
                continue
            if isinstance(init_from, str) and init_from.startswith("blocked:"):
                todo.remove(run)
                outcomes[run.id] = RunOutcome(run, "failed", 0, None, init_from.removeprefix("blocked: "))
                continue
            need = resources(run, gpus=gpus)
            ref = task.options(**need).remote(run, init_from=init_from, experiment=sweep,
                                               parent_mlflow_id=parent.run_id, threads=need["num_cpus"],
                                               tags={"sweep": sweep, "scale": scale})
            pending[ref] = run
            attempts[run.id] = attempts.get(run.id, 0) + 1
            todo.remove(run)
        done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS) if pending else ([], [])
        for ref in done:
            run = pending.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as err:  # the task raised or its worker died: resume it from its checkpoint
                errors[run.id] = one_line(err)
                if attempts[run.id] <= retries:
                    todo.append(run)
                else:
                    outcomes[run.id] = RunOutcome(run, "failed", attempts[run.id], None, errors[run.id])
                continue
            outcomes[run.id] = RunOutcome(run, result["status"], attempts[run.id], result, None)
        if not pending and todo and all(_fork_point(r, by_id, outcomes) is False for r in todo):
            time.sleep(POLL_SECONDS)  # branches waiting on a checkpoint of a parent that is not running
        board.update(pending)


def _fork_point(run: Run, by_id: dict[str, Run], outcomes: dict):
    """None for a root; the parent's checkpoint path once it exists; False while waiting for it;
    "blocked: ..." when it will never exist (the parent failed, diverged before it, or is gone)."""
    if run.parent is None:
        return None
    path = checkpoint_path(run_dir(by_id[run.parent]), run.fork_step)
    if path.exists():
        return str(path)
    parent = outcomes.get(run.parent)
    if parent is not None:
        return f"blocked: parent {run.parent} ended {parent.status} before step {run.fork_step}"
    return False
